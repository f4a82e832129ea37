"""Plans and subscriptions (models of the accounts app)."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext

NO_LIMIT = "Blank for no limit."


class Plan(models.Model):
    """What a subscription buys: a price and limits. A blank limit is no limit."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True)
    description = models.CharField(max_length=300, blank=True)
    price_cents = models.PositiveIntegerField(default=0, help_text="Per month, in the currency's smallest unit.")
    currency = models.CharField(max_length=3, default="usd")
    stripe_price_id = models.CharField(
        max_length=100, blank=True, help_text="The Stripe Price (price_...) Checkout sells this plan with."
    )
    is_public = models.BooleanField(default=True, help_text="Offered on the billing page.")
    is_default = models.BooleanField(default=False, help_text="The plan of every user without a subscription.")
    sort_order = models.PositiveSmallIntegerField(default=0)

    messages_per_window = models.PositiveIntegerField(
        null=True, blank=True, help_text=f"Chat messages per rolling window. {NO_LIMIT}"
    )
    message_window_seconds = models.PositiveIntegerField(
        default=3 * 60 * 60, validators=[MinValueValidator(1)], help_text="The rolling window, in seconds."
    )
    tokens_per_month = models.PositiveBigIntegerField(
        null=True, blank=True, help_text=f"Prompt and completion tokens per calendar month (UTC). {NO_LIMIT}"
    )
    api_requests_per_minute = models.PositiveIntegerField(null=True, blank=True, help_text=NO_LIMIT)
    api_tokens_per_minute = models.PositiveIntegerField(null=True, blank=True, help_text=NO_LIMIT)
    concurrent_generations = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text=f"Replies and completions being written at once. {NO_LIMIT}"
    )
    models_allowed = models.JSONField(
        default=list, blank=True, help_text='Model names, e.g. ["smollm2-135m"]. Empty for every model.'
    )
    max_context_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text=f"The longest prompt plus reply, in tokens. {NO_LIMIT}"
    )

    class Meta:
        app_label = "accounts"
        ordering = ["sort_order", "price_cents", "pk"]
        # One plan is the default: the admin hands the mark over (PlanAdmin.save_model) rather than refusing a
        # second one, and refuses to take it away without a successor.

    def __str__(self) -> str:
        return self.name

    @property
    def is_free(self) -> bool:
        return self.price_cents == 0

    @property
    def price_display(self) -> str:
        """``USD 20.00`` (``USD 20,00`` in German), or ``Free``, in the active language."""
        if not self.price_cents:
            return gettext("Free")
        return f"{self.currency.upper()} {number_format(self.price_cents / 100, decimal_pos=2)}"

    @property
    def window_words(self) -> str:
        from accounts.billing.quotas import duration_words

        return duration_words(self.message_window_seconds)


class Subscription(models.Model):
    """A user's plan. Written by Stripe's webhooks, or by staff (a comped plan) in the admin."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        TRIALING = "trialing", "Trialing"
        PAST_DUE = "past_due", "Past due"
        CANCELED = "canceled", "Canceled"

    # While Stripe retries a failed payment (past due) the plan stays; a canceled subscription falls to Free.
    GRANTS_PLAN = (Status.ACTIVE, Status.TRIALING, Status.PAST_DUE)

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscription")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    comped = models.BooleanField(
        default=False,
        help_text="Given by staff, not paid through Stripe: Stripe's events leave it alone (cancel any Stripe "
        "subscription of the user in Stripe).",
    )
    stripe_customer_id = models.CharField(max_length=100, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=100, blank=True, db_index=True)
    # The `created` time of the newest Stripe subscription event, and of the newest invoice event, applied: an
    # older event arriving late is not applied.
    stripe_event_created = models.BigIntegerField(default=0, editable=False)
    stripe_invoice_event_created = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "accounts"
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"{self.user} on {self.plan} ({self.status})"

    @property
    def grants_plan(self) -> bool:
        return self.status in self.GRANTS_PLAN


class StripeEvent(models.Model):
    """Every Stripe webhook event received, by its id: a replay is acknowledged and not applied again."""

    class Outcome(models.TextChoices):
        APPLIED = "applied", "Applied"
        STALE = "stale", "Older than the state it would change: not applied"
        IGNORED = "ignored", "Not about a Djinn subscription"

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    created = models.BigIntegerField(help_text="Stripe's time of the event (Unix seconds).")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    detail = models.CharField(max_length=300, blank=True)
    payload = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        app_label = "accounts"
        ordering = ["-received_at", "-pk"]
        verbose_name = "Stripe event"

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class UsageDay(models.Model):
    """A day of the usage ledger rolled up (accounts.billing.rollups, kept by a beat task) by plan, model and
    source, for the analytics page: read instead of scanning the ledger on each view."""

    day = models.DateField()
    plan = models.CharField(max_length=50, help_text="The slug of the users' plan when the day was rolled up.")
    model = models.CharField(max_length=100)
    source = models.CharField(max_length=8)
    users = models.PositiveIntegerField(default=0)
    generations = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        app_label = "accounts"
        ordering = ["-day", "plan", "model", "source"]
        constraints = [models.UniqueConstraint(fields=["day", "plan", "model", "source"], name="usage_day_unique")]

    def __str__(self) -> str:
        return f"{self.day} {self.plan} {self.model} {self.source}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ActiveDay(models.Model):
    """How many distinct users used Djinn (a reply or a completion) on a day; rolled up with UsageDay."""

    day = models.DateField(unique=True)
    users = models.PositiveIntegerField(default=0)

    class Meta:
        app_label = "accounts"
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.day}: {self.users} users"
