"""The chat in German, in a real browser: a user who chose Deutsch sees the chat page, its scripts' words, the
server's errors over the WebSocket and a reply's time in German."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Project
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("celery_worker", "llm_model")]

LONG_WAIT_MS = 60_000


@pytest.fixture(autouse=True)
def _short_replies(llm_model) -> None:
    llm_model.default_params = {"temperature": 0, "max_tokens": 12}
    llm_model.save()


def test_a_german_user_chats_in_german(page: Page, sign_in):
    user = UserFactory(language="de")
    project = Project.objects.create(owner=user, name="Thesis")
    sign_in(user)

    # The page and what its scripts write: the composer, the buttons, the sidebar, the connection.
    page.goto(f"/p/{project.pk}/")
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page.locator("[data-connection-label]")).to_have_text("Verbunden")
    composer = page.get_by_label("Nachricht an Djinn")
    expect(composer).to_have_attribute("placeholder", "Nachricht an Djinn")
    expect(page.get_by_role("button", name="Nachricht senden")).to_be_visible()
    expect(page.get_by_role("button", name="Chatliste ein- oder ausblenden")).to_be_visible()
    expect(page.get_by_role("button", name="Dateien anhängen")).to_be_visible()
    expect(page.locator("[data-projects] summary")).to_have_text("Projekte")
    expect(page.get_by_role("link", name="Neuer Chat", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Archivierte Chats")).to_be_visible()
    expect(page.get_by_role("heading", name="Neuer Chat in Thesis")).to_be_visible()
    expect(page.get_by_text("Noch keine Chats.")).to_be_visible()

    # The chat's settings.
    page.get_by_role("button", name="Einstellungen für diesen Chat").click()
    dialog = page.get_by_role("dialog", name="Chat-Einstellungen")
    expect(dialog.get_by_label("Wie Djinn sich in diesem Chat verhalten soll")).to_be_visible()
    expect(dialog.get_by_label("Temperatur")).to_be_visible()
    expect(dialog.get_by_label("Längste Antwort, in Tokens")).to_be_visible()
    expect(dialog.get_by_label("Projekt", exact=True)).to_have_value(str(project.pk))
    screenshot(page, "chat-settings-in-german")
    dialog.get_by_role("button", name="Abbrechen").click()

    # Refused by the page, then by the server: the project was deleted meanwhile (in another tab).
    composer.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Schreiben Sie zuerst eine Nachricht.")
    Project.objects.filter(pk=project.pk).delete()
    composer.fill("Gliederung für Kapitel eins")
    composer.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Projekt nicht gefunden.")
    expect(composer).to_have_value("Gliederung für Kapitel eins")  # kept, to send again
    screenshot(page, "chat-error-in-german")

    # A reply: its buttons, its time, and the sidebar's day.
    page.goto("/")
    expect(page.get_by_text("Wie kann ich Ihnen heute helfen?")).to_be_visible()
    expect(page.locator("[data-connection-label]")).to_have_text("Verbunden")
    composer.fill("Hallo")
    composer.press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]+/$"), timeout=LONG_WAIT_MS)
    expect(page.locator("article.message-assistant.is-streaming")).to_have_count(0, timeout=LONG_WAIT_MS)
    reply = page.locator("article.message-assistant").last
    expect(reply.get_by_role("button", name="Gute Antwort")).to_be_visible()
    expect(reply.get_by_role("button", name="Antwort neu erstellen")).to_be_visible()
    expect(page.get_by_role("button", name="Nachricht senden")).to_be_visible()
    expect(page.locator(".conversation-group-title").first).to_have_text("Heute")
    time = reply.locator(".message-meta time")
    expect(time).to_have_text(re.compile(r"^\d{1,2}:\d{2}$"))  # 24 hours, no AM or PM
    written = time.get_attribute("datetime")
    german = page.evaluate(
        "(when) => new Intl.DateTimeFormat('de', {dateStyle: 'full', timeStyle: 'short'}).format(new Date(when))",
        written,
    )
    expect(time).to_have_attribute("title", german)
    assert re.match(r"^(Montag|Dienstag|Mittwoch|Donnerstag|Freitag|Samstag|Sonntag), ", german)
    screenshot(page, "chat-reply-in-german")
