"""``make rehearsal``: Djinn deployed as on Kubernetes, one container per pod, on this one host with podman.

It builds the image (deploy/container, FROM a Debian base made here with debootstrap) and a services image,
then starts, on a network of their own: PostgreSQL behind PgBouncer (transaction mode), Redis, the migration,
two web containers behind HAProxy, two inference workers, one default worker and beat. Then it

1. signs up, chats over the WebSocket and streams a /v1 completion (the official openai SDK) through each web
   container;
2. runs ``--chats`` concurrent streamed chats through the load balancer and shows that both inference workers
   served replies (their own /metrics);
3. stops one inference worker with SIGTERM mid-reply: its replies end (finished, or failed with a reason),
   none is left running or queued, and new chats go to the other worker;
4. sends SIGTERM to every other role at once: each exits 0 within its grace period;

printing one line per step with its figures, and removes every container, the network and the files it made
(the images stay, as a build cache). Exit status 1 if a check failed. Every request goes to loopback.

    python deploy/rehearsal/rehearsal.py [--chats 64] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from chaos.clients import Followed, ws_chat  # noqa: E402  (the fault suite's WebSocket client)

PREFIX = "djinn-rehearsal"
NETWORK = PREFIX
IMAGE = "localhost/djinn:rehearsal"
SERVICES = "localhost/djinn-rehearsal-services:bookworm"
BASE = "localhost/djinn-debian-base:bookworm"
MODEL = "smollm2-135m-instruct"
DB_PASSWORD = "rehearsal"
PARAMS = {"temperature": 0, "max_tokens": 24}
READY_TIMEOUT_S = 300


class Failed(Exception):
    """A check of the rehearsal did not hold."""


# -- podman ------------------------------------------------------------------------------------------

TOOLS = ("podman", "runc", "debootstrap")


def missing_tools() -> list[str]:
    """What the rehearsal needs and this host lacks, after installing it with apt-get where it can (root on
    Debian or Ubuntu). A non-root user is told: debootstrap and podman's networks here need root."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, check=False, stdout=subprocess.DEVNULL)
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.insert(0, "root")
    return missing


def podman(*args: str, timeout: float = 900, check: bool = True) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise Failed(f"podman {' '.join(args[:3])}...: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def run_container(
    name: str,
    image: str,
    *args: str,
    env: dict[str, str] | None = None,
    publish: tuple[int, ...] = (),
    volumes: tuple[str, ...] = (),
    user: str | None = None,
) -> None:
    """``podman run -d`` on the rehearsal's network, named ``PREFIX-name`` (its host name on the network), each
    port of ``publish`` on a free loopback port (``host_port``)."""
    flags = ["--name", f"{PREFIX}-{name}", "--hostname", f"{PREFIX}-{name}", "--network", NETWORK]
    flags += [f"--env={key}={value}" for key, value in (env or {}).items()]
    flags += [f"--publish=127.0.0.1::{port}" for port in publish]
    flags += [f"--volume={mount}" for mount in volumes]
    flags += [f"--user={user}"] if user else []
    podman("run", "--detach", *flags, image, *args)


def stop_container(name: str) -> tuple[float, int]:
    """SIGTERM, as Kubernetes sends it, with a 60 s grace before SIGKILL: (seconds to exit, exit code)."""
    started = time.monotonic()
    podman("stop", "--time", "60", f"{PREFIX}-{name}")
    took = time.monotonic() - started
    return took, int(podman("inspect", f"{PREFIX}-{name}", "--format", "{{.State.ExitCode}}"))


def host_port(name: str, port: int) -> int:
    """The loopback port podman published for ``port`` of container ``name``."""
    return int(podman("port", f"{PREFIX}-{name}", str(port)).rsplit(":", 1)[1])


def ours() -> list[str]:
    return [line for line in podman("ps", "-a", "--format", "{{.Names}}").splitlines() if line.startswith(PREFIX)]


def remove_everything() -> int:
    names = ours()
    if names:
        podman("rm", "--force", "--time", "2", *names, timeout=120)
    podman("network", "rm", "--force", NETWORK, check=False)
    return len(names)


