"""Documents in chat in the browser (issue 12): files attached from the composer show as chips, go with the
message, and the reply shows the passages it was given as its sources. A file Djinn cannot read is refused at
once with the reason, and the message is kept."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Document, Message
from tests.conversations.pdfs import make_pdf
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("celery_worker")]

LONG_WAIT_MS = 60_000


def test_files_attached_to_a_message_become_the_replys_sources(page: Page, sign_in, llm_model, tmp_path):
    llm_model.default_params = {"temperature": 0, "max_tokens": 8}
    llm_model.save()
    notes = tmp_path / "trip-notes.md"
    notes.write_text("# Lisbon\n\nThe hotel is the Casa Azul, on Rua das Flores.")
    pdf = tmp_path / "tickets.pdf"
    pdf.write_bytes(make_pdf(["Flight TP 1234 leaves at 09:40."]))
    program = tmp_path / "virus.exe"
    program.write_bytes(b"MZ\x90\x00")
    user = UserFactory()
    sign_in(user)
    page.goto("/")
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "open")
    composer = page.get_by_label("Message Djinn")
    composer.fill("Where is my hotel?")

    # A file Djinn cannot read is refused with the reason; the message stays.
    page.locator("[data-composer-file]").set_input_files(str(program))
    expect(page.locator("[data-composer-error]")).to_contain_text("“virus.exe” is not a file Djinn can read")
    expect(composer).to_have_value("Where is my hotel?")

    # Two good ones: chips with their sizes, one removed again before sending.
    page.locator("[data-composer-file]").set_input_files([str(notes), str(pdf)])
    chips = page.locator("[data-composer-files] .file-chip")
    expect(chips).to_have_count(2)
    expect(chips.filter(has_text="trip-notes.md")).to_have_attribute("data-state", "ready")
    expect(chips.filter(has_text="tickets.pdf")).to_have_attribute("data-state", "ready")
    screenshot(page, "documents-attached")
    page.get_by_role("button", name="Remove tickets.pdf").click()
    expect(chips).to_have_count(1)
    expect(page.get_by_role("button", name="Attach files")).to_be_visible()

    page.get_by_role("button", name="Send message").click()
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]+/$"), timeout=LONG_WAIT_MS)
    expect(page.locator("[data-composer-files]")).to_be_hidden()
    expect(page.locator("article.message-user .message-files")).to_contain_text("trip-notes.md")
    reply = page.locator("article.message-assistant").last
    expect(reply).not_to_have_class(re.compile("is-streaming"), timeout=LONG_WAIT_MS)
    sources = reply.locator(".message-sources")
    expect(sources.locator("summary")).to_have_text("Sources: trip-notes.md")
    sources.locator("summary").click()
    expect(sources.locator("blockquote")).to_contain_text("Casa Azul, on Rua das Flores")
    screenshot(page, "documents-sources")

    sent = Document.objects.get(owner=user, name="trip-notes.md")
    answer = Message.objects.get(conversation=sent.conversation, role="assistant")
    assert sent.message.content == "Where is my hotel?"
    assert [source["name"] for source in answer.sources] == ["trip-notes.md"]
    # The removed file was taken back (its removal was sent long before this reload came back).
    page.reload()
    expect(page.locator("article.message-assistant .message-sources summary")).to_have_text("Sources: trip-notes.md")
    assert not Document.objects.filter(owner=user, name="tickets.pdf").exists()
