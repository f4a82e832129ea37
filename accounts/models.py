"""Users log in with their e-mail address; there is no username."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts import api_keys


def normalize_email(email: str) -> str:
    """E-mail addresses are compared case-insensitively, so they are stored lower-cased."""
    return email.strip().lower()


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **fields: Any) -> User:
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=normalize_email(email), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **fields: Any) -> User:
        fields.setdefault("is_staff", False)
        fields.setdefault("is_superuser", False)
        return self._create(email, password, **fields)

    def create_superuser(self, email: str, password: str | None = None, **fields: Any) -> User:
        fields["is_staff"] = True
        fields["is_superuser"] = True
        fields.setdefault("email_verified_at", timezone.now())
        return self._create(email, password, **fields)

    def get_by_natural_key(self, username: str | None) -> User:
        return self.get(email=normalize_email(username or ""))


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField("e-mail address", max_length=254, unique=True)  # stored lower-cased
    display_name = models.CharField(max_length=150, blank=True)
    email_verified_at = models.DateTimeField(null=True, blank=True)
    custom_instructions = models.TextField(
        blank=True, help_text="Passed to the model with every conversation of this user."
    )
    # Blank: the browser's language (Accept-Language). Activated on every request by accounts.middleware.
    language = models.CharField(_("language"), max_length=10, blank=True, choices=settings.LANGUAGES)
    is_staff = models.BooleanField(default=False, help_text="Can log in to the admin site.")
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["-date_joined"]

    def __str__(self) -> str:
        return self.email

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    def get_full_name(self) -> str:
        return self.display_name or self.email

    def get_short_name(self) -> str:
        return self.display_name or self.email.split("@")[0]


class ApiKey(models.Model):
    """A key for the API. Only its public prefix and the SHA-256 of the whole key are stored (accounts.api_keys)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=api_keys.NAME_MAX_LENGTH, blank=True)
    prefix = models.CharField(
        max_length=api_keys.PREFIX_LENGTH, unique=True, editable=False, help_text='Public id: "djn_" + 8 characters.'
    )
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Written at most once a minute per key (accounts.services.api_key_mark_used), so it may lag by that much.
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "API key"
        indexes = [models.Index(fields=["user", "-created_at"], name="apikey_user_created")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})" if self.name else f"{self.prefix}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class UsageRecord(models.Model):
    """The tokens one generation used: one row per generation (chat reply or API completion), written by the
    worker when it ends, and never changed. Named by the generation's UUID, not a foreign key, so accounts
    depends on nothing in conversations (accounts.usage)."""

    class Source(models.TextChoices):
        CHAT = "chat", "Chat"
        API = "api", "API"

    # Billing history outlives the account: deleting a user detaches its records (user becomes empty).
    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records")
    generation_id = models.UUIDField(unique=True, editable=False)
    model = models.CharField(max_length=100)
    source = models.CharField(max_length=8, choices=Source.choices)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0, help_text="Prompt tokens served from the prefix cache.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="usage_user_created"),
            models.Index(fields=["created_at"], name="usage_created"),  # roll-ups and exports read by day
        ]

    def __str__(self) -> str:
        return f"{self.generation_id} ({self.prompt_tokens}+{self.completion_tokens} tokens)"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Billing's models belong to this app; importing them here registers them.
from accounts.billing.models import ActiveDay, Plan, StripeEvent, Subscription, UsageDay  # noqa: E402

__all__ = [
    "ActiveDay",
    "ApiKey",
    "Plan",
    "StripeEvent",
    "Subscription",
    "UsageDay",
    "UsageRecord",
    "User",
    "normalize_email",
]
