"""python manage.py create_api_key EMAIL [--name NAME]."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from accounts import selectors
from accounts.models import ApiKey, User
from tests.factories import UserFactory


def create_api_key(*args: str) -> str:
    out = io.StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue()


def test_it_prints_a_working_key_alone_on_its_last_line(user):
    output = create_api_key("ADA@example.com", "--name", "deploy bot")

    key = output.splitlines()[-1]
    assert re.fullmatch(r"djn_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}", key)
    api_key = selectors.api_key_authenticate(key=key)
    assert api_key is not None
    assert api_key.user == user
    assert api_key.name == "deploy bot"


def test_it_creates_one_key_and_nothing_else(user):
    users_before = User.objects.count()

    create_api_key(user.email)

    assert ApiKey.objects.count() == 1
    assert User.objects.count() == users_before


def test_an_unknown_email_is_an_error_that_names_it(db):
    with pytest.raises(CommandError, match=r"No account signs in with 'nobody@example\.com'"):
        create_api_key("nobody@example.com")

    assert not ApiKey.objects.exists()


def test_a_deactivated_account_gets_no_key(db):
    UserFactory(email="gone@example.com", is_active=False)

    with pytest.raises(CommandError, match="deactivated"):
        create_api_key("gone@example.com")

    assert not ApiKey.objects.exists()


def test_a_name_too_long_is_an_error(user):
    with pytest.raises(CommandError, match="at most 100"):
        create_api_key(user.email, "--name", "x" * 101)
