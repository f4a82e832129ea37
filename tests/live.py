"""Fixtures for tests against live processes, registered for the whole suite by tests/conftest.py, so one
session-scoped worker (and one web server) serves every test directory.

* ``chat_model_path``: a tiny random Llama (HF folder, 512-token context, ChatML template) whose output
  rows for the special tokens are zero, so a greedy reply never ends early: with ``temperature`` 0 a reply
  runs to its ``max_tokens``.
* ``llm_model``: the default LLMModel entry, with DJINN_MODEL pointing at ``chat_model_path`` (in this
  process; the worker and the web server get it through their environment).
* ``celery_worker``: one worker for the session, consuming ``inference`` and ``default`` against the
  pytest-django test database. Tests that use it need ``django_db(transaction=True)``, so that what they
  write is committed where the worker can read it.
* ``live_server_url``: uvicorn serving config.asgi in a subprocess on a free port, against the test
  database (same rule: ``django_db(transaction=True)``); ``http://127.0.0.1:<port>``.
* ``wait_for(predicate)``: poll until truthy.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from config.env import database_url
from inference.models import LLMModel
from tests.conversations.factories import LLMModelFactory
from tests.inference.engine.conftest import write_chat_model

BASE_DIR = Path(__file__).resolve().parents[1]
WORKER_START_TIMEOUT_S = 60
SERVER_START_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def chat_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chat_model(tmp_path_factory.mktemp("chat-model"))


@pytest.fixture
def llm_model(db: None, settings: Any, chat_model_path: Path) -> LLMModel:
    settings.DJINN_MODEL = str(chat_model_path)
    return LLMModelFactory()


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout}s waiting for {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


def _live_env(chat_model_path: Path) -> dict[str, str]:
    """The environment of a process that must see what the tests see: the test database (during tests
    NAME is the test database's), the same Redis, the tiny model as the default."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "REDIS_URL": settings.REDIS_URL,
        "DJINN_CACHE_KEY_PREFIX": settings.CACHE_KEY_PREFIX,  # what a test clears, the processes' keys too
        "DJINN_MODEL": str(chat_model_path),
        "DJINN_DEVICE": "cpu",
        "DJINN_WORKER_METRICS_PORT": "0",
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def worker_process(
    chat_model_path: Path, log_dir: Path, *, queues: str = "inference,default", **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process, ready once it says so; ``env`` adds to ``_live_env``'s. Its log is printed
    if it fails to start."""
    name = f"pytest-{uuid.uuid4().hex[:8]}@{os.uname().nodename}"
    log_file = log_dir / "worker.log"
    command = [
        *(sys.executable, "-m", "celery", "-A", "config", "worker"),
        *("-Q", queues, "-P", "threads", "-c", "8", "-n", name),
        *("--without-gossip", "--without-mingle", "--loglevel", "INFO"),
    ]
    with open(log_file, "w") as log:
        worker = subprocess.Popen(
            command, cwd=BASE_DIR, env={**_live_env(chat_model_path), **env}, stdout=log, stderr=subprocess.STDOUT
        )
    worker.name = name  # type: ignore[attr-defined]
    worker.log_file = log_file  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        # Ready once connected to its broker and consuming (env may give it a Redis of its own).
        while f"{name} ready." not in log_file.read_text():
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"The Celery worker did not start:\n{log_file.read_text()[-5000:]}")
            time.sleep(0.1)
        yield worker
    finally:
        _stop(worker)


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: None, chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real worker process; yields its node name."""
    with worker_process(chat_model_path, tmp_path_factory.mktemp("worker")) as worker:
        yield worker.name  # type: ignore[attr-defined]


@contextmanager
def web_server(chat_model_path: Path, log_dir: Path, **env: str) -> Iterator[str]:
    """uvicorn serving config.asgi:application in its own process, ready once /healthz answers; its URL.
    ``env`` adds to or overrides the environment of ``_live_env`` (a DATABASE_URL through a proxy, say)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log_file = log_dir / "uvicorn.log"
    command = [
        *(sys.executable, "-m", "uvicorn", "config.asgi:application"),
        *("--host", "127.0.0.1", "--port", str(port), "--lifespan", "off", "--log-level", "warning"),
    ]
    with open(log_file, "w") as log:
        server = subprocess.Popen(
            command, cwd=BASE_DIR, env={**_live_env(chat_model_path), **env}, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _answers(f"{url}/healthz"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"The web server did not start:\n{log_file.read_text()[-5000:]}")
            time.sleep(0.1)
        yield url
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def live_server_url(
    django_db_setup: None, chat_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """uvicorn serving config.asgi:application in its own process, ready once /healthz answers."""
    with web_server(chat_model_path, tmp_path_factory.mktemp("web")) as url:
        yield url


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
