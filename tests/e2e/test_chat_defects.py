"""Chat page defects from issue 12: an archived chat opened from the archive list says so and can be brought
back (defect 11); toasts do not cover the toolbar (defect 10)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Conversation
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
