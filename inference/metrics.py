"""Prometheus metrics of generations, engines, the task queues and the dependencies.

The web process serves them at /metrics (django-prometheus); a Celery worker, which has no HTTP
server, serves its own on DJINN_WORKER_METRICS_PORT when that is set.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from django.conf import settings
from django.db import connection
from django.db.utils import Error as DatabaseError
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

GENERATIONS_STARTED = Counter("djinn_generations_started_total", "Replies a worker began generating.", ["model"])
GENERATIONS_FINISHED = Counter(
    "djinn_generations_finished_total",
    "Replies that ended, by status (completed, cancelled, failed).",
    ["model", "status"],
)
GENERATION_TTFT = Histogram(
    "djinn_generation_ttft_seconds",
    "From the message's creation (queueing included) to its first token.",
    ["model"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
GENERATION_DURATION = Histogram(
    "djinn_generation_duration_seconds",
    "From a worker taking a reply to its last token.",
    ["model"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
GENERATION_TOKENS = Counter(
    "djinn_generation_tokens_total",
    "Tokens of finished replies, by kind: prompt (all of it) = computed + cached (served from the prefix cache);"
    " completion.",
    ["model", "kind"],
)
GENERATION_ERRORS = Counter(
    "djinn_generation_errors_total",
    "Replies and completions that failed, by the code their error event carries (generation_failed,"
    " stream_lost, gave_up, model_not_found, invalid_input...).",
    ["model", "code"],
)
INTER_TOKEN = Histogram(
    "djinn_generation_inter_token_seconds",
    "A finished reply's mean time between tokens, first to last.",
    ["model"],
    buckets=(0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.25, 0.5, 1, 2),
)
STEP_SECONDS = Histogram(
    "djinn_engine_step_seconds",
    "One engine step (forward pass and sampling), by kind: prefill (a prompt in the batch) or decode.",
    ["model", "kind"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5),
)
STEP_BATCH = Histogram(
    "djinn_engine_batch_size",
    "Sequences in one engine step, by kind.",
    ["model", "kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
MODEL_LOAD_SECONDS = Gauge("djinn_model_load_seconds", "How long this process took to load the model.", ["model"])

# Engine stats keys exported as gauges: name -> (metric, help).
_ENGINE_GAUGES = {
    "running": ("djinn_engine_running_sequences", "Sequences being decoded."),
    "waiting": ("djinn_engine_waiting_sequences", "Sequences waiting for KV cache or a batch slot."),
    "kv_blocks_used": ("djinn_engine_kv_blocks_used", "Paged KV cache blocks in use."),
    "kv_blocks_total": ("djinn_engine_kv_blocks_total", "Paged KV cache blocks."),
    "kv_blocks_free": ("djinn_engine_kv_blocks_free", "Paged KV cache blocks free (cached prefixes included)."),
    "prefix_hit_rate": ("djinn_engine_prefix_cache_hit_rate", "Share of prompt tokens served from the prefix cache."),
    "preemptions": ("djinn_engine_preemptions", "Sequences preempted (recomputed later) so far."),
}


class EngineCollector(Collector):
    """Reads the stats of this process's engines at scrape time (none in the web process)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from inference.runtime import engine_stats

        stats = engine_stats()
        for key, (name, help_text) in _ENGINE_GAUGES.items():
            family = GaugeMetricFamily(name, help_text, labels=["model"])
            for model, values in stats.items():
                family.add_metric([model], float(values.get(key, 0)))
            yield family


class DependencyCollector(Collector):
    """At scrape time: whether PostgreSQL and Redis answer this process (djinn_dependency_up) and how many
    tasks wait in each Celery queue (djinn_queue_length, read from the broker). Each worker reports the same
    queue lengths; the alerting rules take their max. Redis is asked on a connection of its own with short
    timeouts, so that a Redis that does not answer makes the scrape say so rather than hang."""

    def __init__(self, *, queues: tuple[str, ...] = ("inference", "default"), redis_url: str | None = None) -> None:
        self.queues = queues
        self.redis_url = redis_url

    def describe(self) -> Iterator[GaugeMetricFamily]:  # the names, without asking anybody at registration
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up, queues = self._families()
        up.add_metric(["postgresql"], float(_database_answers()))
        lengths = _queue_lengths(self.redis_url or settings.REDIS_URL, self.queues)
        up.add_metric(["redis"], float(lengths is not None))
        for queue, length in (lengths or {}).items():
            queues.add_metric([queue], float(length))
        yield up
        yield queues

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "djinn_dependency_up",
                "Whether PostgreSQL or Redis answers this process (1) or not (0).",
                labels=["dependency"],
            ),
            GaugeMetricFamily("djinn_queue_length", "Tasks waiting in a Celery queue of the broker.", labels=["queue"]),
        )


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError as exc:
        logger.warning("metrics: database unreachable", extra={"error": str(exc)})
        return False
    finally:
        connection.close()  # each scrape runs in a thread of its own: give the connection back


