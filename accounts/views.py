"""Account pages: thin views that parse a form, call a service and render.

Password reset uses Django's views with our templates and forms; everything else is a function.
"""

from __future__ import annotations

import math
import sys

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, login, logout, update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseServerError,
    JsonResponse,
    QueryDict,
)
from django.shortcuts import redirect, render, resolve_url
from django.template import loader
from django.urls import reverse_lazy
from django.utils import translation
from django.utils.functional import lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from accounts import forms, ratelimit, selectors, services, tokens
from accounts.api_keys import ApiKeyCreateForm
from accounts.models import ApiKey
from accounts.selectors import user_can_chat
from config.errors import is_unavailable, unavailable_response

# Home --------------------------------------------------------------------------------------------


def landing(request: HttpRequest) -> HttpResponse:
    """What a visitor who is not signed in sees at "/" (signed-in users get the chat there)."""
    return render(request, "landing.html")


# Log in, sign up, log out ------------------------------------------------------------------------


@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "POST"])
def log_in(request: HttpRequest) -> HttpResponse:
    next_url = _next_url(request)
    if request.user.is_authenticated:
        return redirect(next_url)
    form = forms.LogInForm(_posted(request))
    status = 200
    if request.method == "POST" and form.is_valid():
        email, ip = form.cleaned_data["email"], request.META.get("REMOTE_ADDR", "")
        wait = ratelimit.login_blocked_seconds(email=email, ip=ip)
        if wait:
            minutes = math.ceil(wait / 60)
            message = ngettext(
                "Too many attempts, try again in %(minutes)d minute.",
                "Too many attempts, try again in %(minutes)d minutes.",
                minutes,
            )
            form.add_error(None, message % {"minutes": minutes})
            status = 429
        else:
            user = authenticate(request, username=email, password=form.cleaned_data["password"])
            if user is not None:
                ratelimit.login_success_record(email=email)
                login(request, user)
                return redirect(next_url)
            ratelimit.login_failure_record(email=email, ip=ip)
            form.add_error(None, _("The e-mail address or password is not right."))
    return render(request, "accounts/login.html", {"form": form, "next": next_url}, status=status)


