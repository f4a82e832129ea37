from __future__ import annotations

import math
from collections.abc import Callable

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts import ratelimit
from accounts.models import User


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