def _queue_lengths(url: str, queues: tuple[str, ...]) -> dict[str, int] | None:
    """LLEN of each queue's list (kombu's Redis transport keeps a queue's messages in a list of its name);
    None when Redis does not answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        pipeline = client.pipeline(transaction=False)
        for queue in queues:
            pipeline.llen(queue)
        return dict(zip(queues, pipeline.execute(), strict=True))
    except redis.RedisError as exc:
        logger.warning("metrics: redis unreachable", extra={"error": str(exc)})
        return None
    finally:
        client.close()


def generation_started(model: str) -> None:
    GENERATIONS_STARTED.labels(model).inc()


def generation_finished(
    model: str,
    status: str,
    *,
    ttft_ms: int | None = None,
    duration_ms: int | None = None,
    inter_token_s: float | None = None,
    prompt_tokens: int = 0,
    cached_tokens: int = 0,
    completion_tokens: int = 0,
    error_code: str | None = None,
) -> None:
    GENERATIONS_FINISHED.labels(model, status).inc()
    if error_code is not None:
        GENERATION_ERRORS.labels(model, error_code).inc()
    if ttft_ms is not None:
        GENERATION_TTFT.labels(model).observe(ttft_ms / 1000)
    if duration_ms is not None:
        GENERATION_DURATION.labels(model).observe(duration_ms / 1000)
    if inter_token_s is not None:
        INTER_TOKEN.labels(model).observe(inter_token_s)
    tokens = {
        "prompt": prompt_tokens,
        "cached": cached_tokens,
        "computed": prompt_tokens - cached_tokens,
        "completion": completion_tokens,
    }
    for kind, count in tokens.items():
        if count > 0:
            GENERATION_TOKENS.labels(model, kind).inc(count)


def step_observer(model: str) -> Callable[[str, int, float], None]:
    """An engine's ``on_step``: each step's batch size and time, by kind."""
    children = {
        kind: (STEP_BATCH.labels(model, kind).observe, STEP_SECONDS.labels(model, kind).observe)
        for kind in ("prefill", "decode")
    }

    def observe(kind: str, batch_size: int, seconds: float) -> None:
        batch, step = children[kind]
        batch(batch_size)
        step(seconds)

    return observe


def model_loaded(model: str, seconds: float) -> None:
    MODEL_LOAD_SECONDS.labels(model).set(seconds)


_collectors_registered = False


def register_worker_collectors() -> None:
    global _collectors_registered
    if not _collectors_registered:
        REGISTRY.register(EngineCollector())
        REGISTRY.register(DependencyCollector())
        _collectors_registered = True


def start_worker_metrics_server() -> None:
    """Serve this worker's metrics on DJINN_WORKER_METRICS_PORT (0: not at all)."""
    register_worker_collectors()
    port = settings.DJINN_WORKER_METRICS_PORT
    if not port:
        return
    try:
        server = make_server("", port, _worker_app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:  # e.g. a second worker on the same machine: it runs on without its own endpoint
        logger.warning("Worker metrics not served on port %d: %s", port, exc)
        return
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    logger.info("Worker metrics, /healthz and /readyz on port %d", port)


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not worth a log line
        pass


_metrics_app = make_wsgi_app()


def _worker_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """/metrics (Prometheus), /healthz (the process answers) and /readyz (the default model is loaded: until
    then an orchestrator sends this worker nothing, and a probe sees it is still loading, not stuck)."""
    path = environ.get("PATH_INFO", "")
    if path in {"/healthz", "/readyz"}:
        from inference.runtime import readiness

        ready, detail = readiness() if path == "/readyz" else (True, {})
        body = json.dumps({"status": "ok" if ready else "loading", **detail}).encode()
        start_response("200 OK" if ready else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [body]
    return _metrics_app(environ, start_response)