@sensitive_post_parameters("password1", "password2")
@never_cache
@require_http_methods(["GET", "POST"])
def sign_up(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = forms.SignUpForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            user = services.user_sign_up(
                email=data["email"],
                password=data["password1"],
                display_name=data["display_name"],
                base_url=_base_url(request),
            )
        except services.EmailTakenError:
            form.add_error("email", _(forms.EMAIL_TAKEN))
        else:
            login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
            welcome = _("Welcome to Djinn! We sent a link to %(email)s to verify your address.")
            messages.success(request, welcome % {"email": user.email})
            return redirect(_next_url(request))
    return render(request, "accounts/signup.html", {"form": form, "next": _next_url(request)})


@require_http_methods(["GET", "POST"])
def log_out(request: HttpRequest) -> HttpResponse:
    # GET asks first: logging out on a GET would let any page log people out with an <img>.
    if request.method == "GET":
        return render(request, "accounts/logout.html")
    logout(request)
    _activate_browser_language(request)  # the next page is a visitor's: the message is in its language
    messages.info(request, _("You are logged out."))
    return redirect(settings.LOGOUT_REDIRECT_URL)


# E-mail verification -----------------------------------------------------------------------------


@require_http_methods(["GET"])
def verify_email(request: HttpRequest, token: str) -> HttpResponse:
    try:
        user = services.user_email_verify(token=token)
    except tokens.LinkExpired:
        return _link_failed(request, "verify", expired=True)
    except tokens.LinkInvalid:
        return _link_failed(request, "verify", expired=False)
    messages.success(request, _("Thank you: %(email)s is verified.") % {"email": user.email})
    return redirect("home" if request.user.is_authenticated else "accounts:login")


@login_required
@require_POST
def verification_resend(request: HttpRequest) -> HttpResponse:
    user = request.user
    if user.email_verified:
        messages.info(request, _("Your e-mail address is already verified."))
    elif not ratelimit.verification_resend_allowed(user_id=user.pk):
        messages.warning(request, _("We sent a link less than a minute ago. Check your inbox, then try again."))
    else:
        services.user_verification_send(user=user, base_url=_base_url(request))
        messages.success(request, _("We sent a new verification link to %(email)s.") % {"email": user.email})
    return redirect(_next_url(request))


@login_required
@require_http_methods(["GET"])
def verification_required(request: HttpRequest) -> HttpResponse:
    if user_can_chat(request.user):
        return redirect("home")
    return render(request, "accounts/verification_required.html")


# Settings ----------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def settings_profile(request: HttpRequest) -> HttpResponse:
    user = request.user
    initial = {
        "display_name": user.display_name,
        "language": user.language,
        "custom_instructions": user.custom_instructions,
    }
    form = forms.ProfileForm(_posted(request), initial=initial)
    if request.method == "POST" and form.is_valid():
        services.user_profile_update(user=user, **form.cleaned_data)
        if user.language:
            translation.activate(user.language)  # said in the language just chosen, as the next page will be
        else:
            _activate_browser_language(request)
        messages.success(request, _("Profile saved."))
        return redirect("accounts:settings_profile")
    return render(request, "accounts/settings/profile.html", {"form": form, "section": "profile"})


@sensitive_post_parameters("password")
@login_required
@require_http_methods(["GET", "POST"])
def settings_email(request: HttpRequest) -> HttpResponse:
    form = forms.EmailChangeForm(request.user, _posted(request))
    if request.method == "POST" and form.is_valid():
        new_email = form.cleaned_data["new_email"]
        services.user_email_change_request(user=request.user, new_email=new_email, base_url=_base_url(request))
        message = _(
            "We sent a confirmation link to %(new_email)s. You keep signing in with %(email)s until you click it."
        )
        messages.success(request, message % {"new_email": new_email, "email": request.user.email})
        return redirect("accounts:settings_email")
    return render(request, "accounts/settings/email.html", {"form": form, "section": "email"})


@require_http_methods(["GET"])
def email_change_confirm(request: HttpRequest, token: str) -> HttpResponse:
    try:
        user = services.user_email_change_confirm(token=token)
    except tokens.LinkExpired:
        return _link_failed(request, "email_change", expired=True)
    except tokens.LinkInvalid:
        return _link_failed(request, "email_change", expired=False)
    except services.EmailTakenError:
        return _link_failed(request, "email_change", expired=False, taken=True)
    messages.success(request, _("Done: you now sign in with %(email)s.") % {"email": user.email})
    return redirect("accounts:settings_email" if request.user.is_authenticated else "accounts:login")


@sensitive_post_parameters("old_password", "new_password1", "new_password2")
@login_required
@require_http_methods(["GET", "POST"])
def settings_password(request: HttpRequest) -> HttpResponse:
    form = forms.PasswordChangeForm(request.user, _posted(request))
    if request.method == "POST" and form.is_valid():
        services.user_password_change(user=request.user, password=form.cleaned_data["new_password1"])
        update_session_auth_hash(request, request.user)  # stay logged in here; other sessions end
        messages.success(request, _("Password changed. Other devices have been logged out."))
        return redirect("accounts:settings_password")
    return render(request, "accounts/settings/password.html", {"form": form, "section": "password"})


@sensitive_post_parameters("password")
@login_required
@require_http_methods(["GET", "POST"])
def settings_delete(request: HttpRequest) -> HttpResponse:
    form = forms.DeleteAccountForm(request.user, _posted(request))
    if request.method == "POST" and form.is_valid():
        user = request.user
        logout(request)
        services.user_delete(user=user)
        _activate_browser_language(request)
        messages.info(request, _("Your account and everything in it have been deleted."))
        return redirect("home")
    return render(request, "accounts/settings/delete.html", {"form": form, "section": "delete"})


_NEW_KEY_SESSION = "djinn_new_api_key"


@never_cache  # the page that shows a new key must not be kept by the browser or a proxy
@login_required
@require_http_methods(["GET", "POST"])
def settings_api_keys(request: HttpRequest) -> HttpResponse:
    """The user's keys and a form for a new one. A created key goes through the session to the page the
    POST redirects to (so reloading cannot create a second one) and is taken out on that first view, so it
    is shown exactly once."""
    form = ApiKeyCreateForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        _api_key, new_key = services.api_key_create(user=request.user, name=form.cleaned_data["name"])
        request.session[_NEW_KEY_SESSION] = new_key
        return redirect("accounts:settings_api_keys", permanent=False)
    context = {
        "form": form,
        "new_key": request.session.pop(_NEW_KEY_SESSION, None) if request.method == "GET" else None,
        "api_keys": selectors.api_key_list(user=request.user),
        "section": "api_keys",
    }
    return render(request, "accounts/settings/api_keys.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def settings_api_key_revoke(request: HttpRequest, api_key_id: int) -> HttpResponse:
    """GET asks to confirm (programs using the key stop at once), POST revokes."""
    try:
        api_key = selectors.api_key_get(user=request.user, api_key_id=api_key_id)
    except ApiKey.DoesNotExist:
        raise Http404("No such API key.") from None
    if request.method == "GET":
        context = {"api_key": api_key, "section": "api_keys"}
        return render(request, "accounts/settings/api_key_revoke.html", context)
    services.api_key_revoke(api_key=api_key)
    messages.success(request, _("Key %(prefix)s… revoked. Requests that use it now fail.") % {"prefix": api_key.prefix})
    return redirect("accounts:settings_api_keys")


# Password reset (Django's views) -----------------------------------------------------------------

# These views are built once, at import; the words are put in the language of each request that shows them.
_link_lifetime = lazy(tokens.link_lifetime, str)

password_reset = auth_views.PasswordResetView.as_view(
    form_class=forms.PasswordResetForm,
    template_name="accounts/password_reset_form.html",
    email_template_name="accounts/email/password_reset.txt",
    subject_template_name="accounts/email/password_reset_subject.txt",
    extra_email_context={"link_lifetime": _link_lifetime()},  # PASSWORD_RESET_TIMEOUT is fixed in code
    success_url=reverse_lazy("accounts:password_reset_done"),
)
password_reset_done = auth_views.PasswordResetDoneView.as_view(
    template_name="accounts/password_reset_done.html", extra_context={"link_lifetime": _link_lifetime()}
)
password_reset_confirm = auth_views.PasswordResetConfirmView.as_view(
    form_class=forms.SetPasswordForm,
    template_name="accounts/password_reset_confirm.html",
    success_url=reverse_lazy("accounts:password_reset_complete"),
)
password_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="accounts/password_reset_complete.html"
)


# Error pages -------------------------------------------------------------------------------------


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):  # API clients get JSON, never a page
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return render(request, "errors/404.html", status=404)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "errors/403.html", status=403)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    # No request context: the request itself may be what is broken (a Host we do not serve).
    return HttpResponseBadRequest(loader.render_to_string("errors/400.html"))


