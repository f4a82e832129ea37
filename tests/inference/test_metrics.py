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
