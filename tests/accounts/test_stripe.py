"""Stripe: Checkout and the portal through the real SDK against a local stand-in, and webhooks signed for
real: valid, bad signature, stale timestamp, replayed, out of order."""

from __future__ import annotations

import json
import time

import pytest
from django.urls import reverse

from accounts.billing import quotas
from accounts.models import Plan, StripeEvent, Subscription
from tests.factories import UserFactory
from tests.stripe_standin import StripeStandin, event, invoice, signature, subscription

SECRET = "whsec_test_secret"
WEBHOOK = "/billing/stripe/webhook"

pytestmark = pytest.mark.django_db


@pytest.fixture
def stripe_settings(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_djinn"
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    return settings


@pytest.fixture
def plus() -> Plan:
    plan = Plan.objects.get(slug="plus")
    plan.stripe_price_id = "price_plus"
    plan.save()
    return plan


def deliver(client, body, *, secret=SECRET, timestamp=None, raw=None):
    payload = raw if raw is not None else json.dumps(body).encode()
    return client.post(
        WEBHOOK,
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature(payload, secret, timestamp),
    )


def test_checkout_goes_to_stripe_with_the_plans_price_and_the_user(client, stripe_settings, plus):
    user = UserFactory()
    client.force_login(user)
    with StripeStandin("http://127.0.0.1:9/unused", SECRET) as stripe:
        stripe_settings.STRIPE_API_BASE = stripe.url

        response = client.post(reverse("accounts:billing_checkout"), {"plan": "plus"})

    assert response.status_code == 303
    assert response["Location"].startswith(f"{stripe.url}/pay/cs_test_")
    ((method, path, fields, headers),) = stripe.requests
    assert (method, path) == ("POST", "/v1/checkout/sessions")
    assert headers["Authorization"] == "Bearer sk_test_djinn"
    assert fields["line_items[0][price]"] == "price_plus"
    assert fields["subscription_data[metadata][djinn_user_id]"] == str(user.pk)
    assert fields["customer_email"] == user.email
    assert fields["success_url"].endswith("/accounts/settings/billing/?checkout=done")


def test_without_stripe_the_page_says_so_and_checkout_only_explains(client, plus):
    client.force_login(UserFactory())

    page = client.get(reverse("accounts:settings_billing"))
    response = client.post(reverse("accounts:billing_checkout"), {"plan": "plus"}, follow=True)

    assert b"Payments are not set up on this server" in page.content
    assert b"Upgrade to" not in page.content
    assert b"Payments are not set up on this server." in response.content


def test_stripe_out_of_reach_is_a_clear_message_not_an_error_page(client, stripe_settings, plus):
    client.force_login(UserFactory())
    stripe_settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there

    response = client.post(reverse("accounts:billing_checkout"), {"plan": "plus"}, follow=True)

    assert response.status_code == 200
    assert b"Stripe could not be reached" in response.content


def test_a_paid_subscription_moves_the_user_to_its_plan_and_its_limits(client, stripe_settings, plus):
    user = UserFactory()
    sub = subscription("sub_1", customer="cus_1", price="price_plus", user_id=user.pk)

    created = deliver(client, event("customer.subscription.created", sub))
    paid = deliver(client, event("invoice.paid", invoice("sub_1", customer="cus_1")))

    assert (created.status_code, created.json()["outcome"]) == (200, "applied")
    assert paid.json()["outcome"] == "applied"
    row = Subscription.objects.get(user=user)
    assert (row.plan, row.status, row.stripe_customer_id, row.comped) == (plus, "active", "cus_1", False)
    assert row.current_period_end is not None
    assert quotas.limits_of(user_id=user.pk).plan == "Plus"


def test_a_bad_signature_and_a_stale_timestamp_are_400_and_change_nothing(client, stripe_settings, plus):
    user = UserFactory()
    body = event(
        "customer.subscription.created", subscription("sub_2", customer="c", price="price_plus", user_id=user.pk)
    )

    forged = deliver(client, body, secret="whsec_someone_else")
    stale = deliver(client, body, timestamp=int(time.time()) - 600)
    unsigned = client.post(WEBHOOK, data=json.dumps(body), content_type="application/json")

    assert [r.status_code for r in (forged, stale, unsigned)] == [400, 400, 400]
    assert "signature" in forged.json()["error"].lower()
    assert not Subscription.objects.exists() and not StripeEvent.objects.exists()


def test_a_replayed_event_is_acknowledged_and_not_applied_twice(client, stripe_settings, plus):
    user = UserFactory()
    sub = subscription("sub_3", customer="cus_3", price="price_plus", user_id=user.pk)
    deliver(client, event("customer.subscription.created", sub, created=100))
    failed = event("invoice.payment_failed", invoice("sub_3", customer="cus_3"), created=200)
    deliver(client, failed)
    Subscription.objects.filter(user=user).update(status="active")  # say staff set it right meanwhile

    again = deliver(client, failed)

    assert (again.status_code, again.json()["outcome"]) == (200, "replayed")
    assert Subscription.objects.get(user=user).status == "active"
    assert StripeEvent.objects.filter(event_id=failed["id"]).count() == 1


def test_events_out_of_order_leave_the_newest_state(client, stripe_settings, plus):
    user = UserFactory()
    pro = Plan.objects.get(slug="pro")
    pro.stripe_price_id = "price_pro"
    pro.save()
    created = subscription("sub_4", customer="cus_4", price="price_plus", user_id=user.pk)
    upgraded = subscription("sub_4", customer="cus_4", price="price_pro", user_id=user.pk)
    deleted = {**upgraded, "status": "canceled"}

    deliver(client, event("customer.subscription.updated", upgraded, created=200))
    deliver(client, event("customer.subscription.deleted", deleted, created=300))
    late_create = deliver(client, event("customer.subscription.created", created, created=100))
    late_paid = deliver(client, event("invoice.paid", invoice("sub_4", customer="cus_4"), created=250))

    assert late_create.json()["outcome"] == "stale"
    assert late_paid.json()["outcome"] == "stale"
    row = Subscription.objects.get(user=user)
    assert (row.plan, row.status) == (pro, "canceled")
    assert quotas.limits_of(user_id=user.pk).plan == "Test (no limits)"  # the default plan again


def test_an_event_for_no_djinn_user_is_stored_and_ignored(client, stripe_settings, plus):
    response = deliver(
        client, event("customer.subscription.created", subscription("sub_x", customer="cus_x", price="p"))
    )

    assert response.json()["outcome"] == "ignored"
    assert StripeEvent.objects.get().outcome == "ignored"


def test_the_portal_is_offered_to_a_paying_user_and_opens_at_stripe(client, stripe_settings, plus):
    user = UserFactory()
    deliver(
        client,
        event(
            "customer.subscription.created",
            subscription("sub_5", customer="cus_5", price="price_plus", user_id=user.pk),
        ),
    )
    client.force_login(user)
    with StripeStandin("http://127.0.0.1:9/unused", SECRET) as stripe:
        stripe_settings.STRIPE_API_BASE = stripe.url
        page = client.get(reverse("accounts:settings_billing"))

        response = client.post(reverse("accounts:billing_portal"))

    assert b"Manage subscription" in page.content
    assert response.status_code == 303 and response["Location"].startswith(f"{stripe.url}/portal/")
    assert stripe.requests[0][2]["customer"] == "cus_5"
    assert stripe.url in page["Content-Security-Policy"]  # the forms may send the browser to Stripe's pages


def test_an_invoice_paid_before_the_subscription_update_it_follows_keeps_the_plan_change(client, stripe_settings, plus):
    user = UserFactory()
    pro = Plan.objects.get(slug="pro")
    pro.stripe_price_id = "price_pro"
    pro.save()
    deliver(
        client,
        event(
            "customer.subscription.created",
            subscription("sub_6", customer="cus_6", price="price_plus", user_id=user.pk),
            created=100,
        ),
    )

    paid = deliver(client, event("invoice.paid", invoice("sub_6", customer="cus_6"), created=201))
    upgraded = deliver(
        client,
        event(
            "customer.subscription.updated",
            subscription("sub_6", customer="cus_6", price="price_pro", user_id=user.pk, status="past_due"),
            created=200,
        ),
    )

    assert (paid.json()["outcome"], upgraded.json()["outcome"]) == ("applied", "applied")
    row = Subscription.objects.get(user=user)
    assert (row.plan, row.status) == (pro, "active")  # the plan from the update, the status from the newer invoice


def test_a_plan_comped_by_staff_is_left_alone_by_stripe(client, stripe_settings, plus):
    from accounts.billing.services import subscription_comp

    user = UserFactory()
    pro = Plan.objects.get(slug="pro")
    subscription_comp(user=user, plan=pro)

    response = deliver(
        client,
        event(
            "customer.subscription.created",
            subscription("sub_7", customer="cus_7", price="price_plus", user_id=user.pk),
        ),
    )

    assert response.json()["outcome"] == "ignored"
    row = Subscription.objects.get(user=user)
    assert (row.plan, row.comped) == (pro, True)


def test_checkout_is_refused_to_someone_already_paying_and_offered_again_once_they_cancelled(
    client, stripe_settings, plus
):
    user = UserFactory()
    sub = subscription("sub_8", customer="cus_8", price="price_plus", user_id=user.pk)
    deliver(client, event("customer.subscription.created", sub, created=100))
    client.force_login(user)

    refused = client.post(reverse("accounts:billing_checkout"), {"plan": "pro"}, follow=True)
    deliver(client, event("customer.subscription.deleted", {**sub, "status": "canceled"}, created=200))
    page = client.get(reverse("accounts:settings_billing"))

    assert b"You already have a subscription" in refused.content
    assert b"Upgrade to Plus" in page.content and b"Manage subscription" not in page.content


def test_deleting_an_account_cancels_its_stripe_subscription(client, stripe_settings, plus):
    from accounts import services as account_services

    user = UserFactory()
    deliver(
        client,
        event(
            "customer.subscription.created",
            subscription("sub_9", customer="cus_9", price="price_plus", user_id=user.pk),
        ),
    )
    with StripeStandin("http://127.0.0.1:9/unused", SECRET) as stripe:
        stripe_settings.STRIPE_API_BASE = stripe.url

        account_services.user_delete(user=user)

    assert [(method, path) for method, path, _fields, _headers in stripe.requests] == [
        ("DELETE", "/v1/subscriptions/sub_9")
    ]
