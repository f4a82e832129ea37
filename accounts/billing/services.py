"""Writes to plans and subscriptions. Each forgets the cached limits it changes (quotas.limits_of)."""

from __future__ import annotations

from django.db import transaction

from accounts.billing import quotas
from accounts.billing.models import Plan, Subscription
from accounts.models import User


def subscription_comp(*, user: User, plan: Plan) -> Subscription:
    """Put ``user`` on ``plan`` at no charge (staff's gift, not billed through Stripe), from now on."""
    with transaction.atomic():
        subscription, _created = Subscription.objects.update_or_create(
            user=user,
            defaults={
                "plan": plan,
                "status": Subscription.Status.ACTIVE,
                "comped": True,
                "cancel_at_period_end": False,
            },
        )
    quotas.limits_forget(user_id=user.pk)
    return subscription


def plan_without_limits(*, slug: str, name: str) -> Plan:
    """A hidden plan with no limits at all (for staff accounts, load tests and benchmarks), made if missing."""
    plan, _created = Plan.objects.get_or_create(slug=slug, defaults={"name": name, "is_public": False})
    return plan
