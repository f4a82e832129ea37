from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.template.loader import render_to_string

from accounts import views


def test_an_unknown_url_gets_the_styled_404_page(client, settings, db):
    settings.DEBUG = False

    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert b"This page does not exist" in response.content
    assert b"css/app.css" in response.content


def test_the_404_page_shows_the_signed_in_user(client, settings, user):
    settings.DEBUG = False
    client.force_login(user)

    response = client.get("/no-such-page/")

    assert user.email.encode() in response.content


def test_the_500_page_renders_with_no_request_context(rf):
    # a bare request: no session, no user, no database needed
    response = views.server_error(rf.get("/"))

    assert response.status_code == 500
    assert b"Something went wrong on our side" in response.content
    assert b"css/app.css" in response.content


def test_the_400_page_renders_with_no_request_context(rf):
    response = views.bad_request(rf.get("/"), Exception("bad host"))

    assert response.status_code == 400
    assert b"We could not understand that request" in response.content


def test_the_403_page_is_styled(rf, db):
    request = rf.get("/")
    request.user = AnonymousUser()

    response = views.permission_denied(request, Exception("no"))

    assert response.status_code == 403
    assert b"You cannot open this page" in response.content


def test_error_templates_render_without_any_context():
    for name in ["errors/400.html", "errors/403.html", "errors/404.html", "errors/500.html"]:
        assert "Djinn" in render_to_string(name)
