"""Authenticate by e-mail, case-insensitively."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest

from accounts.models import normalize_email


class EmailBackend(ModelBackend):
    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ):
        email = username or kwargs.get("email")
        if not email or password is None:
            return None
        user_model = get_user_model()
        try:
            user = user_model.objects.get(email=normalize_email(email))
        except user_model.DoesNotExist:
            user_model().set_password(password)  # same work either way: no timing oracle for unknown e-mails
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
