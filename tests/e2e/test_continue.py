""" "Continue generating" (issue 12): a reply cut at its length limit offers to go on; what follows is shown as
the same reply, and the button moves to its new end."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Message
from tests.conversations.factories import ConversationFactory
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("celery_worker")]

LONG_WAIT_MS = 60_000


def test_a_reply_cut_at_its_limit_is_continued_as_the_same_reply(page: Page, sign_in, llm_model):
    llm_model.default_params = {"temperature": 0, "max_tokens": 8}
    llm_model.save()
    user = UserFactory()
    conversation = ConversationFactory(owner=user, model=llm_model.name, title="A long story")
    sign_in(user)
    page.goto(f"/c/{conversation.pk}/")
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "open")

    page.get_by_label("Message Djinn").fill("Tell me a long story")
    page.get_by_label("Message Djinn").press("Enter")
    replies = page.locator("article.message-assistant")
    expect(replies.first.locator(".message-note")).to_contain_text("reached its length limit", timeout=LONG_WAIT_MS)
    first_text = replies.first.locator(".message-body").inner_text()

    page.get_by_role("button", name="Continue generating").click()
    expect(replies).to_have_count(2)
    expect(replies.last).to_have_class("message message-assistant message-continuation")
    expect(replies.last.locator(".message-note")).to_contain_text("reached its length limit", timeout=LONG_WAIT_MS)
    # Only the new end offers to go on; the first part's text is untouched.
    expect(page.get_by_role("button", name="Continue generating")).to_have_count(1)
    expect(replies.last.get_by_role("button", name="Continue generating")).to_be_visible()
    assert replies.first.locator(".message-body").inner_text() == first_text
    screenshot(page, "continue-generating")

    first, second = Message.objects.filter(conversation=conversation, role="assistant").order_by("created_at")
    assert second.parent_id == first.pk and second.status == "completed" and second.content
    page.reload()
    expect(page.locator("article.message-continuation")).to_have_count(1)
    expect(page.locator("article.message-continuation .message-body")).not_to_be_empty()
