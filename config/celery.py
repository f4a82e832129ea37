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

# Periodic jobs (the `beat` process): CELERY_BEAT_SCHEDULE in config/settings.py.


@signals.worker_init.connect
def _start_worker_metrics(**kwargs: object) -> None:
    from inference.metrics import start_worker_metrics_server

    start_worker_metrics_server()


# Whether this worker consumes the "inference" queue (set as it starts): only such a worker drains on SIGTERM.
_role = {"inference": False}


@signals.worker_init.connect
def _load_the_model(sender: object, **kwargs: object) -> None:
    """An inference worker loads the default model before it takes any task, so the first reply after a start
    does not wait for the load (and a worker that cannot load it says so at once)."""
    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    if queues is None or "inference" not in queues.consume_from:
        return
    _role["inference"] = True
    from inference.runtime import preload

    preload()


@signals.worker_shutting_down.connect
def _drain_replies(**kwargs: object) -> None:
    """SIGTERM (a pod deleted, a node drained, Ctrl-C under honcho): Celery's warm shutdown takes no new task
    and waits for the running ones. An inference worker bounds that wait: its replies get
    DJINN_INFERENCE_DRAIN_S seconds to finish, then the rest end as interrupted (inference.runtime.stop_after),
    so the worker exits within its grace period and leaves no reply running. Replies it had not started go
    back to the queue for another worker (acks_late)."""
    if _role["inference"]:
        from django.conf import settings

        from inference.runtime import stop_after

        stop_after(settings.DJINN_INFERENCE_DRAIN_S)


@signals.worker_shutdown.connect
def _shutdown_engines(**kwargs: object) -> None:
    from inference.runtime import shutdown_engines

    shutdown_engines()
