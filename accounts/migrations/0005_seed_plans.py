"""Free, Plus and Pro, editable in the admin afterwards. Tests and the README rely on Free's limits."""

from django.db import migrations

PLANS = [
    {
        "slug": "free",
        "name": "Free",
        "description": "For trying Djinn out.",
        "price_cents": 0,
        "is_default": True,
        "sort_order": 0,
        "messages_per_window": 40,
        "message_window_seconds": 3 * 60 * 60,
        "tokens_per_month": 200_000,
        "api_requests_per_minute": 20,
        "api_tokens_per_minute": 40_000,
        "concurrent_generations": 2,
    },
    {
        "slug": "plus",
        "name": "Plus",
        "description": "More messages and a larger monthly budget.",
        "price_cents": 2000,
        "sort_order": 1,
        "messages_per_window": 160,
        "message_window_seconds": 3 * 60 * 60,
        "tokens_per_month": 5_000_000,
        "api_requests_per_minute": 60,
        "api_tokens_per_minute": 200_000,
        "concurrent_generations": 4,
    },
    {
        "slug": "pro",
        "name": "Pro",
        "description": "For heavy use and applications on the API.",
        "price_cents": 20000,
        "sort_order": 2,
        "messages_per_window": None,
        "message_window_seconds": 3 * 60 * 60,
        "tokens_per_month": 50_000_000,
        "api_requests_per_minute": 500,
        "api_tokens_per_minute": 2_000_000,
        "concurrent_generations": 16,
    },
]


def seed(apps, schema_editor):
    Plan = apps.get_model("accounts", "Plan")
    for fields in PLANS:
        slug = fields["slug"]
        Plan.objects.get_or_create(slug=slug, defaults={k: v for k, v in fields.items() if k != "slug"})


def unseed(apps, schema_editor):
    apps.get_model("accounts", "Plan").objects.filter(slug__in=[p["slug"] for p in PLANS], subscriptions=None).delete()


class Migration(migrations.Migration):
    dependencies = [("accounts", "0004_plans_subscriptions")]

    operations = [migrations.RunPython(seed, unseed)]
