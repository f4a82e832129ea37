"""A reply keeps streaming into the page across a reload and a restart of the web server.

The test plays the worker itself (StreamWriter, and the partial text saved with its seq), so it decides
exactly which events exist at the moment of the reload or of the restart.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Message
from inference import streams
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory

pytestmark = pytest.mark.browser


def save_partial(reply: Message, text: str, seq: int) -> None:
    """What the worker saves about once a second while it streams."""
    Message.objects.filter(pk=reply.pk).update(content=text, content_seq=seq, status=Message.Status.RUNNING)


def test_a_reply_continues_after_a_reload_and_after_a_web_restart(page: Page, sign_in, asgi_server, llm_model):
    user = UserFactory()
    conversation = ConversationFactory(owner=user, title="A story")
    _question, reply = add_exchange(conversation, question="Tell me a story", status=Message.Status.RUNNING)
    writer = streams.StreamWriter(reply.pk)
    writer.delta("Once ")
    writer.delta("upon")
    save_partial(reply, "Once upon", 2)
    body = page.locator("article.message-assistant .message-body")
    sign_in(user)

    # The page shows what was saved, and follows the stream from there.
    page.goto(f"/c/{conversation.pk}/")
    expect(body).to_have_text("Once upon")
    expect(page.get_by_role("button", name="Stop generating")).to_be_visible()
    writer.delta(" a time")
    expect(body).to_have_text("Once upon a time")

    # Reload mid-reply: the saved text is behind the stream (seq 2 of 3); nothing is lost or doubled.
    page.reload()
    expect(body).to_have_text("Once upon a time")
    writer.delta(", there")
    expect(body).to_have_text("Once upon a time, there")

    # The web server goes away while the reply goes on; the page reconnects and catches up.
    asgi_server.stop()
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "reconnecting")
    writer.delta(" lived")
    save_partial(reply, "Once upon a time, there lived", 5)
    writer.delta(" a djinn.")
    asgi_server.start()
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "open", timeout=20_000)
    expect(body).to_have_text("Once upon a time, there lived a djinn.")

    # It ends as the worker ends it.
    Message.objects.filter(pk=reply.pk).update(
        content="Once upon a time, there lived a djinn.", status=Message.Status.COMPLETED, finish_reason="stop"
    )
    writer.done(finish_reason="stop", usage={"prompt_tokens": 12, "completion_tokens": 7})
    expect(page.get_by_role("button", name="Send message")).to_be_visible()
    expect(page.get_by_role("button", name="Stop generating")).to_be_hidden()
    expect(body).to_have_text("Once upon a time, there lived a djinn.")
    expect(page.locator("article.message-assistant")).to_have_attribute("aria-busy", "false")
