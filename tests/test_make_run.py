"""`make run` itself: embedded services up, the site ready, Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

BASE_DIR = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "make run exited before the site was ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"{url} was not ready within {timeout} s")


def commands_using(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (the embedded servers' data dirs do)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        command = " ".join(proc.info["cmdline"] or [])
        if str(path) in command and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(command)
    return found


@pytest.mark.slow
def test_make_run_serves_on_embedded_services_and_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "MAKEFLAGS", "MFLAGS"}}
    env.update(DJINN_VAR_DIR=str(tmp_path / "var"), PORT=str(port), DJINN_ADMIN_EMAIL="", DJINN_ADMIN_PASSWORD="")
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        ["make", "run"], cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        status = wait_ready(f"http://127.0.0.1:{port}/readyz", process, timeout=240)
        served = served_pages(f"http://127.0.0.1:{port}")
        running_while_up = commands_using(tmp_path / "var")
        redis_pid = int((tmp_path / "var" / "redis" / "redis.pid").read_text())
        redis_was_up = alive(redis_pid)
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        process.wait(timeout=90)
    output = (tmp_path / "run.log").read_text()

    assert status == 200
    # the command a user hosts Djinn with serves no debug pages, and works on plain HTTP
    assert served["missing"][0] == 404
    assert "URLconf" not in served["missing"][1] and "DEBUG = True" not in served["missing"][1]
    assert "Page not found" in served["missing"][1]
    assert "Secure" not in served["login_cookie"]
    assert served["stylesheet"] == 200
    assert "production settings, plain HTTP" in output
    assert any("postgres" in command for command in running_while_up)
    assert redis_was_up
    assert "Created the first admin account." in output
    assert f"http://localhost:{port}/" in output
    assert "Stopped embedded PostgreSQL and Redis" in output
    assert commands_using(tmp_path / "var") == []
    assert not alive(redis_pid)
    assert group_members(process.pid) == []


def served_pages(base: str) -> dict[str, object]:
    try:
        urllib.request.urlopen(f"{base}/no-such-page/", timeout=10)
        raise AssertionError("a missing page answered 2xx")
    except urllib.error.HTTPError as error:
        missing = (error.code, error.read().decode())
    with urllib.request.urlopen(f"{base}/accounts/login/", timeout=10) as response:
        login_cookie = response.headers.get("Set-Cookie", "")
        page = response.read().decode()
    (href,) = re.findall(r'href="(/static/css/app[^"]*\.css)"', page)
    with urllib.request.urlopen(f"{base}{href}", timeout=10) as response:
        stylesheet = response.status
    return {"missing": missing, "login_cookie": login_cookie, "stylesheet": stylesheet}


def test_make_run_defaults_are_production_settings_with_hosts_from_host(monkeypatch, tmp_path):
    from config import run

    monkeypatch.setenv("DJINN_VAR_DIR", str(tmp_path))
    served = run.served_defaults("192.0.2.7", dev=False)

    assert served["DJANGO_DEBUG"] == "0"
    assert served["DJINN_HTTPS"] == "0"
    assert served["DJANGO_ALLOWED_HOSTS"].split(",") == ["localhost", "127.0.0.1", "[::1]", "192.0.2.7"]
    assert len(served["DJANGO_SECRET_KEY"]) >= 50
    assert run.served_defaults("192.0.2.7", dev=False)["DJANGO_SECRET_KEY"] == served["DJANGO_SECRET_KEY"]
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert run.served_defaults("127.0.0.1", dev=True) == {"DJANGO_DEBUG": "1", "DJINN_INFERENCE_DRAIN_S": "3"}
    assert "[::1]" in run.allowed_hosts("::1")
    assert len(run.allowed_hosts("0.0.0.0")) > 3  # the machine's own name and addresses


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except ProcessLookupError:
            continue
    return members
