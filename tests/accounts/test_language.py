"""Languages: a visitor gets their browser's, a signed-in user the one chosen in Settings (on every device);
pages, messages, e-mails, numbers and dates come in it, and scripts get its catalog."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import translation

from accounts import services
from accounts.billing import quotas
from accounts.models import User
from tests.factories import UserFactory, usage_made

SETTINGS_PAGES = [
    "accounts:settings_profile",
    "accounts:settings_email",
    "accounts:settings_password",
    "accounts:settings_billing",
    "accounts:settings_api_keys",
    "developers",
    "accounts:settings_delete",
]
# Words of the English pages that no German page may still show (the page's own text, not data).
ENGLISH = ["Settings", "Profile", "Password", "Log out", "Log in", "Sign up", "Skip to content", "Delete account"]


def text_of(response) -> str:
    """The page's visible words: markup, scripts and attribute values left out."""
    html = response.content.decode()
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def html_lang(response) -> str:
    return re.search(r'<html lang="([^"]+)"', response.content.decode())[1]


def english_left(text: str) -> list[str]:
    return [word for word in ENGLISH if re.search(rf"\b{re.escape(word)}\b", text)]


@pytest.fixture
def german_user(db) -> User:
    return UserFactory(email="ada@example.com", display_name="Ada", language="de")


# Visitors: Accept-Language ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["accounts:login", "accounts:signup", "accounts:password_reset", "home"])
def test_a_visitor_whose_browser_asks_for_german_gets_german_pages(client, db, name):
    response = client.get(reverse(name), headers={"accept-language": "de-DE,de;q=0.9,en;q=0.5"})

    assert response.status_code == 200
    assert html_lang(response) == "de"
    assert response["Content-Language"] == "de"
    assert "Anmelden" in text_of(response)
    assert english_left(text_of(response)) == []


def test_a_visitor_whose_browser_asks_for_another_language_gets_english(client, db):
    response = client.get(reverse("accounts:login"), headers={"accept-language": "fr-FR,fr;q=0.9"})

    assert html_lang(response) == "en"
    assert "Welcome back" in text_of(response)


def test_form_errors_come_in_the_visitors_language(client, db):
    response = client.post(
        reverse("accounts:signup"),
        {"email": "not an address", "display_name": "Ada", "password1": "short", "password2": "other"},
        headers={"accept-language": "de"},
    )

    text = text_of(response)
    assert "Geben Sie eine gültige E-Mail-Adresse ein, etwa name@example.com." in text
    assert "Die beiden Passwörter stimmen nicht überein." in text
    assert "Bitte prüfen Sie die markierten Felder." in text


def test_a_visitor_who_signs_up_in_german_gets_the_verification_email_in_german(client, db, committed, outbox):
    with committed():
        client.post(
            reverse("accounts:signup"),
            {
                "email": "grace@example.com",
                "display_name": "Grace",
                "password1": "velvet-orbit-42",
                "password2": "velvet-orbit-42",
            },
            headers={"accept-language": "de"},
        )

    (message,) = outbox
    assert message.subject == "Bestätigen Sie Ihre E-Mail-Adresse für Djinn"
    assert message.body.startswith("Hallo Grace,")
    assert "Der Link gilt 24 Stunden." in message.body


# Signed-in users: their own choice ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SETTINGS_PAGES)
def test_a_user_who_chose_german_gets_every_settings_page_in_german_whatever_the_browser(client, german_user, name):
    client.force_login(german_user)

    response = client.get(reverse(name), headers={"accept-language": "en-US,en;q=0.9"})

    assert response.status_code == 200
    assert html_lang(response) == "de"
    assert "Einstellungen" in text_of(response)
    assert english_left(text_of(response)) == []


def test_the_profile_page_offers_the_browsers_language_english_and_deutsch(client, german_user):
    client.force_login(german_user)

    page = client.get(reverse("accounts:settings_profile")).content.decode()

    options = re.findall(r'<option value="([^"]*)"( selected)?>([^<]*)</option>', page)
    assert options == [("", "", "Wie in meinem Browser"), ("en", "", "English"), ("de", " selected", "Deutsch")]


def test_switching_to_deutsch_in_settings_persists_and_applies_from_the_next_page_on(client, user):
    client.force_login(user)
    assert html_lang(client.get(reverse("accounts:settings_profile"))) == "en"

    response = client.post(
        reverse("accounts:settings_profile"),
        {"display_name": user.display_name, "language": "de", "custom_instructions": ""},
        follow=True,
    )

    user.refresh_from_db()
    assert user.language == "de"
    assert html_lang(response) == "de"
    assert "Profil gespeichert." in text_of(response)  # said in the language just chosen


