"""An inference worker told to stop (SIGTERM: a pod deleted, a node drained) leaves no reply running: within
DJINN_INFERENCE_DRAIN_S its replies finish, after it the rest end as interrupted with their text kept; it takes
no new reply meanwhile, and a reply queued then is served by the next worker. A real Celery worker, the tiny
model with a long context so that a reply is still being written when the signal comes, and a broker of the
test's own (another Redis database), so that no other worker of the test session takes these replies."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from config.celery import app
from conversations.generations import INTERRUPTED
from conversations.models import Message
from conversations.tasks import generate_reply
from tests.conversations.factories import queued_turn
from tests.factories import UserFactory
from tests.inference.engine.conftest import write_chat_model
from tests.live import wait_for, worker_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("llm_model")]

LONG = {"temperature": 0, "max_tokens": 7000}


@pytest.fixture(scope="module")
def long_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chat_model(tmp_path_factory.mktemp("long-model"), max_position_embeddings=8192)


@pytest.fixture
def broker(settings) -> str:
    """A Redis database nobody else uses, as this test's broker (and its workers' Redis)."""
    parts = urlsplit(settings.REDIS_URL)
    database = (int(parts.path.strip("/") or 0) + 8) % 16
    url = urlunsplit(parts._replace(path=f"/{database}"))
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def send(reply: Message, broker: str) -> str:
    """Queue the reply's task on ``broker``; its task id."""
    with app.connection_for_write(broker) as connection:
        return generate_reply.apply_async((str(reply.pk),), connection=connection).id


@pytest.fixture
def long_model(settings, long_model_path):
    settings.DJINN_MODEL = str(long_model_path)
    return long_model_path


def reload(reply: Message) -> Message:
    return Message.objects.get(pk=reply.pk)


def writing(reply: Message) -> bool:
    reply = reload(reply)
    return reply.status == Message.Status.RUNNING and bool(reply.content)


def stop(worker, timeout: float = 60) -> float:
    """SIGTERM, then the seconds until the worker exited (0: cleanly)."""
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=timeout) == 0, worker.log_file.read_text()[-3000:]
    return time.monotonic() - started


def test_replies_still_running_after_the_drain_end_as_interrupted_with_their_text_kept(long_model, broker, tmp_path):
    user = UserFactory()
    env = {"DJINN_INFERENCE_DRAIN_S": "0", "REDIS_URL": broker}
    with worker_process(long_model, tmp_path, queues="inference", **env) as worker:
        replies = [queued_turn(user, params=LONG) for _ in range(2)]
        for reply in replies:
            send(reply, broker)
        wait_for(lambda: all(writing(reply) for reply in replies), timeout=60)

        took = stop(worker)

    replies = list(map(reload, replies))
    # One may have reached its end on a slow machine before the signal was handled; none is left running.
    assert {reply.status for reply in replies} <= {Message.Status.FAILED, Message.Status.COMPLETED}
    interrupted = [reply for reply in replies if reply.status == Message.Status.FAILED]
    assert interrupted
    for reply in interrupted:
        assert reply.error == INTERRUPTED
        assert reply.content and reply.completion_tokens < LONG["max_tokens"]
    assert took < 15, f"the worker took {took:.1f} s to stop with no drain"


def test_within_the_drain_replies_finish_and_a_new_one_waits_for_the_next_worker(long_model, broker, tmp_path):
    user = UserFactory()
    env = {"DJINN_INFERENCE_DRAIN_S": "120", "REDIS_URL": broker}
    (tmp_path / "stopping").mkdir()
    (tmp_path / "next").mkdir()
    with worker_process(long_model, tmp_path / "stopping", queues="inference", **env) as worker:
        running = queued_turn(user, params={"temperature": 0, "max_tokens": 1500})
        send(running, broker)
        wait_for(lambda: writing(running), timeout=60)

        worker.send_signal(signal.SIGTERM)
        # Once the worker has taken the signal in (a reply sent before that is a reply it was given to write).
        wait_for(lambda: "Shutting down:" in worker.log_file.read_text(), timeout=30)
        later = queued_turn(user, params={"temperature": 0, "max_tokens": 8})
        task_id = send(later, broker)
        assert worker.wait(timeout=120) == 0, worker.log_file.read_text()[-3000:]

    running = reload(running)
    # Written to its end: its max_tokens, or the KV cache's capacity where memory is short ("length" either way).
    assert (running.status, running.finish_reason, running.error) == (Message.Status.COMPLETED, "length", "")
    assert reload(later).status == Message.Status.QUEUED  # the stopping worker did not take it
    assert f"{task_id}] succeeded" not in worker.log_file.read_text()

    with worker_process(long_model, tmp_path / "next", queues="inference", REDIS_URL=broker):
        wait_for(lambda: reload(later).status == Message.Status.COMPLETED, timeout=60)