# -- HTTP as a browser and an API client do it --------------------------------------------------------


class Browser:
    """A user's browser on one address: cookies, CSRF tokens from the forms, redirects followed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> str:
        with self.opener.open(self.url(path), timeout=60) as response:
            return response.read().decode()

    def post_form(self, path: str, fields: dict[str, str]) -> str:
        page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if token is None:
            raise Failed(f"no CSRF token on {path}")
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token.group(1)}).encode()
        request = urllib.request.Request(self.url(path), data=data, headers={"Referer": self.url(path)})
        with self.opener.open(request, timeout=60) as response:
            return response.read().decode()

    def sign_up(self, email: str) -> None:
        password = secrets.token_urlsafe(16)
        self.post_form(
            "/accounts/signup/",
            {"email": email, "display_name": email.split("@")[0], "password1": password, "password2": password},
        )
        if not self.cookie():
            raise Failed(f"signing up {email} did not log in")

    def api_key(self) -> str:
        page = self.post_form("/accounts/settings/api-keys/", {"name": "rehearsal"})
        found = re.search(r"djn_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}", page)
        if found is None:
            raise Failed("the new API key was not shown")
        return found.group(0)

    def cookie(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar if c.name == "sessionid")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def started_replies(metrics_port: int) -> float:
    """The replies an inference worker started, from its own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counters = [line for line in text.splitlines() if line.startswith("djinn_generations_started_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in counters)


def psql(sql: str) -> str:
    return podman("exec", f"{PREFIX}-postgres", "psql", "-U", "postgres", "-d", "djinn", "-tAc", sql)


# -- steps -------------------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.number = 0
        self.failed = False

    @contextmanager
    def step(self, title: str) -> Iterator[dict[str, Any]]:
        self.number += 1
        figures: dict[str, Any] = {}
        started = time.monotonic()
        try:
            yield figures
        except Failed as exc:
            self.failed = True
            print(f"{self.number:>2}. {title:<44} FAIL: {exc}", flush=True)
            raise
        shown = ", ".join(f"{key} {value}" for key, value in figures.items())
        print(f"{self.number:>2}. {title:<44} {time.monotonic() - started:6.1f} s   {shown}", flush=True)


def build(figures: dict[str, Any]) -> None:
    container = ROOT / "deploy" / "container"
    subprocess.run([str(container / "debian-base.sh"), BASE], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, str(container / "wheels.py")], check=True, capture_output=True)
    podman("build", "--quiet", "--build-arg", f"BASE={BASE}", "-t", IMAGE, "-f", str(ROOT / "Containerfile"), str(ROOT))
    services = ROOT / "deploy" / "rehearsal"
    podman("build", "--quiet", "--build-arg", f"BASE={BASE}", "--build-arg", f"DB_PASSWORD={DB_PASSWORD}",
           "-t", SERVICES, "-f", str(services / "Containerfile.services"), str(services))  # fmt: skip
    size = int(podman("image", "inspect", IMAGE, "--format", "{{.Size}}"))
    user, entrypoint = podman("image", "inspect", IMAGE, "--format", "{{.Config.User}} {{.Config.Entrypoint}}").split(
        " ", 1
    )
    if user != "10001:10001" or entrypoint != "[djinn]":
        raise Failed(f"the image runs {entrypoint} as {user!r}, not djinn as 10001")
    figures["image"] = f"{IMAGE} {size / 2**30:.2f} GiB, user {user}"


def write_config(folder: Path) -> None:
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"djinn = host={PREFIX}-postgres port=5432 dbname=djinn\n"
        "[pgbouncer]\n"
        "listen_addr = *\nlisten_port = 6432\nunix_socket_dir =\n"
        "auth_type = scram-sha-256\nauth_file = /etc/djinn/userlist.txt\n"
        "pool_mode = transaction\nmax_client_conn = 1000\ndefault_pool_size = 40\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    (folder / "userlist.txt").write_text(f'"djinn" "{DB_PASSWORD}"\n')
    (folder / "haproxy.cfg").write_text(
        "global\n  maxconn 4000\n"
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n"
        "  timeout tunnel 3600s\n  option forwardfor\n"
        "frontend djinn\n  bind *:8080\n  default_backend web\n"
        "backend web\n  balance roundrobin\n  option httpchk\n"
        "  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost\n"
        "  default-server check inter 2s init-addr last,libc,none\n"
        f"  server web-1 {PREFIX}-web-1:8000\n  server web-2 {PREFIX}-web-2:8000\n"
    )
    for path in folder.iterdir():
        path.chmod(0o644)
    folder.chmod(0o755)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT_S) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise Failed(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


def start(figures: dict[str, Any], config: Path) -> dict[str, int]:
    podman("network", "create", NETWORK)
    mount = (f"{config}:/etc/djinn:ro",)
    run_container("postgres", SERVICES, "/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/15/main",
                  "-c", "config_file=/etc/postgresql/15/main/postgresql.conf", user="postgres")  # fmt: skip
    run_container("redis", SERVICES, "redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "")
    pg_ready = ["podman", "exec", f"{PREFIX}-postgres", "pg_isready", "-q"]
    wait_until(lambda: subprocess.run(pg_ready, capture_output=True).returncode == 0, "PostgreSQL")
    run_container("pgbouncer", SERVICES, "pgbouncer", "/etc/djinn/pgbouncer.ini", user="postgres", volumes=mount)

    common = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJINN_HTTPS": "0",
        "DATABASE_URL": f"postgres://djinn:{DB_PASSWORD}@{PREFIX}-pgbouncer:6432/djinn",
        "DATABASE_PGBOUNCER": "1",
        "REDIS_URL": f"redis://{PREFIX}-redis:6379/0",
        "LOG_FORMAT": "json",
        "DJINN_WORKER_METRICS_PORT": "9100",
        "FORWARDED_ALLOW_IPS": "*",
    }
    # The migration Job: PostgreSQL itself, not PgBouncer.
    direct = {**common, "DATABASE_URL": f"postgres://djinn:{DB_PASSWORD}@{PREFIX}-postgres:5432/djinn"}
    direct.pop("DATABASE_PGBOUNCER")
    env = [f"--env={key}={value}" for key, value in direct.items()]
    migrate = subprocess.run(
        ["podman", "run", "--rm", "--network", NETWORK, *env, IMAGE, "migrate"], capture_output=True, text=True
    )
    if migrate.returncode != 0:
        raise Failed(f"migrate: {migrate.stderr[-2000:]}")

    for n in (1, 2):
        run_container(f"web-{n}", IMAGE, "web", env=common, publish=(8000,))
        # A short drain, so that step 5 ends within the rehearsal (Kubernetes' pods get 270 s).
        run_container(f"inference-{n}", IMAGE, "inference-worker", env={**common, "DJINN_INFERENCE_DRAIN_S": "5"},
                      publish=(9100,))  # fmt: skip
    run_container("worker", IMAGE, "worker", env=common)
    run_container("beat", IMAGE, "beat", env=common)
    run_container("lb", SERVICES, "haproxy", "-db", "-f", "/etc/djinn/haproxy.cfg", volumes=mount, publish=(8080,))

    ports = {name: host_port(name, 8000) for name in ("web-1", "web-2")}
    ports |= {name: host_port(name, 9100) for name in ("inference-1", "inference-2")}
    ports["lb"] = host_port("lb", 8080)
    for name in ("web-1", "web-2", "inference-1", "inference-2"):
        waited = wait_until(lambda name=name: http_status(f"http://127.0.0.1:{ports[name]}/readyz") == 200, name)
        figures[f"{name} ready"] = f"{waited:.0f} s"
    wait_until(lambda: http_status(f"http://127.0.0.1:{ports['lb']}/readyz") == 200, "the load balancer")
    figures["containers"] = len(ours())
    return ports


def through_each_web(figures: dict[str, Any], ports: dict[str, int]) -> None:
    from openai import OpenAI

    for name in ("web-1", "web-2"):
        browser = Browser(ports[name])
        browser.sign_up(f"{name}-{secrets.token_hex(4)}@rehearsal.test")
        chat = asyncio.run(ws_chat(ports[name], browser.cookie(), 0, "Say hello.", PARAMS))
        check_ended(chat, f"the chat through {name}", completed=True)

        client = OpenAI(base_url=f"http://127.0.0.1:{ports[name]}/v1", api_key=browser.api_key(), max_retries=0)
        started, text, usage = time.monotonic(), "", None
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=24,
            temperature=0,
        )
        for chunk in stream:
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
            usage = chunk.usage or usage
        if not text or usage is None or usage.completion_tokens < 1:
            raise Failed(f"the /v1 stream through {name} gave no text")
        took = time.monotonic() - started
        figures[name] = f"chat {len(chat.seqs)} deltas, /v1 {usage.completion_tokens} tokens in {took:.1f} s"


