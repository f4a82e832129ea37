"""The Celery app. Queues: ``default`` (e-mail, titles, roll-ups) and ``inference`` (replies)."""

from __future__ import annotations

import os

from celery import Celery, signals
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("djinn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("inference"))
app.autodiscover_tasks()

# Periodic jobs (the `beat` process).
app.conf.beat_schedule = {
    "sweep-stale-generations": {"task": "conversations.tasks.sweep_stale_generations", "schedule": 30.0},
}


@signals.worker_init.connect
def _start_worker_metrics(**kwargs: object) -> None:
    from inference.metrics import start_worker_metrics_server

    start_worker_metrics_server()


@signals.worker_shutdown.connect
def _shutdown_engines(**kwargs: object) -> None:
    from inference.runtime import shutdown_engines

    shutdown_engines()
