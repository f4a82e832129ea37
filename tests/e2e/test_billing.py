"""Plans in the browser: a limit reached in the chat says when to send again and links to the plans; the
billing page shows the plan, each limit's use, the daily tokens chart, and says plainly that payments are not
set up (screenshots, light and dark)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from accounts.billing.services import subscription_comp
from accounts.models import Plan
from tests.e2e.conftest import screenshot
from tests.e2e.test_chat import wait_until_replied
from tests.factories import UserFactory, usage_made
from tests.stripe_standin import StripeStandin

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("celery_worker", "llm_model")]


@pytest.fixture(autouse=True)
def _short_replies(llm_model) -> None:
    llm_model.default_params = {"temperature": 0, "max_tokens": 8}
    llm_model.save()


def test_the_message_limit_in_the_chat_says_when_to_send_again_and_links_to_the_plans(page: Page, sign_in):
    user = UserFactory(email="ada@example.com")
    plan = Plan.objects.create(slug="one", name="One a window", messages_per_window=1, message_window_seconds=3600)
    subscription_comp(user=user, plan=plan)
    sign_in(user)
    page.goto("/")
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "open")
    composer = page.get_by_label("Message Djinn")
    composer.fill("Hello there")
    composer.press("Enter")
    wait_until_replied(page)

    composer.fill("And again")
    composer.press("Enter")

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("You have sent the One a window plan's 1 message for 60 minutes")
    expect(alert).to_contain_text("You can send again in")
    expect(composer).to_have_value("And again")  # nothing the user wrote is lost
    screenshot(page, "billing-limit-in-chat")
    alert.get_by_role("link", name="See plans and usage").click()
    expect(page.get_by_role("heading", name="Plan and usage")).to_be_visible()
    expect(page.get_by_text("Messages in 60 minutes")).to_be_visible()
    expect(page.locator(".meter-full")).to_have_count(1)


@pytest.mark.plan_limits
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_billing_page_shows_the_plan_its_limits_and_daily_tokens(page: Page, sign_in, scheme):
    user = UserFactory()
    for days_ago, source, tokens in [(0, "chat", 1200), (0, "api", 300), (3, "chat", 800), (10, "api", 2000)]:
        usage_made(user, days_ago=days_ago, source=source, prompt=tokens, completion=0)
    page.emulate_media(color_scheme=scheme)
    sign_in(user)

    page.goto(reverse("accounts:settings_billing"))

    expect(page.locator(".plan-card .plan-name")).to_have_text("Free")
    expect(page.get_by_text("Tokens this month")).to_be_visible()
    expect(page.locator(".meter-figures").nth(1)).to_contain_text("of 200,000")
    expect(page.locator(".bar-chart rect.series-0")).to_have_count(2)  # chat on two days
    expect(page.locator(".bar-chart rect.series-1")).to_have_count(2)  # API on two days
    expect(page.get_by_text("Chat: 2,000")).to_be_visible()
    expect(page.get_by_text("API: 2,300")).to_be_visible()
    expect(page.get_by_text("Payments are not set up on this server")).to_be_visible()
    expect(page.locator(".plans .plan")).to_have_count(3)
    expect(page.locator(".plan-current .plan-name")).to_contain_text("Free")
    screenshot(page, f"billing-page-{scheme}")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, f"billing-page-{scheme}-phone")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.plan_limits
def test_an_upgrade_through_stripe_checkout_and_a_cancel_through_the_portal(page: Page, sign_in, asgi_server, settings):
    plus = Plan.objects.get(slug="plus")
    plus.stripe_price_id = "price_plus"
    plus.save()
    user = UserFactory()
    sign_in(user)
    with StripeStandin(f"{asgi_server.url}/billing/stripe/webhook", "whsec_e2e") as stripe:
        settings.STRIPE_SECRET_KEY = "sk_test_e2e"
        settings.STRIPE_WEBHOOK_SECRET = "whsec_e2e"
        settings.STRIPE_API_BASE = stripe.url
        page.goto(reverse("accounts:settings_billing"))
        expect(page.locator(".plan-card .plan-name")).to_have_text("Free")
        screenshot(page, "billing-page-with-stripe")

        page.get_by_role("button", name="Upgrade to Plus").click()
        expect(page.get_by_role("heading", name="Stripe stand-in: Checkout")).to_be_visible()
        page.get_by_role("button", name="Pay").click()

        expect(page.get_by_text("Thank you! Your plan changes as soon as Stripe confirms the payment.")).to_be_visible()
        expect(page.locator(".plan-card .plan-name")).to_have_text("Plus")
        expect(page.locator(".meter-figures").nth(1)).to_contain_text("of 5,000,000")
        screenshot(page, "billing-page-after-upgrade")
        page.get_by_role("button", name="Manage subscription").click()
        page.get_by_role("button", name="Cancel plan").click()

        expect(page.get_by_role("heading", name="Plan and usage")).to_be_visible()
        expect(page.locator(".plan-card .plan-name")).to_have_text("Free")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_admin_analytics_page_charts_the_days(page: Page, sign_in, scheme):
    from django.core.management import call_command
    from django.utils import timezone

    user = UserFactory()
    for days_ago, model, tokens in [(0, "smollm2", 900), (1, "smollm2", 400), (1, "llama", 700), (5, "smollm2", 200)]:
        usage_made(user, days_ago=days_ago, model=model, prompt=tokens, completion=100)
    call_command("rollup_days", "--since", (timezone.now() - timedelta(days=6)).date().isoformat())
    page.emulate_media(color_scheme=scheme)
    sign_in(UserFactory(is_staff=True, is_superuser=True))

    page.goto(reverse("admin:index"))
    page.get_by_role("link", name="Analytics").click()

    expect(page.get_by_role("heading", name="Tokens by model")).to_be_visible()
    expect(page.get_by_text("smollm2: 1,800")).to_be_visible()
    expect(page.get_by_text("llama: 800")).to_be_visible()
    expect(page.get_by_text("Chat replies: 4")).to_be_visible()
    expect(page.locator(".bar-chart")).to_have_count(6)
    screenshot(page, f"admin-analytics-{scheme}")
