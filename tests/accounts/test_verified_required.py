"""The guard the chat pages use: ``verified_required`` and ``user_can_chat``."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from django.urls import reverse

from accounts.decorators import verified_required
from accounts.selectors import user_can_chat


@verified_required
def chat_page(request):
    return HttpResponse("chat")


@verified_required
async def async_chat_page(request):
    return HttpResponse("chat")


def request_from(rf, user):
    request = rf.get("/chat/")
    request.user = user

    async def auser():
        return user

    request.auser = auser
    return request


def test_with_the_setting_off_an_unverified_user_may_chat(rf, settings, unverified_user):
    settings.DJINN_REQUIRE_EMAIL_VERIFICATION = False

    response = chat_page(request_from(rf, unverified_user))

    assert response.status_code == 200
    assert user_can_chat(unverified_user)


def test_with_the_setting_on_an_unverified_user_is_asked_to_verify(rf, settings, unverified_user):
    settings.DJINN_REQUIRE_EMAIL_VERIFICATION = True

    response = chat_page(request_from(rf, unverified_user))

    assert response.status_code == 302
    assert response.url == reverse("accounts:verification_required")
    assert not user_can_chat(unverified_user)


def test_with_the_setting_on_a_verified_user_may_chat(rf, settings, user):
    settings.DJINN_REQUIRE_EMAIL_VERIFICATION = True

    response = chat_page(request_from(rf, user))

    assert response.status_code == 200
    assert user_can_chat(user)


def test_an_anonymous_visitor_is_sent_to_log_in(rf, db):
    response = chat_page(request_from(rf, AnonymousUser()))

    assert response.status_code == 302
    assert response.url == f"{reverse('accounts:login')}?next=/chat/"
    assert not user_can_chat(AnonymousUser())


def test_async_views_are_guarded_the_same_way(rf, settings, unverified_user):
    settings.DJINN_REQUIRE_EMAIL_VERIFICATION = True

    response = async_to_sync(async_chat_page)(request_from(rf, unverified_user))

    assert response.status_code == 302
    assert response.url == reverse("accounts:verification_required")


def test_the_verification_page_explains_and_offers_a_new_link(client, settings, unverified_user):
    settings.DJINN_REQUIRE_EMAIL_VERIFICATION = True
    client.force_login(unverified_user)

    response = client.get(reverse("accounts:verification_required"))

    assert response.status_code == 200
    assert b"Verify your e-mail to start chatting" in response.content
    assert reverse("accounts:verification_resend").encode() in response.content
