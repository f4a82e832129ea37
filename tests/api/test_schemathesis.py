"""Property-based tests of /api/v1 against its own OpenAPI schema (/api/schema/), with schemathesis.

For every operation, schemathesis generates requests (valid and invalid) and sends each one three ways,
all with user A's key: as generated (ids that exist nowhere), with the ids replaced by A's own objects (so
the successful paths are exercised too), and with the ids replaced by user B's objects. Every response
must be documented and match the schema, nothing may answer 5xx, a valid request may be refused only for
a reason the schema cannot express (an unknown model, a conversation too long, a reply still being
written: an error code other than "invalid"), and B's ids must answer 404 without changing anything of B.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts import services as account_services
from accounts.models import ApiKey, User
from conversations.models import Conversation, Message
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory

# More examples find more, slower: DJINN_SCHEMATHESIS_EXAMPLES=200 make test for a deeper search.
MAX_EXAMPLES = int(os.environ.get("DJINN_SCHEMATHESIS_EXAMPLES", "12"))
ID_PARAMETERS = {"conversation_id", "message_id", "generation_id"}
# For a request whose ids were swapped for real ones, the generated case's valid/invalid label no longer
# holds: only what any response must do is checked.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

pytestmark = pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")


@pytest.fixture
def same_connection() -> Iterator[None]:
    """Keep the test's database connection (and its transaction) across the requests, as Django's test
    client does: a WSGI request would otherwise close it when it ends."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(db, same_connection, llm_model) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", WSGIHandler())
    schema.config.generation.update(max_examples=MAX_EXAMPLES)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema").include(path_regex=r"^/api/v1/")


def objects_of(user: User, model: str) -> dict[str, Any]:
    """A fresh key and conversation of ``user``: a finished exchange, then a question awaiting its reply
    in a branch beside it."""
    _api_key, key = account_services.api_key_create(user=user, name="schemathesis")
    conversation = ConversationFactory(owner=user, model=model, title="Plans")
    question, reply = add_exchange(conversation, question="What is Djinn?", answer="A chat service.")
    return {"key": key, "conversation": conversation, "question": question, "reply": reply}


def with_ids(path_parameters: dict[str, Any], objects: dict[str, Any], operation: str) -> dict[str, Any]:
    """``path_parameters`` with each id replaced by the object of ``objects`` that the operation acts on."""
    message = objects["question"] if operation.endswith(("/edit", "/switch-branch")) else objects["reply"]
    ids = {
        "conversation_id": objects["conversation"].pk,
        "message_id": message.pk,
        "generation_id": objects["reply"].pk,
    }
    return {name: str(ids[name]) if name in ids else value for name, value in path_parameters.items()}


def snapshot(user: User) -> list[Any]:
    return [
        list(Conversation.objects.filter(owner=user).order_by("pk").values_list()),
        list(Message.objects.filter(conversation__owner=user).order_by("pk").values_list()),
        list(ApiKey.objects.filter(user=user).order_by("pk").values_list("pk", "revoked_at")),
    ]


def refused_only_for_what_the_schema_cannot_say(ctx: Any, response: Any, case: Any) -> bool | None:
    """positive_data_acceptance, except that a 400 for a rule beyond the schema's reach is fine."""
    if response.status_code == 400 and response.json().get("code") not in {"invalid", "parse_error"}:
        return None
    return positive_data_acceptance(ctx, response, case)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_the_api_keeps_to_its_schema_and_to_each_users_objects(case: Any, llm_model: Any) -> None:
    alice, bob = UserFactory(), UserFactory()
    own, others = objects_of(alice, llm_model.name), objects_of(bob, llm_model.name)
    headers = {"Authorization": f"Bearer {own['key']}"}
    checks = {
        "excluded_checks": [positive_data_acceptance],
        "additional_checks": [refused_only_for_what_the_schema_cannot_say],
    }
    generated_ids = dict(case.path_parameters or {})
    # Cases that probe other methods (405) say nothing about whose objects are reachable.
    has_ids = bool(ID_PARAMETERS & set(generated_ids)) and case.method.upper() == case.operation.method.upper()

    case.call_and_validate(headers=headers, **checks)

    if has_ids:
        bob_before = snapshot(bob)
        case.path_parameters = with_ids(generated_ids, others, case.operation.path)
        response = case.call_and_validate(headers=headers, checks=CONFORMANCE)
        assert response.status_code in {400, 404, 415}, response.text
        assert snapshot(bob) == bob_before

        case.path_parameters = with_ids(generated_ids, own, case.operation.path)
        case.call_and_validate(headers=headers, checks=CONFORMANCE)
