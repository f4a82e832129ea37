"""A network drop (issue 12, defect 3): a connection that dies without closing is found by the page's heartbeat
and replaced; a reply streaming meanwhile ends whole, a message whose answer was lost ends in its reply (made
once), and the label says "Connected" again after the browser was briefly offline.

The drop is a TCP proxy between the browser and the server (chaos.proxy.FaultyProxy.lose) that makes what an
open connection carries vanish without closing it, as a lost route or a NAT that forgot the connection does:
the browser's socket still reads "open", and only the heartbeat can tell."""

from __future__ import annotations

import pytest
from django.test import Client
from playwright.sync_api import Page, expect

from chaos.proxy import FaultyProxy
from conversations.models import Message
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("celery_worker", "llm_model")]

LONG_WAIT_MS = 60_000


@pytest.fixture(autouse=True)
def _replies(llm_model) -> None:
    llm_model.default_params = {"temperature": 0, "max_tokens": 60}
    llm_model.save()


@pytest.fixture
def dropping_page(browser, asgi_server):
    """A page that reaches the server through a proxy that can drop the network."""
    proxy = FaultyProxy(("127.0.0.1", asgi_server.port)).start()
    context = browser.new_context(base_url=f"http://127.0.0.1:{proxy.port}", viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.proxy = proxy
    yield page
    context.close()
    proxy.stop()
    assert errors == [], f"the page had JavaScript errors: {errors}"


def sign_in(page: Page, user) -> None:
    client = Client()
    client.force_login(user)
    url = f"http://127.0.0.1:{page.proxy.port}"
    cookie = {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": url}
    page.context.add_cookies([cookie])


def test_replies_and_a_message_sent_during_a_network_drop_arrive_whole_and_once(dropping_page: Page, llm_model):
    page = dropping_page
    user = UserFactory()
    conversation = ConversationFactory(owner=user, title="Through a bad network", model=llm_model.name)
    add_exchange(conversation)
    sign_in(page, user)
    page.goto(f"/c/{conversation.pk}/")
    connection = page.locator("[data-connection]")
    expect(connection).to_have_attribute("data-state", "open")
    body = page.locator("article.message-assistant .message-body").last

    # A drop in the middle of a reply: the page replaces the dead connection and the reply ends whole.
    page.get_by_placeholder("Message Djinn").fill("Tell me a story")
    page.get_by_role("button", name="Send message").click()
    expect(body).not_to_be_empty(timeout=LONG_WAIT_MS)
    assert page.proxy.lose(matching=b"GET /ws/chat/") == 1
    expect(page.get_by_role("button", name="Send message")).to_be_visible(timeout=LONG_WAIT_MS)
    shown = body.inner_text()
    page.reload()  # the page from the database: the same text, nothing lost, nothing doubled
    expect(page.locator("article.message-assistant .message-body").last).to_have_text(shown)

    # A message that reached the server on a connection whose answers no longer reach the page: the heartbeat
    # replaces the connection, the page sends it again, and the server answers with the turn it made.
    expect(connection).to_have_attribute("data-state", "open")
    assert page.proxy.lose(replies_only=True, matching=b"GET /ws/chat/") == 1
    page.get_by_placeholder("Message Djinn").fill("Sent during the drop")
    page.get_by_role("button", name="Send message").click()
    expect(page.locator("article.message-user").last).to_contain_text("Sent during the drop")
    expect(page.locator("article.message-assistant.is-streaming")).to_have_count(0, timeout=LONG_WAIT_MS)
    expect(page.get_by_role("button", name="Send message")).to_be_enabled(timeout=LONG_WAIT_MS)
    expect(connection).to_have_attribute("data-state", "open")
    assert Message.objects.filter(conversation=conversation, content="Sent during the drop").count() == 1
    reply = Message.objects.get(conversation=conversation, parent__content="Sent during the drop")
    assert reply.status == Message.Status.COMPLETED
    assert page.proxy.accepted >= 3  # the first connection and one after each drop
    screenshot(page, "network-drop-recovered")

    # The browser offline for a moment: the label comes back to "Connected".
    page.context.set_offline(True)
    expect(connection).to_have_attribute("data-state", "offline")
    page.context.set_offline(False)
    expect(connection).to_have_attribute("data-state", "open")
    expect(page.locator("[data-connection-label]")).to_have_text("Connected")
