"""Chat page defects from issue 12: an archived chat opened from the archive list says so and can be brought
back (defect 11); toasts do not cover the toolbar (defect 10); a long history is reachable by scrolling the
sidebar (defect 1)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from conversations.models import Conversation, Message
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser]


def test_an_archived_chat_says_so_and_unarchive_brings_it_back(page: Page, sign_in):
    user = UserFactory()
    conversation = ConversationFactory(owner=user, title="Old trip plans", archived=True)
    add_exchange(conversation)
    sign_in(user)

    page.goto(f"/c/{conversation.pk}/")
    note = page.locator("[data-archived-note]")
    expect(note).to_be_visible()
    expect(note).to_contain_text("Archived")
    screenshot(page, "chat-archived")
    note.get_by_role("button", name="Unarchive").click()

    expect(note).to_be_hidden()
    expect(page.locator(".conversation-item", has_text="Old trip plans")).to_have_count(1)
    assert Conversation.objects.get(pk=conversation.pk).archived is False


def test_a_toast_in_the_chat_leaves_the_toolbar_uncovered(page: Page, sign_in):
    sign_in(UserFactory())
    page.goto("/")
    page.evaluate(
        """() => {
            const toast = document.createElement("div");
            toast.className = "toast toast-error";
            toast.innerHTML = "<p>Something went wrong, and this message is long enough to wrap twice.</p>";
            document.querySelector("[data-chat-toasts]").append(toast);
        }"""
    )

    toast = page.locator(".toast").bounding_box()
    for control in ("[data-model-picker]", "[data-open-settings]", "[data-sidebar-toggle]"):
        box = page.locator(control).bounding_box()
        overlaps = not (
            toast["x"] + toast["width"] <= box["x"]
            or box["x"] + box["width"] <= toast["x"]
            or toast["y"] + toast["height"] <= box["y"]
            or box["y"] + box["height"] <= toast["y"]
        )
        assert not overlaps, control
    page.locator("[data-model-picker]").click()  # nothing in the way


def test_a_250_conversation_sidebar_is_reachable_by_scrolling(page: Page, sign_in):
    user = UserFactory()
    now = timezone.now()
    for index in range(250):
        ConversationFactory(owner=user, title=f"Chat number {index:03d}", updated_at=now - timedelta(minutes=index))
    sign_in(user)

    page.goto("/")
    items = page.locator(".conversation-item")
    expect(items).to_have_count(100)  # the first page
    for _ in range(20):  # each scroll to the end brings the next page into view
        if items.count() == 250:
            break
        # The button may be replaced by a page arriving meanwhile: scroll to whichever is there now.
        page.evaluate("() => document.querySelector('[data-load-more]')?.scrollIntoView()")
        page.wait_for_timeout(300)
    expect(items).to_have_count(250)
    expect(page.locator(".conversation-item", has_text="Chat number 249")).to_be_visible()
    expect(page.locator("[data-load-more]")).to_have_count(0)  # the last page: nothing more to load
    titles = items.locator(".conversation-title").all_inner_texts()
    assert titles == [f"Chat number {index:03d}" for index in range(250)]
    screenshot(page, "sidebar-250")


def test_a_reply_that_waits_says_whether_it_is_queued_or_its_model_is_loading(page: Page, sign_in, llm_model):
    from inference import streams

    user = UserFactory()
    conversation = ConversationFactory(owner=user, title="Waiting", model=llm_model.name)
    _question, reply = add_exchange(conversation, question="Anyone there?", status=Message.Status.QUEUED)
    sign_in(user)

    page.goto(f"/c/{conversation.pk}/")  # no worker runs: the reply stays queued
    note = page.locator(f'article[data-message-id="{reply.pk}"] .wait-state')
    expect(note).to_have_text("Waiting for a free worker…")
    with streams.model_loading(llm_model.name):  # as a worker loading the model marks it
        expect(note).to_contain_text("Loading the model…")
        screenshot(page, "chat-loading-model")
    expect(note).to_have_text("Waiting for a free worker…")
    streams.StreamWriter(reply.pk).delta("Here")
    expect(note).to_have_count(0)


def test_reply_details_ratings_jump_to_bottom_and_shortcuts(page: Page, sign_in, llm_model):
    user = UserFactory()
    conversation = ConversationFactory(owner=user, title="Details", model=llm_model.name)
    parent = None
    for index in range(6):  # long enough to scroll
        _question, parent = add_exchange(
            conversation, parent=parent, question=f"Question {index}", answer="A long answer.\n\n" * 12
        )
    sign_in(user)

    page.goto(f"/c/{conversation.pk}/")
    last = page.locator("article.message-assistant").last
    expect(last.locator(".message-meta")).to_contain_text(llm_model.display_name)
    last.get_by_role("button", name="Good reply").click()
    expect(last.get_by_role("button", name="Good reply")).to_have_attribute("aria-pressed", "true")
    page.reload()
    expect(page.locator("article.message-assistant").last.get_by_role("button", name="Good reply")).to_have_attribute(
        "aria-pressed", "true"
    )
    assert Message.objects.get(pk=parent.pk).feedback == 1

    # Scrolled up, a button brings the newest message back.
    jump = page.get_by_role("button", name="Jump to the latest message")
    expect(jump).to_be_hidden()
    page.locator("[data-thread-scroller]").evaluate("(el) => el.scrollTo(0, 0)")
    expect(jump).to_be_visible()
    jump.click()
    expect(jump).to_be_hidden()
    assert (
        page.locator("[data-thread-scroller]").evaluate("(el) => el.scrollHeight - el.scrollTop - el.clientHeight")
        < 150
    )

    # Ctrl+K searches; ? lists the shortcuts.
    page.locator("body").press("Control+k")
    expect(page.get_by_placeholder("Search chats")).to_be_focused()
    page.get_by_placeholder("Search chats").press("Escape")
    page.locator("h1").click()
    page.keyboard.press("?")
    expect(page.get_by_role("heading", name="Keyboard shortcuts")).to_be_visible()
    screenshot(page, "chat-shortcuts")
    page.get_by_role("button", name="Close").click()
