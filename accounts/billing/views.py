"""The billing page, in Settings: the plan, use of each limit, daily tokens, and the plans on offer; Stripe
Checkout and the customer portal behind its buttons; Stripe's webhook."""

from __future__ import annotations

from csp.decorators import csp_update
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.billing import payments, webhooks
from accounts.billing.charts import Series, stacked_bars
from accounts.billing.models import Plan
from accounts.billing.selectors import billing_overview


@login_required
@require_GET
def settings_billing(request: HttpRequest) -> HttpResponse:
    # The page's forms answer with a redirect to Stripe's pages, which CSP's form-action must allow.
    return csp_update({"form-action": payments.page_origins()})(_billing_page)(request)


def _billing_page(request: HttpRequest) -> HttpResponse:
    overview = billing_overview(user=request.user)
    if request.GET.get("checkout") == "done":
        messages.success(request, _("Thank you! Your plan changes as soon as Stripe confirms the payment."))
    context = {
        "section": "billing",
        "payments": payments.configured(),
        "paid": payments.paying(overview.subscription),
        "overview": overview,
        "chart": stacked_bars(
            [day.day for day in overview.days],
            [
                Series(_("Chat"), [day.chat for day in overview.days]),
                Series(_("API"), [day.api for day in overview.days]),
            ],
        ),
    }
    return render(request, "accounts/settings/billing.html", context)


@login_required
@require_POST
def billing_checkout(request: HttpRequest) -> HttpResponse:
    """Send the browser to Stripe Checkout for the plan posted (its slug)."""
    plan = Plan.objects.filter(slug=request.POST.get("plan", ""), is_public=True).first()
    page = request.build_absolute_uri(reverse("accounts:settings_billing"))
    if plan is None:
        messages.error(request, _("That plan is not on offer."))
        return redirect("accounts:settings_billing")
    try:
        url = payments.checkout_start(
            user=request.user, plan=plan, success_url=f"{page}?checkout=done", cancel_url=page
        )
    except payments.PaymentsError as exc:
        messages.error(request, str(exc))
        return redirect("accounts:settings_billing")
    return HttpResponseRedirect(url, status=303)


@login_required
@require_POST
def billing_portal(request: HttpRequest) -> HttpResponse:
    """Send the browser to Stripe's customer portal: change or cancel the plan, cards, invoices."""
    page = request.build_absolute_uri(reverse("accounts:settings_billing"))
    try:
        url = payments.portal_start(user=request.user, return_url=page)
    except payments.PaymentsError as exc:
        messages.error(request, str(exc))
        return redirect("accounts:settings_billing")
    return HttpResponseRedirect(url, status=303)


@csrf_exempt  # Stripe signs its requests instead (checked over the raw body)
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    try:
        event = payments.webhook_event(payload=request.body, signature=request.headers.get("Stripe-Signature"))
    except payments.InvalidWebhook as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"received": True, "outcome": webhooks.event_apply(event)})
