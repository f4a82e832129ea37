"""The scratch services and processes of benchmarks/serving_bench.py, each undone by its caller.

* a PostgreSQL database of its own (``djinn_bench_<pid>``) on the server of ``DATABASE_URL``, or on the
  embedded one when it is unset, dropped at the end (connections forced off);
* a Redis logical database of its own: the highest-numbered empty one on the server of ``REDIS_URL`` (or the
  embedded one), flushed at the end: Celery's queues, the channel layer, sessions and generation streams all
  live there, so nothing of the benchmark mixes with a developer's data or another test run's;
* uvicorn and a Celery worker, each in a process group of its own (a Ctrl-C on the terminal reaches only the
  benchmark, which stops them in order), logging to files that are printed when they fail to start.

Nothing here imports Django: it runs before the settings are read, so that they read the scratch URLs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parents[1]
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from config import embedded  # noqa: E402  (no Django: this module only starts servers)
from config.env import database_url  # noqa: E402

STOP_TIMEOUT_S = 20


class StackError(Exception):
    """Something the benchmark needs did not come up; the message says what, with the log's tail."""


# PostgreSQL -----------------------------------------------------------------------------------------


def base_database_url() -> str:
    """``DATABASE_URL``, or the embedded server's (started if need be) as a URL."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return database_url(embedded.ensure_database())


def with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(base_url: str, name: str) -> str:
    """Create the empty database ``name`` beside the one of ``base_url``; return its URL."""
    with _admin_connection(base_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(base_url, name)


def drop_database(base_url: str, name: str) -> None:
    with _admin_connection(base_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_exists(base_url: str, name: str) -> bool:
    with _admin_connection(base_url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _admin_connection(base_url: str):  # -> psycopg.Connection
    import psycopg

    # The maintenance database, so that the configured one may be missing (and is never the one dropped).
    return psycopg.connect(with_database(base_url, "postgres"), autocommit=True)


# Redis ----------------------------------------------------------------------------------------------


def base_redis_url() -> str:
    return os.environ.get("REDIS_URL") or embedded.ensure_redis()


def pick_redis_db(base_url: str) -> str:
    """The URL of the highest-numbered logical database that holds no key (and is not ``base_url``'s own)."""
    import redis

    client = redis.Redis.from_url(base_url)
    own = int(client.connection_pool.connection_kwargs.get("db") or 0)
    try:
        count = int(client.config_get("databases").get("databases", 16))
        used = {int(name[2:]) for name in client.info("keyspace") if name.startswith("db")}
    finally:
        client.close()
    free = [n for n in range(count - 1, 0, -1) if n not in used and n != own]
    if not free:
        raise StackError(f"Every Redis database on {redact(base_url)} holds keys: free one, or set REDIS_URL.")
    return with_redis_db(base_url, free[0])


def with_redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{db}"))


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def redis_db_is_empty(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return client.dbsize() == 0
    finally:
        client.close()


def redis_pid(url: str) -> int | None:
    """The Redis server's process id, when it runs on this machine (None otherwise)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    return pid if Path(f"/proc/{pid}").exists() else None


def cpu_seconds(processes: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system, all threads) each process (name -> pid) has used so far, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in processes.items():
        # Fields after the command's closing parenthesis: state is field 3, utime 14 and stime 15 of stat(5).
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{parts.hostname}:{parts.port}"))
    return url


# Processes ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child in its own process group (so its own children go with it), logging to ``log_path``."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], log_path: Path, *, append: bool = False
    ) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "a" if append else "w") as log:
            self.popen = subprocess.Popen(
                command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_until(self, ready: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> None:
        """Poll ``ready`` until true; StackError if the process exits or ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.popen.poll() is not None:
                raise StackError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"{self.name} was not ready after {timeout:g} s:\n{self.log_tail()}")
            time.sleep(interval)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM to the group, then SIGKILL to whatever is left after STOP_TIMEOUT_S."""
        pgid = self.popen.pid  # start_new_session: the child leads its group
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT_S} s: killed", file=sys.stderr)
        _signal_group(pgid, signal.SIGKILL)  # stragglers of the group, even when the leader has exited
        self.popen.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def start_web(env: dict[str, str], port: int, log_path: Path) -> Process:
    command = [
        *(sys.executable, "-m", "uvicorn", "config.asgi:application"),
        *("--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"),
        *("--no-access-log", "--log-level", "warning"),
        # A chat consumer whose client has gone can stay stuck in the channel layer's receive, and uvicorn
        # would wait for it for ever before exiting: bound the wait.
        *("--timeout-graceful-shutdown", "5"),
    ]
    return Process("uvicorn", command, env, log_path)


def start_worker(env: dict[str, str], node_name: str, log_path: Path) -> Process:
    """The inference worker as the Procfile runs it (threads, 32 at once), also taking ``default``."""
    command = [
        *(sys.executable, "-m", "celery", "-A", "config", "worker"),
        *("-Q", "inference,default", "-P", "threads", "-c", "32", "-n", node_name),
        *("--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"),
    ]
    return Process("celery worker", command, env, log_path)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
