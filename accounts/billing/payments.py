"""Stripe, through its official SDK: Checkout to subscribe, the customer portal to change or cancel, and the
webhook that keeps subscriptions up to date (accounts.billing.webhooks applies its events).

Configured by STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET (and each plan's Stripe price id); without the
secret key nothing here is offered (:func:`configured`), and plans are assigned in the admin.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlparse

import stripe
from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.billing.models import Plan, Subscription
from accounts.models import User

logger = logging.getLogger(__name__)

USER_ID_KEY = "djinn_user_id"  # in the metadata of checkout sessions and subscriptions
NETWORK_RETRIES = 2
STRIPE_PAGES = ("https://checkout.stripe.com", "https://billing.stripe.com")
UNREACHABLE = gettext_lazy("Stripe could not be reached or refused the request. Please try again in a moment.")


class PaymentsError(Exception):
    """Something a user is told: Stripe is not configured, the plan is not for sale, Stripe cannot be reached."""


class InvalidWebhook(Exception):
    """A webhook whose signature is missing, wrong, or too old."""


def configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def page_origins() -> list[str]:
    """Where Stripe sends the browser (Checkout, the portal): Stripe's own, or the STRIPE_API_BASE stand-in's."""
    if settings.STRIPE_API_BASE:
        parsed = urlparse(settings.STRIPE_API_BASE)
        return [f"{parsed.scheme}://{parsed.netloc}"]
    return list(STRIPE_PAGES)


def checkout_start(*, user: User, plan: Plan, success_url: str, cancel_url: str) -> str:
    """A Stripe Checkout session subscribing ``user`` to ``plan``; the URL to send the browser to."""
    if not configured():
        raise PaymentsError(_("Payments are not set up on this server."))
    current = Subscription.objects.filter(user=user).first()
    if current is not None and current.grants_plan and current.comped:
        raise PaymentsError(_("Your plan was given by your administrator: ask them to change it."))
    if paying(current):
        raise PaymentsError(_("You already have a subscription: change it with Manage subscription."))
    if not plan.is_public or not plan.stripe_price_id:
        raise PaymentsError(_("The %(plan)s plan cannot be bought here. Ask your administrator.") % {"plan": plan.name})
    customer = _customer_id(user)
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": plan.stripe_price_id, "quantity": 1}],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "client_reference_id": str(user.pk),
        "metadata": {USER_ID_KEY: str(user.pk)},
        "subscription_data": {"metadata": {USER_ID_KEY: str(user.pk)}},
    }
    if customer:
        params["customer"] = customer
    else:
        params["customer_email"] = user.email
    session = _call("checkout.sessions.create", lambda client: client.v1.checkout.sessions.create(params))
    return str(session.url)


def portal_start(*, user: User, return_url: str) -> str:
    """A customer-portal session (change plan, cancel, payment method, invoices); the URL to send the browser
    to. PaymentsError when the user has never paid through Stripe."""
    if not configured():
        raise PaymentsError(_("Payments are not set up on this server."))
    customer = _customer_id(user)
    if not customer:
        raise PaymentsError(_("You have no paid subscription to manage yet."))
    params = {"customer": customer, "return_url": return_url}
    session = _call("billing_portal.sessions.create", lambda client: client.v1.billing_portal.sessions.create(params))
    return str(session.url)


def subscription_cancel_for_deleted(*, user: User) -> None:
    """Cancel at once the Stripe subscription ``user`` pays for (their account is being deleted). Stripe out of
    reach does not stop the deletion: it is logged, for staff to cancel it in Stripe's dashboard."""
    subscription = Subscription.objects.filter(user=user).first()
    if not paying(subscription) or not configured():
        return
    assert subscription is not None
    try:
        _client().v1.subscriptions.cancel(subscription.stripe_subscription_id)
    except stripe.StripeError:
        logger.error(
            "Could not cancel Stripe subscription %s of deleted user %s: cancel it in Stripe's dashboard",
            subscription.stripe_subscription_id,
            user.pk,
        )


def webhook_event(*, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event ``payload`` holds, once its ``Stripe-Signature`` is checked against STRIPE_WEBHOOK_SECRET
    (over the raw body, within Stripe's default tolerance of 5 minutes). Raises InvalidWebhook."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise InvalidWebhook("Stripe webhooks are not configured on this server (STRIPE_WEBHOOK_SECRET).")
    try:
        stripe.Webhook.construct_event(payload, signature, settings.STRIPE_WEBHOOK_SECRET)
        # The event as Stripe sent it: the SDK's objects hold Decimals (prices), which JSON cannot store.
        return json.loads(payload)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(f"Invalid signature: {exc.user_message or exc}") from None
    except ValueError:
        raise InvalidWebhook("The payload is not JSON.") from None


def paying(subscription: Subscription | None) -> bool:
    """Whether ``subscription`` is a live Stripe subscription (managed in Stripe's portal, not bought again)."""
    return bool(
        subscription is not None
        and subscription.grants_plan
        and not subscription.comped
        and subscription.stripe_subscription_id
    )


def _customer_id(user: User) -> str:
    return (
        Subscription.objects.filter(user=user)
        .exclude(stripe_customer_id="")
        .values_list("stripe_customer_id", flat=True)
    ).first() or ""


def _client() -> stripe.StripeClient:
    base = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
    return stripe.StripeClient(settings.STRIPE_SECRET_KEY, base_addresses=base, max_network_retries=NETWORK_RETRIES)  # type: ignore[arg-type]


def _call(what: str, call: Any) -> Any:
    try:
        return call(_client())
    except stripe.StripeError as exc:
        logger.error("Stripe %s failed: %s", what, exc, extra={"stripe_request_id": getattr(exc, "request_id", None)})
        raise PaymentsError(str(UNREACHABLE)) from exc