def test_the_choice_follows_the_user_to_another_device(user):
    services.user_profile_update(user=user, display_name="Ada", custom_instructions="", language="de")
    other_device = Client()
    other_device.force_login(user)

    response = other_device.get(reverse("accounts:settings_email"))

    assert html_lang(response) == "de"
    assert "E-Mail-Adresse" in text_of(response)


def test_choosing_the_browsers_language_again_gives_the_browser_the_say(client, german_user):
    client.force_login(german_user)

    client.post(
        reverse("accounts:settings_profile"), {"display_name": "Ada", "language": "", "custom_instructions": ""}
    )

    german_user.refresh_from_db()
    assert german_user.language == ""
    assert html_lang(client.get(reverse("accounts:settings_profile"), headers={"accept-language": "en"})) == "en"
    assert html_lang(client.get(reverse("accounts:settings_profile"), headers={"accept-language": "de"})) == "de"


def test_after_logging_out_the_pages_and_the_goodbye_are_in_the_browsers_language(client, german_user):
    client.force_login(german_user)

    response = client.post(reverse("accounts:logout"), headers={"accept-language": "en"}, follow=True)

    assert html_lang(response) == "en"
    assert "You are logged out." in text_of(response)


def test_a_language_that_is_not_offered_is_refused(client, user):
    client.force_login(user)

    response = client.post(
        reverse("accounts:settings_profile"), {"display_name": "Ada", "language": "fr", "custom_instructions": ""}
    )

    user.refresh_from_db()
    assert response.status_code == 200
    assert user.language == ""
    assert "Select a valid choice." in text_of(response)


def test_an_email_to_a_german_user_is_in_german_whatever_the_page_that_sent_it(
    client, german_user, password, committed, outbox
):
    client.force_login(german_user)

    with committed():
        client.post(
            reverse("accounts:settings_email"),
            {"new_email": "ada@analytical.example", "password": password},
            headers={"accept-language": "en"},
        )

    (message,) = outbox
    assert message.subject == "Bestätigen Sie Ihre neue E-Mail-Adresse für Djinn"
    assert "statt mit ada@example.com anmelden" in message.body


# Numbers and dates ------------------------------------------------------------------------------------------


@pytest.mark.plan_limits
def test_the_billing_page_writes_numbers_the_german_way(client, german_user):
    usage_made(german_user, prompt=1234, completion=0)
    client.force_login(german_user)

    text = text_of(client.get(reverse("accounts:settings_billing")))

    assert "1.234 von 200.000" in text  # tokens this month, of the Free plan's budget
    assert "Chat: 1.234" in text
    assert "200.000 Tokens im Monat" in text


def test_the_api_keys_page_writes_dates_the_german_way(client, german_user):
    api_key, _key = services.api_key_create(user=german_user, name="Skript")
    type(api_key).objects.filter(pk=api_key.pk).update(
        created_at=datetime(2025, 3, 5, 12, tzinfo=UTC), last_used_at=datetime(2025, 3, 1, 12, tzinfo=UTC)
    )
    client.force_login(german_user)

    text = text_of(client.get(reverse("accounts:settings_api_keys")))

    assert "5. März 2025" in text
    assert re.search(r"vor \d+ (Jahr|Jahren|Monat|Monaten)\b", text)  # humanize's dative, not "vor 1 Jahre"


def test_limits_and_durations_are_worded_in_the_active_language():
    with translation.override("de"):
        assert quotas.duration_words(45) == "45 Sekunden"
        assert quotas.duration_words(7200) == "2 Stunden"
        assert quotas.duration_words(7500) == "2 Std. 05 Min."
    assert quotas.duration_words(7200) == "2 hours"


# The JavaScript catalog -------------------------------------------------------------------------------------


def test_every_page_loads_the_catalog_of_its_language_before_any_other_script(client, german_user):
    client.force_login(german_user)

    page = client.get(reverse("accounts:settings_api_keys")).content.decode()

    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert scripts[0].startswith(reverse("javascript_catalog") + "?l=de&amp;v=")
    assert len(scripts) > 1


def test_the_catalog_is_german_for_l_de_and_kept_by_browsers_for_a_year(client, db):
    response = client.get(reverse("javascript_catalog"), {"l": "de", "v": "1"}, headers={"accept-language": "en"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert response["Content-Language"] == "de"
    assert '"Copied": "Kopiert"' in response.content.decode()
    assert "immutable" in response["Cache-Control"]
    assert "max-age=31536000" in response["Cache-Control"]


def test_the_english_catalog_translates_nothing(client, db):
    response = client.get(reverse("javascript_catalog"), {"l": "en", "v": "1"})

    assert "Kopiert" not in response.content.decode()
    assert "django.gettext = function" in response.content.decode()
