from __future__ import annotations

import math
from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db import transaction
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils.translation import ngettext

from accounts import api_keys, ratelimit, services
from accounts.billing import quotas
from accounts.billing.export import csv_lines, usage_rows
from accounts.models import ApiKey, Plan, StripeEvent, Subscription, UsageRecord, User


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
        ("Profile", {"fields": ("display_name", "email_verified_at", "language", "custom_instructions")}),
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
    actions = ["export_csv"]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        """The list, with the totals of what the filters and search selected."""
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            response.context_data["usage_totals"] = changelist.queryset.aggregate(
                generations=Count("pk"),
                prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
                completion_tokens=Coalesce(Sum("completion_tokens"), 0),
                cached_tokens=Coalesce(Sum("cached_tokens"), 0),
            )
        return response

    @admin.action(description="Download selected records as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> StreamingHttpResponse:
        """The records in the export's stable columns (README, "Usage export"), streamed as they are read."""
        response = StreamingHttpResponse(csv_lines(usage_rows(queryset)), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="djinn-usage.csv"'
        return response

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False


class PlanForm(forms.ModelForm):
    """The admin builds it for Plan with the fieldsets' fields."""

    def clean_is_default(self) -> bool:
        is_default = self.cleaned_data["is_default"]
        was_default = self.instance.pk is not None and Plan.objects.filter(pk=self.instance.pk, is_default=True)
        if not is_default and was_default and was_default.exists():
            raise forms.ValidationError(
                "Every user without a subscription is on the default plan: make another plan the default instead."
            )
        return is_default


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    """Plans and their limits. A change applies to everyone on the plan at once (cached limits are dropped).
    Making a plan the default takes it from the one that was."""

    form = PlanForm

    list_display = (
        "name",
        "slug",
        "price",
        "is_public",
        "is_default",
        "messages_per_window",
        "tokens_per_month",
        "api_requests_per_minute",
        "concurrent_generations",
        "subscribers",
    )
    list_editable = ("is_public",)
    prepopulated_fields = {"slug": ("name",)}
    fieldsets = (
        (None, {"fields": ("name", "slug", "description", "is_public", "is_default", "sort_order")}),
        ("Price", {"fields": ("price_cents", "currency", "stripe_price_id")}),
        (
            "Limits",
            {
                "description": "A blank limit is no limit.",
                "fields": (
                    ("messages_per_window", "message_window_seconds"),
                    "tokens_per_month",
                    ("api_requests_per_minute", "api_tokens_per_minute"),
                    "concurrent_generations",
                    "models_allowed",
                    "max_context_tokens",
                ),
            },
        ),
    )

    @admin.display(description="price", ordering="price_cents")
    def price(self, obj: Plan) -> str:
        return f"{obj.price_cents / 100:.2f} {obj.currency.upper()}" if obj.price_cents else "free"

    @admin.display(description="subscribers")
    def subscribers(self, obj: Plan) -> int:
        return obj.subscriptions.filter(status__in=Subscription.GRANTS_PLAN).count()

    def save_model(self, request: HttpRequest, obj: Plan, form: object, change: bool) -> None:
        with transaction.atomic():
            if obj.is_default:
                Plan.objects.filter(is_default=True).exclude(pk=obj.pk).update(is_default=False)
            super().save_model(request, obj, form, change)
        quotas.limits_forget()

    def delete_model(self, request: HttpRequest, obj: Plan) -> None:
        super().delete_model(request, obj)
        quotas.limits_forget()


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    """Who is on which plan. Staff change or comp a plan here (tick "comped": it is not billed through
    Stripe); Stripe's webhooks keep paid ones up to date."""

    list_display = ("user", "plan", "status", "comped", "current_period_end", "cancel_at_period_end", "updated_at")
    list_filter = ("plan", "status", "comped")
    search_fields = ("user__email", "stripe_customer_id", "stripe_subscription_id")
    list_select_related = ("user", "plan")
    autocomplete_fields = ("user",)
    readonly_fields = ("stripe_customer_id", "stripe_subscription_id", "created_at", "updated_at")
    fields = (
        "user",
        "plan",
        "status",
        "comped",
        ("current_period_start", "current_period_end"),
        "cancel_at_period_end",
        "stripe_customer_id",
        "stripe_subscription_id",
        ("created_at", "updated_at"),
    )

    def save_model(self, request: HttpRequest, obj: Subscription, form: object, change: bool) -> None:
        super().save_model(request, obj, form, change)
        quotas.limits_forget(user_id=obj.user_id)

    def delete_model(self, request: HttpRequest, obj: Subscription) -> None:
        super().delete_model(request, obj)
        quotas.limits_forget(user_id=obj.user_id)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        user_ids = list(queryset.values_list("user_id", flat=True))
        super().delete_queryset(request, queryset)
        for user_id in user_ids:
            quotas.limits_forget(user_id=user_id)


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    """Every webhook event Stripe sent, and what was done with it; read-only."""

    list_display = ("received_at", "type", "event_id", "outcome", "detail")
    list_filter = ("outcome", "type")
    search_fields = ("event_id", "detail")
    date_hierarchy = "received_at"
    readonly_fields = ("event_id", "type", "created", "outcome", "detail", "payload", "received_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StripeEvent | None = None) -> bool:
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
            message = ngettext(
                "Too many attempts, try again in %(minutes)d minute.",
                "Too many attempts, try again in %(minutes)d minutes.",
                minutes,
            ) % {"minutes": minutes}
            return render(request, "errors/429.html", {"message": message}, status=429)
        response = login_view(request, extra_context)
        if request.user.is_authenticated and request.user.is_staff:
            ratelimit.login_success_record(email=email)
        else:
            ratelimit.login_failure_record(email=email, ip=ip)
        return response

    return view


admin.site.login = _rate_limited(admin.site.login)
# Django's navigation sidebar takes 300 px of every page: beside a list's filters it left a 1280 px screen 630 px
# for the table, and the last columns of most lists were cut off. The home page and breadcrumbs navigate instead.
admin.site.enable_nav_sidebar = False
