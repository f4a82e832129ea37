"""The chat app in a real browser, through the whole stack: uvicorn, Channels, Redis, a Celery worker
serving the tiny random model (its replies are gibberish, which is fine: the UI is under test)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Conversation, Message
from tests.e2e.conftest import screenshot
from tests.live import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("celery_worker", "llm_model")]

LONG_WAIT_MS = 60_000  # a whole reply from the worker (a few seconds on an idle machine)


def sign_up(page: Page, email: str = "ada@example.com") -> None:
    page.goto("/accounts/signup/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Password", exact=True).fill("a-long-pass-phrase-42")
    page.get_by_label("Confirm password").fill("a-long-pass-phrase-42")
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "open")


def last_reply(page: Page):
    return page.locator("article.message-assistant").last


def record_streaming_lengths(page: Page) -> None:
    """From now on, window.streamedLengths collects the last reply's text length at every change while
    it streams."""
    page.evaluate(
        """() => {
            window.streamedLengths = [];
            new MutationObserver(() => {
                const reply = [...document.querySelectorAll("article.message-assistant")].at(-1);
                if (reply?.classList.contains("is-streaming")) {
                    window.streamedLengths.push(reply.querySelector(".message-body").textContent.length);
                }
            }).observe(document.querySelector("[data-thread]"), {subtree: true, childList: true, characterData: true});
        }"""
    )


def wait_until_replied(page: Page) -> None:
    expect(page.locator("article.message-assistant.is-streaming")).to_have_count(0, timeout=LONG_WAIT_MS)
    expect(page.get_by_role("button", name="Stop generating")).to_be_hidden()


@pytest.fixture(autouse=True)
def _long_greedy_replies(llm_model) -> None:
    # Greedy, the tiny model never ends a reply early: each runs its full max_tokens. 120 leaves room in
    # its 512-token context for the three turns of a branch.
    llm_model.default_params = {"temperature": 0, "max_tokens": 120}
    llm_model.save()


def test_a_new_user_chats_stops_regenerates_edits_branches_renames_and_deletes(page: Page):
    # Sign up: "/" is now an empty chat.
    sign_up(page)
    expect(page.get_by_text("How can I help you today?")).to_be_visible()
    composer = page.get_by_label("Message Djinn")

    # An empty message is refused on the spot; Shift+Enter starts a new line instead of sending.
    composer.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Write a message first.")
    composer.type("one")
    composer.press("Shift+Enter")
    composer.type("two")
    expect(composer).to_have_value("one\ntwo")
    expect(page.get_by_role("alert")).to_be_hidden()

    # Send with Enter: the reply streams in, piece by piece.
    record_streaming_lengths(page)
    composer.fill("Hello there")
    composer.press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    expect(page.locator("article.message-user .message-body")).to_have_text("Hello there")
    wait_until_replied(page)
    expect(last_reply(page).locator(".message-note")).to_contain_text("The reply reached its length limit.")
    expect(last_reply(page).get_by_role("button", name="Continue generating")).to_be_visible()
    lengths = page.evaluate("window.streamedLengths")
    assert len(set(lengths) - {0}) >= 3, f"the reply did not stream: {lengths}"
    expect(page.locator(".conversation-item")).to_have_count(1)

    # Esc stops the next reply (pressed at once: the tiny model writes a whole reply in a blink).
    composer.fill("Tell me more")
    composer.press("Enter")
    page.keyboard.press("Escape")
    expect(last_reply(page).locator(".message-note")).to_have_text("Stopped.")
    expect(page.get_by_role("button", name="Send message")).to_be_visible()
    assert Message.objects.get(parent__content="Tell me more").status == Message.Status.CANCELLED

    # Regenerate: a second version of the reply, shown as 2 / 2; the first is one click away.
    last_reply(page).get_by_role("button", name="Regenerate reply").click()
    expect(last_reply(page).locator(".branch-position")).to_have_text("2 / 2")
    wait_until_replied(page)
    expect(last_reply(page).locator(".message-note")).to_contain_text("The reply reached its length limit.")
    expect(last_reply(page).get_by_role("button", name="Continue generating")).to_be_visible()
    last_reply(page).get_by_role("button", name="Previous version").click()
    expect(last_reply(page).locator(".branch-position")).to_have_text("1 / 2")
    expect(last_reply(page).locator(".message-note")).to_have_text("Stopped.")

    # Edit the question: a new branch from there, with its own reply.
    question = page.locator("article.message-user").last
    question.get_by_role("button", name="Edit message").click()
    editor = question.get_by_label("Edit your message")
    expect(editor).to_be_focused()
    editor.fill("Tell me about tea")
    editor.press("Enter")
    expect(page.locator("article.message-user .message-body").last).to_have_text("Tell me about tea")
    expect(page.locator("article.message-user .branch-position")).to_have_text("2 / 2")
    wait_until_replied(page)
    page.locator("article.message-user").last.get_by_role("button", name="Previous version").click()
    expect(page.locator("article.message-user .message-body").last).to_have_text("Tell me more")
    expect(last_reply(page).locator(".branch-position")).to_have_text("2 / 2")  # its newest reply
    assert Message.objects.count() == 7  # three questions, four replies

    # A message longer than the model's context is refused before any work, and kept for the user.
    too_long = " ".join(["tea"] * 600)
    composer.fill(too_long)
    composer.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("too long for SmolLM2 135M Instruct")
    expect(composer).to_have_value(too_long)
    expect(page.locator("article.message")).to_have_count(4)
    composer.fill("")

    screenshot(page, "chat-branches")

    # A system prompt for this conversation.
    page.get_by_role("button", name="Settings for this chat").click()
    settings = page.get_by_role("dialog", name="Chat settings")
    settings.get_by_label("How Djinn should behave in this chat").fill("Answer like a pirate.")
    settings.get_by_label("Temperature").fill("0.4")
    settings.get_by_label("Longest reply, in tokens").fill("64")
    settings.get_by_role("button", name="Save").click()
    expect(page.locator("[data-open-settings]")).to_have_class(re.compile("has-value"))
    wait_for(lambda: Conversation.objects.get().params == {"temperature": 0.4, "max_tokens": 64})
    page.reload()
    page.get_by_role("button", name="Settings for this chat").click()
    expect(settings.get_by_label("Temperature")).to_have_value("0.4")
    expect(settings.get_by_label("Longest reply, in tokens")).to_have_value("64")
    settings.get_by_role("button", name="Cancel").click()
    saved = Conversation.objects.get()
    assert saved.system_prompt == "Answer like a pirate."
    assert saved.params == {"temperature": 0.4, "max_tokens": 64}

    # Pin it, archive it (it leaves the list), find it among the archived and bring it back.
    current = page.locator(".conversation-item:has([aria-current=page])")
    current.get_by_role("button", name=re.compile("^Options for")).click()
    page.get_by_role("menuitem", name="Pin").click()
    expect(page.locator(".conversation-group-title")).to_have_text("Pinned")
    current.get_by_role("button", name=re.compile("^Options for")).click()
    page.get_by_role("menuitem", name="Archive").click()
    expect(page.get_by_text("No chats yet.")).to_be_visible()
    page.get_by_role("button", name="Archived chats").click()
    expect(page.locator("[data-list-heading]")).to_have_text("Archived chats")
    current.get_by_role("button", name=re.compile("^Options for")).click()
    page.get_by_role("menuitem", name="Unarchive").click()
    expect(page.get_by_text("No archived chats.")).to_be_visible()
    page.get_by_role("button", name="Archived chats").click()
    expect(current).to_be_visible()

    # Rename from the sidebar's menu.
    current.get_by_role("button", name=re.compile("^Options for")).click()
    page.get_by_role("menuitem", name="Rename").click()
    title = page.get_by_label("New name for this chat")
    title.fill("Tea talk")
    title.press("Enter")
    expect(page.locator("[data-chat-title]")).to_have_text("Tea talk")
    expect(current.locator(".conversation-title")).to_have_text("Tea talk")

    # Search as you type: titles and message contents.
    search = page.get_by_label("Search chats")
    search.fill("tea")
    expect(page.locator(".conversation-group-title")).to_have_text("Results")
    expect(page.locator(".conversation-item")).to_have_count(1)
    search.fill("nothing like this")
    expect(page.get_by_text("No chat matches.")).to_be_visible()
    search.press("Escape")
    expect(page.locator(".conversation-item")).to_have_count(1)

    # Delete, after confirming: back to a new chat.
    current.get_by_role("button", name="Options for Tea talk").click()
    page.get_by_role("menuitem", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Delete this chat?")
    expect(dialog).to_contain_text("Tea talk")
    dialog.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_text("No chats yet.")).to_be_visible()
    assert not Conversation.objects.exists()
