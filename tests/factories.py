"""factory_boy factories shared by the whole suite."""

from __future__ import annotations

import uuid
from datetime import timedelta

import factory
from django.utils import timezone

from accounts.models import UsageRecord, User
from accounts.usage import usage_record

DEFAULT_PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    display_name = factory.Faker("name")
    email_verified_at = factory.LazyFunction(timezone.now)
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def _save(obj: User, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            obj.save()


def usage_made(
    user: User,
    *,
    days_ago: int = 0,
    prompt: int = 10,
    completion: int = 5,
    cached: int = 0,
    source: str = "chat",
    model: str = "smollm2-135m-instruct",
    api_key_id: int | None = None,
) -> UsageRecord:
    """A usage record of ``user``, as a worker writes one, made ``days_ago`` days ago."""
    entry = usage_record(
        user_id=user.pk,
        generation_id=uuid.uuid4(),
        model=model,
        source=source,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        api_key_id=api_key_id,
    )
    if days_ago:
        entry.created_at = timezone.now() - timedelta(days=days_ago)
        UsageRecord.objects.filter(pk=entry.pk).update(created_at=entry.created_at)
    return entry