def server_error(request: HttpRequest) -> HttpResponse:
    # Called while the exception is being handled: PostgreSQL or Redis out of reach anywhere in the chain (a
    # session saved after the view, say) is a 503 to retry, not a 500.
    if is_unavailable(sys.exc_info()[1]):
        return unavailable_response(request)
    # No request context: the user, the session or the database may be what failed.
    return HttpResponseServerError(loader.render_to_string("errors/500.html"))


# Helpers -----------------------------------------------------------------------------------------


def _next_url(request: HttpRequest) -> str:
    """Where to go after log-in: ``next`` when it points to this site, else the home page."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    allowed_hosts = {request.get_host()}
    if url_has_allowed_host_and_scheme(candidate, allowed_hosts=allowed_hosts, require_https=request.is_secure()):
        return candidate
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def _posted(request: HttpRequest) -> QueryDict | None:
    """Form data for a POST (even an empty one, so it shows its errors), None for a GET."""
    return request.POST if request.method == "POST" else None


def _base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/")


def _activate_browser_language(request: HttpRequest) -> None:
    """Speak the rest of this request in the browser's language (Accept-Language), as LocaleMiddleware chose it."""
    translation.activate(translation.get_language_from_request(request))


def _link_failed(request: HttpRequest, kind: str, *, expired: bool, taken: bool = False) -> HttpResponse:
    context = {"kind": kind, "expired": expired, "taken": taken, "link_lifetime": tokens.link_lifetime()}
    return render(request, "accounts/link_failed.html", context, status=400)
