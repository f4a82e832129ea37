"""The worker's scrape-time gauges: dependencies answering and Celery queue lengths (inference.metrics)."""

from __future__ import annotations

import socket
import uuid

import pytest

from inference import metrics
from inference.redis import get_redis


def _samples(collector: metrics.DependencyCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


@pytest.fixture
def queue():
    name = f"djinn-test-queue-{uuid.uuid4().hex}"
    yield name
    get_redis().delete(name)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_it_reports_both_dependencies_up_and_the_length_of_each_queue(queue):
    get_redis().rpush(queue, "a", "b", "c")

    samples = _samples(metrics.DependencyCollector(queues=(queue,)))

    assert samples[("djinn_dependency_up", (("dependency", "postgresql"),))] == 1
    assert samples[("djinn_dependency_up", (("dependency", "redis"),))] == 1
    assert samples[("djinn_queue_length", (("queue", queue),))] == 3


@pytest.mark.django_db(transaction=True)
def test_a_redis_that_does_not_answer_is_reported_down_without_queue_lengths(queue):
    collector = metrics.DependencyCollector(queues=(queue,), redis_url=f"redis://127.0.0.1:{_closed_port()}/0")

    samples = _samples(collector)

    assert samples[("djinn_dependency_up", (("dependency", "redis"),))] == 0
    assert samples[("djinn_dependency_up", (("dependency", "postgresql"),))] == 1
    assert not [key for key in samples if key[0] == "djinn_queue_length"]


def test_registering_asks_nobody():
    names = {family.name for family in metrics.DependencyCollector(redis_url="redis://192.0.2.1:6379/0").describe()}

    assert names == {"djinn_dependency_up", "djinn_queue_length"}


def _value(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_an_engine_reports_each_steps_kind_batch_size_and_time(chat_model_path):
    from inference.engine import Engine, SamplingParams

    model = f"test-{uuid.uuid4().hex[:8]}"
    with Engine(chat_model_path, device="cpu") as engine:
        engine.on_step = metrics.step_observer(model)
        prompts = [[{"role": "user", "content": f"Hello {n}"}] for n in range(3)]
        params = SamplingParams(temperature=0, max_tokens=5)
        outputs = [engine.generate(prompt, params) for prompt in prompts]

    assert all(output.usage.completion_tokens == 5 for output in outputs)
    # Each request: one prefill step (its first token), then four decode steps (one token each).
    assert _value("djinn_engine_step_seconds_count", model=model, kind="prefill") == 3
    assert _value("djinn_engine_step_seconds_count", model=model, kind="decode") == 12
    assert _value("djinn_engine_batch_size_sum", model=model, kind="decode") == 12  # one at a time
    assert _value("djinn_engine_step_seconds_sum", model=model, kind="decode") > 0


def test_a_finished_generation_counts_computed_and_cached_prompt_tokens_its_pace_and_its_error_code():
    model = f"test-{uuid.uuid4().hex[:8]}"

    metrics.generation_finished(
        model, "completed", ttft_ms=120, duration_ms=900, inter_token_s=0.03, prompt_tokens=100, cached_tokens=64,
        completion_tokens=20,
    )  # fmt: skip
    metrics.generation_finished(model, "failed", error_code="stream_lost")

    tokens = {kind: _value("djinn_generation_tokens_total", model=model, kind=kind) for kind in ("prompt", "cached")}
    assert tokens == {"prompt": 100, "cached": 64}
    assert _value("djinn_generation_tokens_total", model=model, kind="computed") == 36
    assert _value("djinn_generation_inter_token_seconds_count", model=model) == 1
    assert _value("djinn_generation_errors_total", model=model, code="stream_lost") == 1
    assert _value("djinn_generations_finished_total", model=model, status="failed") == 1


def test_the_model_load_time_is_reported():
    model = f"test-{uuid.uuid4().hex[:8]}"
    metrics.model_loaded(model, 2.5)

    assert _value("djinn_model_load_seconds", model=model) == 2.5
