"""Plans for tests: the seeded ones (as the migration writes them) and a default without limits."""

from __future__ import annotations

import importlib

from accounts.billing import quotas
from accounts.models import Plan

SEED = importlib.import_module("accounts.migrations.0005_seed_plans")


def plans_seed() -> None:
    """The migration's plans, made again where a flush removed them."""
    if Plan.objects.filter(slug__in=[plan["slug"] for plan in SEED.PLANS]).count() == len(SEED.PLANS):
        return
    for fields in SEED.PLANS:
        Plan.objects.get_or_create(slug=fields["slug"], defaults={k: v for k, v in fields.items() if k != "slug"})


def unlimited_default() -> Plan:
    """Make a plan without limits the default plan (every user without a subscription is on it)."""
    Plan.objects.filter(is_default=True).update(is_default=False)
    plan, _created = Plan.objects.update_or_create(
        slug="test-unlimited", defaults={"name": "Test (no limits)", "is_public": False, "is_default": True}
    )
    quotas.limits_forget()
    return plan
