"""Stripe's webhook events applied to subscriptions: once each, in any order.

Every event is stored by its id before it is applied, in the same transaction, so a replay is acknowledged
and changes nothing. Events about one subscription may arrive in any order: each subscription keeps the
``created`` time of the newest subscription event and of the newest invoice event applied to it.
Subscription events carry the whole subscription (plan, period, status), so the newest one is the truth for
all of it but the status, which a newer invoice event may have moved since (paid: active, failed: past
due). An invoice event older than the newest event of either kind changes nothing. Those not applied are
stored as stale. A subscription comped by staff is left to staff: Stripe's events do not change it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction

from accounts.billing import quotas
from accounts.billing.models import Plan, StripeEvent, Subscription
from accounts.billing.payments import USER_ID_KEY
from accounts.models import User

logger = logging.getLogger(__name__)

SUBSCRIPTION_EVENTS = {
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
}
INVOICE_EVENTS = {"invoice.paid": Subscription.Status.ACTIVE, "invoice.payment_failed": Subscription.Status.PAST_DUE}
# Stripe's statuses beyond the four a Djinn subscription has: none of them grants the plan.
STATUS = {
    "active": Subscription.Status.ACTIVE,
    "trialing": Subscription.Status.TRIALING,
    "past_due": Subscription.Status.PAST_DUE,
}


def event_apply(event: dict[str, Any]) -> str:
    """Apply ``event`` (verified) unless it was received before; returns what happened to it: ``applied``,
    ``stale``, ``ignored`` or ``replayed``."""
    try:
        with transaction.atomic():
            stored = StripeEvent.objects.create(
                event_id=event["id"],
                type=event["type"],
                created=int(event["created"]),
                outcome=StripeEvent.Outcome.IGNORED,
                payload=event,
            )
            outcome, detail, user_id = _apply(event)
            stored.outcome, stored.detail = outcome, detail[:300]
            stored.save(update_fields=["outcome", "detail"])
    except IntegrityError:
        if StripeEvent.objects.filter(event_id=event["id"]).exists():
            return "replayed"
        raise
    if user_id is not None:
        quotas.limits_forget(user_id=user_id)
    logger.info("Stripe event %s %s: %s", event["type"], event["id"], outcome, extra={"detail": detail})
    return outcome


def _apply(event: dict[str, Any]) -> tuple[str, str, int | None]:
    obj = event["data"]["object"]
    if event["type"] in SUBSCRIPTION_EVENTS:
        return _subscription_event(event, obj)
    if event["type"] in INVOICE_EVENTS:
        return _invoice_event(event, obj)
    return StripeEvent.Outcome.IGNORED, "not an event Djinn acts on", None


def _subscription_event(event: dict[str, Any], obj: dict[str, Any]) -> tuple[str, str, int | None]:
    created = int(event["created"])
    subscription = _locked(stripe_subscription_id=obj["id"]) or _for_new(obj)
    if subscription is None:
        return StripeEvent.Outcome.IGNORED, f"no Djinn user for subscription {obj['id']}", None
    if subscription.comped:
        return StripeEvent.Outcome.IGNORED, "comped by staff: change it in the admin", subscription.user_id
    if created < subscription.stripe_event_created:
        return StripeEvent.Outcome.STALE, "a newer subscription event was applied", subscription.user_id
    item = _first_item(obj)
    price = (item.get("price") or {}).get("id", "")
    plan = Plan.objects.filter(stripe_price_id=price).first() if price else None
    if plan is None:
        logger.error("Stripe subscription %s has the price %r, which no plan has", obj["id"], price)
        return StripeEvent.Outcome.IGNORED, f"no plan has the Stripe price {price!r}", None
    subscription.plan = plan
    status = obj.get("status")
    if event["type"] == "customer.subscription.deleted":
        subscription.status = Subscription.Status.CANCELED
    elif status == "incomplete" and subscription.pk is not None:
        pass  # a first payment still being made: the status it had stands
    elif created >= subscription.stripe_invoice_event_created:
        subscription.status = STATUS.get(status, Subscription.Status.CANCELED)
    subscription.cancel_at_period_end = bool(obj.get("cancel_at_period_end"))
    subscription.current_period_start = _time(item.get("current_period_start") or obj.get("current_period_start"))
    subscription.current_period_end = _time(item.get("current_period_end") or obj.get("current_period_end"))
    subscription.stripe_customer_id = str(obj.get("customer") or subscription.stripe_customer_id)
    subscription.stripe_subscription_id = obj["id"]
    subscription.stripe_event_created = created
    subscription.save()
    return (
        StripeEvent.Outcome.APPLIED,
        f"{subscription.user_id}: {subscription.plan} {subscription.status}",
        (subscription.user_id),
    )


def _invoice_event(event: dict[str, Any], obj: dict[str, Any]) -> tuple[str, str, int | None]:
    subscription_id = obj.get("subscription") or (
        ((obj.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    )
    subscription = _locked(stripe_subscription_id=subscription_id) if subscription_id else None
    if subscription is None:
        return StripeEvent.Outcome.IGNORED, f"no Djinn subscription {subscription_id!r}", None
    if subscription.comped:
        return StripeEvent.Outcome.IGNORED, "comped by staff: change it in the admin", subscription.user_id
    created = int(event["created"])
    if created < max(subscription.stripe_event_created, subscription.stripe_invoice_event_created):
        return StripeEvent.Outcome.STALE, "an event newer than this one was applied", subscription.user_id
    if subscription.status == Subscription.Status.CANCELED:
        return StripeEvent.Outcome.STALE, "the subscription has ended", subscription.user_id
    subscription.status = INVOICE_EVENTS[event["type"]]
    subscription.stripe_invoice_event_created = created
    subscription.save(update_fields=["status", "stripe_invoice_event_created", "updated_at"])
    return StripeEvent.Outcome.APPLIED, f"{subscription.user_id}: {subscription.status}", subscription.user_id


def _locked(**lookup: Any) -> Subscription | None:
    return Subscription.objects.select_for_update().select_related("plan").filter(**lookup).first()


def _for_new(obj: dict[str, Any]) -> Subscription | None:
    """The user's subscription row (locked; a new unsaved one if they have none) for a Stripe subscription
    Djinn has not seen: found by the user id Checkout put in its metadata, else by its customer."""
    user_id = str((obj.get("metadata") or {}).get(USER_ID_KEY) or "")
    user = User.objects.filter(pk=int(user_id)).first() if user_id.isdigit() else None
    if user is None and obj.get("customer"):
        existing = _locked(stripe_customer_id=obj["customer"])
        if existing is not None:
            return existing
    if user is None:
        return None
    return _locked(user=user) or Subscription(user=user)


def _first_item(obj: dict[str, Any]) -> dict[str, Any]:
    items = (obj.get("items") or {}).get("data") or []
    return items[0] if items else {}


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None
