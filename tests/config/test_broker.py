"""A worker outlives its Redis restarting under it: a Redis server of the test's own (appending to its file,
as a production broker does) killed and started again while a real Celery worker writes a reply; the worker
must still be there and take the next reply (kombu's old channel used to kill it: see config/broker.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chaos.stack import RedisServer
from config.celery import app
from conversations.models import Message
from conversations.tasks import generate_reply
from tests.conversations.factories import queued_turn
from tests.factories import UserFactory
from tests.live import wait_for, worker_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("llm_model")]


def status(reply: Message) -> str:
    return Message.objects.values_list("status", flat=True).get(pk=reply.pk)


def send(reply: Message, broker_url: str) -> None:
    with app.connection_for_write(broker_url) as connection:
        generate_reply.apply_async((str(reply.pk),), connection=connection)


def test_a_worker_outlives_its_redis_restarting_mid_reply_and_takes_the_next_one(chat_model_path, tmp_path):
    user = UserFactory()
    redis_server = RedisServer(Path(tmp_path) / "redis")
    redis_server.start()
    try:
        with worker_process(chat_model_path, Path(tmp_path), queues="inference", REDIS_URL=redis_server.url) as worker:
            first = queued_turn(user, params={"temperature": 0, "max_tokens": 400})
            send(first, redis_server.url)
            wait_for(lambda: status(first) == Message.Status.RUNNING, timeout=60)

            redis_server.kill()
            time.sleep(1)
            redis_server.start()

            second = queued_turn(user, params={"temperature": 0, "max_tokens": 8})
            send(second, redis_server.url)
            wait_for(lambda: status(second) == Message.Status.COMPLETED or worker.poll() is not None, timeout=60)
            assert worker.poll() is None, worker.log_file.read_text()[-3000:]
            assert status(second) == Message.Status.COMPLETED
            wait_for(lambda: status(first) in {Message.Status.COMPLETED, Message.Status.FAILED}, timeout=60)
    finally:
        redis_server.stop()
