from __future__ import annotations

import math
from collections.abc import Callable

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts import api_keys, ratelimit, services
from accounts.models import ApiKey, UsageRecord, User


class UserCreationAdminForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class UserChangeAdminForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = UserChangeAdminForm
    add_form = UserCreationAdminForm
    list_display = ("email", "display_name", "email_verified", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("is_active", "is_staff", "is_superuser", ("email_verified_at", admin.EmptyFieldListFilter))
    search_fields = ("email", "display_name")
    ordering = ("-date_joined",)
    readonly_fields = ("date_joined", "last_login")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("display_name", "email_verified_at", "custom_instructions")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    @admin.display(boolean=True, description="verified", ordering="email_verified_at")
    def email_verified(self, obj: User) -> bool:
        return obj.email_verified


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are seen and revoked here, never created (the secret would have nowhere safe to go) and never
    shown: only the prefix is stored in clear, and the hash stays out of every page."""

    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "active", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("prefix", "name", "user__email", "user__display_name")
    list_select_related = ("user",)
    ordering = ("-created_at",)
    fields = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke"]

    @admin.display(boolean=True, description="active", ordering="revoked_at")
    def active(self, obj: ApiKey) -> bool:
        return obj.is_active

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(services.api_key_revoke(api_key=api_key) for api_key in queryset)
        self.message_user(request, f"Revoked {revoked} API key{'' if revoked == 1 else 's'}.", messages.SUCCESS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ApiKey], search_term: str
    ) -> tuple[QuerySet[ApiKey], bool]:
        # A whole key pasted into the search box (a leaked one, say) finds its row by the prefix it starts with.
        term = search_term.strip()
        if term.startswith(f"{api_keys.SCHEME}_"):
            term = term[: api_keys.PREFIX_LENGTH]
        return super().get_search_results(request, queryset, term)


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """The usage ledger, read-only: records are written by the workers, one per generation."""

    list_display = (
        "created_at",
        "user",
        "source",
        "model",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "api_key",
        "generation_id",
    )
    list_filter = ("source", "model", "created_at")
    search_fields = ("user__email", "generation_id", "api_key__prefix")
    list_select_related = ("user", "api_key")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False


def _rate_limited(login_view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The admin's log-in form obeys the same per-account and per-IP limits as the site's."""

    def view(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if request.method != "POST":
            return login_view(request, extra_context)
        email, ip = request.POST.get("username", ""), request.META.get("REMOTE_ADDR", "")
        wait = ratelimit.login_blocked_seconds(email=email, ip=ip)
        if wait:
            minutes = math.ceil(wait / 60)
            message = f"Too many attempts, try again in {minutes} minute{'' if minutes == 1 else 's'}."
            return render(request, "errors/429.html", {"message": message}, status=429)
        response = login_view(request, extra_context)
        if request.user.is_authenticated and request.user.is_staff:
            ratelimit.login_success_record(email=email)
        else:
            ratelimit.login_failure_record(email=email, ip=ip)
        return response

    return view


admin.site.login = _rate_limited(admin.site.login)
