"""View decorators other apps use to guard pages."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from accounts.selectors import user_can_chat


def verified_required(view_func: Callable[..., Any]) -> Callable[..., Any]:
    """Like ``login_required``; with DJINN_REQUIRE_EMAIL_VERIFICATION on, an unverified user is sent
    to the page that asks them to verify (and offers a new link). Works on sync and async views."""

    def _ask_to_verify() -> HttpResponse:
        return redirect("accounts:verification_required")

    if iscoroutinefunction(view_func):

        @wraps(view_func)
        async def _async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = await request.auser()
            if not user_can_chat(user):  # attributes only, no query
                return _ask_to_verify()
            return await view_func(request, *args, **kwargs)

        return login_required(_async_wrapper)

    @wraps(view_func)
    def _wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not user_can_chat(request.user):
            return _ask_to_verify()
        return view_func(request, *args, **kwargs)

    return login_required(_wrapper)
