"""Two tabs on one conversation (issue 12, defect 4): a turn sent in one shows up live in the other, and a
message sent from the other continues after it instead of forking the conversation."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Message
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("celery_worker", "llm_model")]

LONG_WAIT_MS = 60_000


@pytest.fixture(autouse=True)
def _short_replies(llm_model) -> None:
    llm_model.default_params = {"temperature": 0, "max_tokens": 24}
    llm_model.save()


def send(page: Page, text: str) -> None:
    page.get_by_placeholder("Message Djinn").fill(text)
    page.get_by_role("button", name="Send message").click()


def wait_until_replied(page: Page) -> None:
    expect(page.locator("article.message-assistant.is-streaming")).to_have_count(0, timeout=LONG_WAIT_MS)


def test_a_turn_sent_in_one_tab_appears_live_in_the_other_which_then_continues_after_it(page: Page, sign_in, llm_model):
    user = UserFactory()
    conversation = ConversationFactory(owner=user, title="Shared thread", model=llm_model.name)
    add_exchange(conversation)
    sign_in(user)
    tab_a = page
    tab_b = page.context.new_page()
    for tab in (tab_a, tab_b):
        tab.goto(f"/c/{conversation.pk}/")
        expect(tab.locator("[data-connection]")).to_have_attribute("data-state", "open")
    expect(tab_b.locator("article.message-user")).to_have_count(1)

    send(tab_a, "Asked in tab A")

    # tab B shows the new turn without a reload, its reply streaming to the end
    expect(tab_b.locator("article.message-user").last).to_contain_text("Asked in tab A")
    expect(tab_b.locator("article.message-assistant")).to_have_count(2)
    wait_until_replied(tab_a)
    wait_until_replied(tab_b)
    reply_a = Message.objects.filter(conversation=conversation, role="assistant").order_by("created_at").last()
    shown_in_a = tab_a.locator("article.message-assistant .message-body").last.inner_text()
    expect(tab_b.locator("article.message-assistant .message-body").last).to_have_text(shown_in_a)
    screenshot(tab_b, "two-tabs-live")

    send(tab_b, "Asked in tab B")
    wait_until_replied(tab_b)

    asked_b = Message.objects.get(conversation=conversation, content="Asked in tab B")
    assert asked_b.parent_id == reply_a.pk  # continues after tab A's turn: no silent fork
    tab_a.reload()
    expect(tab_a.locator("article.message-user")).to_have_count(3)
    expect(tab_a.locator("article.message-user").last).to_contain_text("Asked in tab B")
