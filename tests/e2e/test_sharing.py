"""Sharing a conversation (issue 12): a read-only link to a snapshot of the branch shown, opened logged out,
not indexed, listed in Settings and revocable there."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from conversations.models import SharedLink
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser]

ANSWER = 'Pack **light**:\n\n| item | count |\n|---|---:|\n| socks | 3 |\n\n<img src=x onerror="window.__xss=1">'


def test_a_shared_link_shows_a_snapshot_to_anyone_until_it_is_revoked(page: Page, sign_in, browser, asgi_server):
    user = UserFactory()
    conversation = ConversationFactory(owner=user, title="Packing for Lisbon")
    _question, reply = add_exchange(conversation, question="What should I pack?", answer=ANSWER)
    sign_in(user)

    page.goto(f"/c/{conversation.pk}/")
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "open")
    page.get_by_role("button", name="Share this chat").click()
    link = page.locator("[data-share-url]")
    expect(link).not_to_have_value("")
    url = link.input_value()
    screenshot(page, "share-dialog")
    page.get_by_role("button", name="Done").click()
    add_exchange(conversation, parent=reply, question="A later, private question", answer="Not shared")

    # Logged out, in another browser: the snapshot, rendered safely, not indexed.
    stranger = browser.new_context()
    visitor = stranger.new_page()
    console = []
    visitor.on("console", lambda message: console.append(message.text))
    visitor.on("pageerror", lambda error: console.append(str(error)))
    response = visitor.goto(url)
    assert response.status == 200
    assert "noindex" in response.headers["x-robots-tag"]
    expect(visitor.locator('meta[name="robots"]')).to_have_attribute("content", "noindex, nofollow, noarchive")
    expect(visitor.get_by_role("heading", name="Packing for Lisbon")).to_be_visible()
    expect(visitor.locator("article.message-user .message-body")).to_have_text("What should I pack?")
    expect(visitor.locator("article.message-assistant .markdown strong")).to_have_text("light")
    expect(visitor.locator("article.message-assistant td").last).to_have_text("3")
    expect(visitor.get_by_text("A later, private question")).to_have_count(0)
    assert visitor.evaluate("window.__xss") is None
    assert visitor.locator(".markdown img").count() == 0
    screenshot(visitor, "shared-page")
    assert [text for text in console if "Content Security Policy" in text or "Error" in text] == []

    # Listed in Settings, and revoked there: the link stops opening.
    page.goto("/settings/shared-links/")
    expect(page.get_by_role("link", name="Packing for Lisbon")).to_be_visible()
    page.get_by_role("button", name="Revoke the link to Packing for Lisbon").click()
    expect(page.get_by_text("is revoked: it no longer opens")).to_be_visible()
    assert visitor.goto(url).status == 404
    assert SharedLink.objects.get().revoked_at is not None
    stranger.close()