def check_ended(chat: Followed, what: str, *, completed: bool = False) -> None:
    if chat.terminal is None:
        raise Failed(f"{what} never ended: {chat.errors[-3:]}")
    if completed and chat.terminal["type"] != "generation.done":
        raise Failed(f"{what} ended {chat.terminal}")
    if chat.foreign or chat.duplicates or chat.gaps:
        raise Failed(f"{what} received others' events, duplicates or gaps")


def sign_up_many(port: int, count: int) -> list[str]:
    def one(n: int) -> str:
        browser = Browser(port)
        browser.sign_up(f"load-{n}-{secrets.token_hex(4)}@rehearsal.test")
        return browser.cookie()

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


async def chats(port: int, cookies: list[str], per_user: int, params: dict[str, Any]) -> list[Followed]:
    tasks = [
        ws_chat(port, cookie, owner, f"Tell me about the number {owner * per_user + n}.", params)
        for owner, cookie in enumerate(cookies)
        for n in range(per_user)
    ]
    return list(await asyncio.gather(*tasks))


def load(figures: dict[str, Any], ports: dict[str, int], count: int) -> list[str]:
    # The default plan lets a user write two replies at once: two chats per user.
    cookies = sign_up_many(ports["lb"], (count + 1) // 2)
    before = {name: started_replies(ports[name]) for name in ("inference-1", "inference-2")}
    started = time.monotonic()
    results = asyncio.run(chats(ports["lb"], cookies, 2, PARAMS))[:count]
    took = time.monotonic() - started
    for n, chat in enumerate(results):
        check_ended(chat, f"chat {n}", completed=True)
    served = {name: started_replies(ports[name]) - before[name] for name in before}
    if not all(served.values()):
        raise Failed(f"one inference worker served nothing: {served}")
    tokens = sum(len(chat.seqs) for chat in results)
    ttfts = sorted(chat.first_at - chat.sent_at for chat in results if chat.first_at)
    figures["chats"] = f"{len(results)} completed"
    figures["deltas"] = f"{tokens} ({tokens / took:.0f}/s)"
    figures["TTFT p50"] = f"{ttfts[len(ttfts) // 2]:.1f} s"
    figures["replies started by"] = ", ".join(f"{name} {int(value)}" for name, value in served.items())
    return cookies


def sigterm(figures: dict[str, Any], ports: dict[str, int], cookies: list[str]) -> None:
    long = {"temperature": 0, "max_tokens": 400}

    async def scenario() -> tuple[list[Followed], float, int]:
        in_flight = asyncio.ensure_future(chats(ports["lb"], cookies[:8], 2, long))
        # Once inference-1 has started replies of these chats, and written a little of them.
        before = started_replies(ports["inference-1"])
        deadline = time.monotonic() + 120
        while started_replies(ports["inference-1"]) <= before and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        stopped_after, code = await asyncio.to_thread(stop_container, "inference-1")
        return (await in_flight), stopped_after, code

    results, stopped_after, code = asyncio.run(scenario())
    if code != 0:
        raise Failed(f"the inference worker exited {code} on SIGTERM")
    ended = {"done": 0, "interrupted": 0}
    for n, chat in enumerate(results):
        check_ended(chat, f"chat {n}")
        ended["done" if chat.terminal and chat.terminal["type"] == "generation.done" else "interrupted"] += 1
        if chat.terminal and chat.terminal["type"] == "generation.error" and not chat.terminal.get("message"):
            raise Failed(f"chat {n} failed without a reason: {chat.terminal}")
    unfinished = int(psql("SELECT count(*) FROM conversations_message WHERE status IN ('running', 'queued')"))
    if unfinished:
        raise Failed(f"{unfinished} replies left running or queued")

    before = started_replies(ports["inference-2"])
    after_stop = asyncio.run(chats(ports["lb"], cookies[8:12] or cookies[:4], 1, PARAMS))
    for n, chat in enumerate(after_stop):
        check_ended(chat, f"chat {n} after the stop", completed=True)
    taken = started_replies(ports["inference-2"]) - before
    if taken < len(after_stop):
        raise Failed(f"inference-2 started {taken} replies of {len(after_stop)} sent after the stop")
    figures["inference-1 exited"] = f"{code} after {stopped_after:.1f} s"
    done, interrupted = ended["done"], ended["interrupted"]
    figures["chats in flight"] = f"{done} finished, {interrupted} interrupted with a reason, 0 left running"
    figures["new chats"] = f"{len(after_stop)} of {len(after_stop)} served by inference-2"


def stop_the_rest(figures: dict[str, Any]) -> None:
    """SIGTERM to every other role at once, as a rollout or a drain sends it: each exits 0 within its grace."""
    names = ["web-1", "web-2", "inference-2", "worker", "beat"]

    def stop(name: str) -> tuple[str, float, int]:
        return name, *stop_container(name)

    with ThreadPoolExecutor(len(names)) as pool:
        stopped = list(pool.map(stop, names))
    failed = [f"{name} exited {code}" for name, _took, code in stopped if code != 0]
    if failed:
        raise Failed(", ".join(failed))
    figures["exited 0"] = ", ".join(f"{name} in {took:.1f} s" for name, took, _code in stopped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=64, help="concurrent chats in step 4 (default 64)")
    parser.add_argument("--keep", action="store_true", help="leave the containers running, to look at them")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"rehearsal: needs root and {', '.join(missing)} (on Debian: apt-get install {' '.join(missing)})")
        return 2
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "container" / "containers.conf"))

    report = Report()
    config = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    remove_everything()  # what an interrupted run left
    try:
        with report.step("build the image and the services image") as figures:
            build(figures)
        with report.step("start the migration and 10 containers") as figures:
            write_config(config)
            ports = start(figures, config)
        with report.step("sign up, chat and /v1 through each web") as figures:
            through_each_web(figures, ports)
        with report.step(f"{args.chats} concurrent chats through the balancer") as figures:
            cookies = load(figures, ports, args.chats)
        with report.step("SIGTERM an inference worker mid-reply") as figures:
            sigterm(figures, ports, cookies)
        with report.step("SIGTERM every other role") as figures:
            stop_the_rest(figures)
    except (Failed, OSError) as exc:  # urllib's errors are OSErrors
        if not isinstance(exc, Failed):
            print(f"{report.number:>2}. FAIL: {type(exc).__name__}: {exc}", flush=True)
            report.failed = True
        for name in ours():
            logs = subprocess.run(["podman", "logs", "--tail", "15", name], capture_output=True, text=True)
            print(f"--- {name} (last lines)\n{logs.stdout}{logs.stderr}", file=sys.stderr)
    finally:
        if not args.keep:
            with report.step("remove what the rehearsal started") as figures:
                figures["containers"] = remove_everything()
                shutil.rmtree(config, ignore_errors=True)
                figures["network"] = "removed"
    print("rehearsal: FAILED" if report.failed else "rehearsal: every step passed", flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
