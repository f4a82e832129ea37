"""A client that goes away mid-stream: its generation is aborted within a step or so, and the usage ledger
counts only the tokens made."""

from __future__ import annotations

import time

import pytest

from accounts.models import UsageRecord
from inference import streams
from tests.api.openai_support import HELLO, MODEL, generation_id, sdk
from tests.live import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker", "llm_model")]
MAX_TOKENS = 480  # nearly the tiny model's whole context: far more than are made before the abort lands


def last_event(generation):
    events = streams.read_events(generation, after=0)
    return events[-1] if events and events[-1]["type"] in streams.TERMINAL_TYPES else None


def test_a_client_that_disconnects_mid_stream_cancels_its_generation(live_server_url, api_key):
    stream = sdk(live_server_url, api_key).chat.completions.create(
        model=MODEL, messages=HELLO, temperature=0, max_tokens=MAX_TOKENS, stream=True
    )
    chunks = iter(stream)
    first = next(chunks)
    next(chunks)  # some text has been written

    stream.close()
    closed_at = time.monotonic()

    generation = generation_id(first.id)
    done = wait_for(lambda: last_event(generation), timeout=10)
    assert time.monotonic() - closed_at < 5
    assert (done["type"], done["finish_reason"]) == ("done", "cancelled")
    assert 0 < done["usage"]["completion_tokens"] < MAX_TOKENS
    usage = wait_for(lambda: UsageRecord.objects.filter(generation_id=generation).first())
    assert usage.completion_tokens == done["usage"]["completion_tokens"]
