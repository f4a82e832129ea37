"""End-to-end serving benchmark: the engine alone vs the chat WebSocket vs the OpenAI-compatible SSE API.

    python benchmarks/serving_bench.py [--model PATH] [--device cpu|cuda|auto] [--quick] [--timeout S]

It starts the real stack itself: a scratch PostgreSQL database (``djinn_bench_<pid>``, migrated, dropped at
the end) and an empty Redis database (flushed at the end), on the servers of DATABASE_URL / REDIS_URL or
the embedded ones; uvicorn serving config.asgi on a free port; one inference worker as the Procfile runs it
(``celery -A config worker -Q inference,default -P threads -c 32``). Beside them, in this process, it loads
an Engine on the same model (default: the bundled SmolLM2-135M-Instruct Q4_1) on the same device.

Then, in three rounds, each taking the paths one after the other in an order rotated from round to round (so
that a neighbour's load on a shared machine falls on all three alike), it measures for each path:

* TTFT: one short chat prompt at a time, from sending to the first reply text (engine: ``submit`` to the
  first text delta; WebSocket: ``message.send`` to the first ``generation.delta``, by users signed in with a
  session cookie and the page's Origin; SSE: the POST, with an API key, to the first content chunk);
* aggregate streamed tokens/s with 16 concurrent requests of 128 new tokens each, greedy.

The engine ignores EOS so each request makes exactly 128 tokens. Chat messages and /v1 requests cannot ask
for that (no such parameter), so those paths count the tokens their replies actually streamed (from the
usage of the ``done`` event and of the final SSE chunk); the prompts are stories that run past 128 tokens, and
the table shows the tokens per request of each path. Chat replies go to conversations made beforehand with
final titles, so no title task shares the worker's engine with the measured replies.

It prints a table, engine vs WebSocket vs SSE (TTFT p50 over all rounds, aggregate the median of the rounds),
with the differences and the goals of issues 4 and 5 (TTFT within 30 ms of the engine's p50, aggregate within
10% of the engine's); then where the WebSocket TTFT goes, by stage, from the times the servers recorded for
each reply (its created_at and ttft_ms); then one JSON line, last. Progress goes to stderr. Every process,
database and key it made is gone when it ends, on success, failure, Ctrl-C or its own deadline (``--timeout``,
540 s by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parents[1]
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from benchmarks import serving_stack as stack  # noqa: E402

TTFT_GOAL_MS = 30.0  # issues 4 and 5: each path's TTFT p50 within 30 ms of the engine's
RATIO_GOAL = 0.90  # issue 4: aggregate streamed tokens/s within 10% of the engine's
STACK_START_TIMEOUT_S = 120
WARMUP_TIMEOUT_S = 180  # the worker loads the model on its first reply


@dataclass(frozen=True)
class Workload:
    ttft_samples: int  # per path and round, one request at a time
    ttft_tokens: int
    concurrency: int
    new_tokens: int
    rounds: int


FULL = Workload(ttft_samples=12, ttft_tokens=16, concurrency=16, new_tokens=128, rounds=3)
QUICK = Workload(ttft_samples=3, ttft_tokens=4, concurrency=4, new_tokens=16, rounds=1)

# Greedy replies to these run past 128 tokens with SmolLM2-135M-Instruct; each (round, path) gets its own
# adjective, so no path's prompts are in the prefix cache of another's.
ADJECTIVES = ["brave", "lonely", "curious", "tiny", "clever", "forgetful", "grumpy", "cheerful", "quiet"]
SUBJECTS = [
    "lighthouse keeper", "dragon", "sailor", "robot", "baker", "astronaut", "gardener", "detective",
    "mountain climber", "cat", "pirate", "time traveller", "librarian", "violinist", "fox", "inventor",
]  # fmt: skip


class BenchTimeout(KeyboardInterrupt):
    """The run's deadline passed. A KeyboardInterrupt, so that it stops asyncio and threads' waits alike."""


@dataclass
class Result:
    name: str
    label: str
    samples: list[Any] = field(default_factory=list)  # serving_clients.Sample, one request at a time
    runs: list[Any] = field(default_factory=list)  # serving_clients.Aggregate per round
    cpu_ms_per_token: list[dict[str, float]] = field(default_factory=list)  # per round: process -> CPU ms/token
    skipped: str | None = None

    @property
    def ttft_p50_ms(self) -> float:
        return statistics.median(sample.ttft_s for sample in self.samples) * 1000

    @property
    def tok_s(self) -> float:
        return statistics.median(run.tok_s for run in self.runs)

    @property
    def cpu_per_token(self) -> dict[str, float]:
        """Median over rounds of each process's CPU milliseconds per streamed token in the concurrent runs."""
        names = self.cpu_ms_per_token[0] if self.cpu_ms_per_token else {}
        return {name: statistics.median(run[name] for run in self.cpu_ms_per_token) for name in names}

    @property
    def tokens_per_request(self) -> float:
        counts = [n for run in self.runs for n in run.per_request]
        return sum(counts) / len(counts)


@dataclass
class Fixtures:
    model: str  # the registry name /v1 requests use
    cookies: list[str]  # one signed-in user per WebSocket
    conversations: list[Iterator[str]]  # fresh conversations per user, one per chat request
    api_key: str


def log(message: str) -> None:
    print(f"[serving-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Main ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a .gguf file or HF folder (default: bundled SmolLM2-135M)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--quick", action="store_true", help="a small workload, to check that it runs")
    parser.add_argument("--timeout", type=int, default=540, help="seconds before it gives up and cleans up")
    args = parser.parse_args()
    work = QUICK if args.quick else FULL

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill cleans up like a Ctrl-C
    signal.signal(signal.SIGALRM, _deadline(args.timeout))
    signal.alarm(args.timeout)
    logs = Path(tempfile.mkdtemp(prefix="djinn-serving-bench-"))
    try:
        with contextlib.ExitStack() as cleanup:
            try:
                paths, meta = run(args, work, logs, cleanup)
            finally:
                signal.alarm(0)  # the clean-up runs to its end
                log("stopping the stack and dropping the scratch database")
    except stack.StackError as exc:
        print(f"serving bench: {exc}", file=sys.stderr)
        for name in ("uvicorn.log", "worker.log"):
            with contextlib.suppress(OSError):
                print(f"--- {logs / name}, last lines:\n{(logs / name).read_text()[-3000:]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        reason = str(exc) or "interrupted"
        print(f"serving bench: {reason}; everything it started is stopped (logs in {logs})", file=sys.stderr)
        return 130
    shutil.rmtree(logs, ignore_errors=True)
    print_report(paths, work, meta)
    return 0


def _deadline(timeout: int):  # -> signal handler
    def on_alarm(signum: int, frame: Any) -> None:
        raise BenchTimeout(f"the run took longer than {timeout} s")

    return on_alarm


def run(
    args: argparse.Namespace, work: Workload, logs: Path, cleanup: contextlib.ExitStack
) -> tuple[list[Result], dict[str, Any]]:
    started = time.monotonic()
    base_db = stack.base_database_url()
    db_name = f"djinn_bench_{os.getpid()}"
    scratch_db = stack.create_database(base_db, db_name)
    cleanup.callback(stack.drop_database, base_db, db_name)
    redis_url = stack.pick_redis_db(stack.base_redis_url())
    cleanup.callback(stack.flush_redis, redis_url)
    log(f"scratch database {db_name}, Redis {stack.redact(redis_url)}")

    env = {
        **os.environ,
        "DATABASE_URL": scratch_db,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "0",  # production settings, as deployed (no DEBUG query log)
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),  # shared: the web process reads the sessions made here
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJINN_MODEL": args.model or "default",
        "DJINN_DEVICE": args.device,
        "DJINN_WORKER_METRICS_PORT": "0",
        "LOG_LEVEL": "warning",
    }
    os.environ.update(env, DATABASE_POOL="0")  # this process's few queries need no pool; the servers have theirs
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    cleanup.callback(connections.close_all)
    call_command("migrate", verbosity=0, interactive=False)
    fixtures = seed(work)
    connections.close_all()
    log(f"migrated and seeded in {time.monotonic() - started:.0f} s; starting uvicorn and the worker")

    port = stack.free_port()
    web = stack.start_web(env, port, logs / "uvicorn.log")
    cleanup.callback(web.stop)
    worker_name = f"serving-bench-{os.getpid()}@{os.uname().nodename}"
    worker = stack.start_worker(env, worker_name, logs / "worker.log")
    cleanup.callback(worker.stop)

    from benchmarks import serving_clients  # imports torch: after the children are on their way
    from inference.engine import Engine
    from inference.engine.paths import resolve_model_path

    model_path = resolve_model_path(args.model)
    engine = Engine(model_path, device=args.device)
    cleanup.callback(engine.shutdown)
    log(f"engine loaded in this process ({model_path.name} on {engine.device}); waiting for the stack")

    from config.celery import app

    web.wait_until(lambda: stack.answers(f"http://127.0.0.1:{port}/healthz"), timeout=STACK_START_TIMEOUT_S)
    worker.wait_until(
        lambda: bool(app.control.ping(destination=[worker_name], timeout=0.5)), timeout=STACK_START_TIMEOUT_S
    )
    processes = {"bench": os.getpid(), "web": web.popen.pid, "worker": worker.popen.pid}
    redis_pid = stack.redis_pid(redis_url)
    if redis_pid is not None:
        processes["redis"] = redis_pid
    paths = asyncio.run(measure(serving_clients, engine, fixtures, port, work, processes))
    stages = websocket_stages(paths[1].samples)

    meta = {
        "model": model_path.name,
        "device": engine.device,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "seconds": round(time.monotonic() - started, 1),
        "websocket_ttft_stages_ms": stages,
        "scratch": {"database": db_name, "redis": stack.redact(redis_url), "worker": worker_name, "port": port},
    }
    return paths, meta


def seed(work: Workload) -> Fixtures:
    """Signed-in users (sessions written the way a login writes them), their conversations, and an API key."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    from accounts.billing import services as billing
    from accounts.models import User
    from accounts.services import api_key_create
    from conversations.models import Conversation
    from inference.registry import model_get

    model = model_get(None)
    session_store = import_module(settings.SESSION_ENGINE).SessionStore
    users = [User.objects.create_user(f"bench{i}@example.com") for i in range(work.concurrency)]
    unlimited = billing.plan_without_limits(slug="bench", name="Bench (no limits)")
    for user in users:
        billing.subscription_comp(user=user, plan=unlimited)
    cookies = []
    for user in users:
        session = session_store()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={session.session_key}")
    # Every chat request starts a conversation of its own (one reply at a time per conversation); titled
    # already, so finishing a reply enqueues no title generation beside the measured ones.
    warmups = 3  # see measure()
    per_user = math.ceil((warmups + work.rounds * work.ttft_samples) / len(users)) + work.rounds
    made = Conversation.objects.bulk_create(
        Conversation(owner=user, title="Benchmark", title_is_provisional=False, model=model.name)
        for user in users
        for _ in range(per_user)
    )
    conversations = [iter([str(c.pk) for c in made[i * per_user : (i + 1) * per_user]]) for i in range(len(users))]
    _api_key, key = api_key_create(user=users[0], name="serving bench")
    return Fixtures(model=model.name, cookies=cookies, conversations=conversations, api_key=key)


# Measuring ----------------------------------------------------------------------------------------


async def measure(
    clients: Any, engine: Any, fixtures: Fixtures, port: int, work: Workload, processes: dict[str, int]
) -> list[Result]:
    """Warm every path up, then in each round take the paths in turn (rotated from round to round): TTFT
    samples, then one concurrent run. Returns engine, WebSocket, SSE; the WebSocket's TTFT samples are kept
    (``Result.samples``) for the breakdown by stage. Each concurrent run also records the CPU time each of
    ``processes`` (name -> pid) spent per streamed token."""
    from inference.engine import SamplingParams

    results = {
        "engine": Result("engine", "engine (in-process)"),
        "websocket": Result("websocket", "WebSocket /ws/chat/"),
        "sse": Result("sse", "SSE /v1/chat/completions"),
    }
    numbers = itertools.count(101)  # every TTFT prompt is new to every prefix cache
    stories = _story_batches(work)
    short = {"temperature": 0, "max_tokens": work.ttft_tokens}
    long = {"temperature": 0, "max_tokens": work.new_tokens}
    engine_short = SamplingParams(temperature=0.0, max_tokens=work.ttft_tokens)
    engine_long = SamplingParams(temperature=0.0, max_tokens=work.new_tokens, ignore_eos=True)
    tabs = [await clients.ChatTab.open(port, cookie) for cookie in fixtures.cookies]
    next_tab = itertools.cycle(range(len(tabs)))

    def short_prompt() -> str:
        return f"Tell me one fact about the number {next(numbers)}."

    async def ws_chat(user: int, content: str, params: dict[str, Any]) -> Any:
        return await tabs[user].chat(next(fixtures.conversations[user]), content, params)

    async def sse_chat(content: str, params: dict[str, Any]) -> Any:
        body = {"model": fixtures.model, "messages": [{"role": "user", "content": content}], **params}
        return await clients.sse_completion(port, fixtures.api_key, body)

    one = {
        "engine": lambda: asyncio.to_thread(clients.engine_one, engine, short_prompt(), engine_short),
        "websocket": lambda: ws_chat(next(next_tab), short_prompt(), short),
        "sse": lambda: sse_chat(short_prompt(), short),
    }
    concurrent = {
        "engine": lambda contents: asyncio.to_thread(clients.engine_concurrent, engine, contents, engine_long),
        "websocket": lambda contents: asyncio.gather(*(ws_chat(u, text, long) for u, text in enumerate(contents))),
        "sse": lambda contents: asyncio.gather(*(sse_chat(text, long) for text in contents)),
    }
    try:
        log("warming up: the engine, then the worker (it loads the model on its first reply), then /v1")
        await one["engine"]()
        await asyncio.wait_for(one["websocket"](), WARMUP_TIMEOUT_S)
        results["sse"].skipped = await _v1_missing(port, fixtures.api_key)
        if results["sse"].skipped:
            log(f"skipping SSE: {results['sse'].skipped}")
        active = [name for name, result in results.items() if not result.skipped]
        for name in active:
            for _ in range(2):
                await one[name]()

        for round_ in range(work.rounds):
            order = active[round_ % len(active) :] + active[: round_ % len(active)]
            log(f"round {round_ + 1}/{work.rounds} ({', '.join(order)}): TTFT, then concurrent requests")
            for name in order:
                for _ in range(work.ttft_samples):
                    results[name].samples.append(await one[name]())
            for name in order:
                before = stack.cpu_seconds(processes)
                samples = await concurrent[name](next(stories))
                spent = stack.cpu_seconds(processes)
                results[name].runs.append(clients.aggregate(samples))
                tokens = results[name].runs[-1].tokens
                results[name].cpu_ms_per_token.append(
                    {process: (spent[process] - before[process]) * 1000 / tokens for process in processes}
                )
                log(f"  {name}: {results[name].runs[-1].tok_s:.1f} tok/s at {work.concurrency} concurrent")
    finally:
        for tab in tabs:
            await tab.close()
    return list(results.values())


def websocket_stages(samples: list[Any]) -> dict[str, float]:
    """Where a WebSocket TTFT goes, from what the server recorded of each reply: the message's created_at
    (written by the web process's message_send), its ttft_ms (the worker's, from created_at to its first
    delta), and its duration_ms and updated_at (the worker's, from taking the reply to its end, and that end).
    Medians, ms: web until the reply row exists; from there to the worker's first delta (commit, Celery, the
    task's reads, the engine), split at the worker taking the reply (commit and Celery; then the task's reads
    and the engine); from that delta to the browser (Redis stream, consumer, socket)."""
    from conversations.models import Message

    recorded = {
        str(pk): (created.timestamp(), ttft_ms / 1000, ended.timestamp() - duration_ms / 1000)
        for pk, created, ttft_ms, ended, duration_ms in Message.objects.filter(
            pk__in=[s.reply_id for s in samples]
        ).values_list("pk", "created_at", "ttft_ms", "updated_at", "duration_ms")
    }
    stages: dict[str, list[float]] = {
        "web_until_reply_row": [],
        "reply_row_to_worker_first_delta": [],
        "reply_row_to_worker_start": [],
        "worker_start_to_first_delta": [],
        "delta_to_client": [],
    }
    for sample in samples:
        created, worker_ttft, worker_start = recorded[sample.reply_id]
        stages["web_until_reply_row"].append(created - (sample.sent + sample.wall_offset))
        stages["reply_row_to_worker_first_delta"].append(worker_ttft)
        stages["reply_row_to_worker_start"].append(worker_start - created)
        stages["worker_start_to_first_delta"].append(created + worker_ttft - worker_start)
        stages["delta_to_client"].append(sample.first + sample.wall_offset - created - worker_ttft)
    return {name: round(statistics.median(values) * 1000, 1) for name, values in stages.items()}


def _story_batches(work: Workload) -> Iterator[list[str]]:
    """Batches of story prompts, each with its own adjective, so no batch finds another's in a prefix cache."""
    for adjective in itertools.cycle(ADJECTIVES):
        yield [
            f"Write a long story about a {adjective} {SUBJECTS[i % len(SUBJECTS)]}." for i in range(work.concurrency)
        ]


async def _v1_missing(port: int, key: str) -> str | None:
    """None when /v1 answers; else why the SSE path is skipped."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
        status = int((await reader.readline()).split()[1])
    finally:
        writer.close()
    return None if status == 200 else f"GET /v1/models answered {status}: the OpenAI-compatible API is not there yet"


# Report -------------------------------------------------------------------------------------------


def print_report(paths: list[Result], work: Workload, meta: dict[str, Any]) -> None:
    engine = paths[0]
    print(
        f"\nDjinn serving benchmark: {meta['model']} on {meta['device']}, {meta['cpus']} CPUs "
        f"(1-min load average at the end: {meta['load_avg_1m']}), {work.rounds} round(s), {meta['seconds']:.0f} s\n"
        f"TTFT: {work.ttft_samples * work.rounds} short chat prompts per path, one at a time. Aggregate: "
        f"{work.concurrency} concurrent x {work.new_tokens} new tokens, greedy; median over rounds.\n"
        f"Goals: TTFT p50 within {TTFT_GOAL_MS:g} ms of the engine's; aggregate within "
        f"{100 - RATIO_GOAL * 100:g}% of the engine's.\n"
    )
    header = (
        f"{'path':<26} {'TTFT p50 ms':>11} {'vs engine':>10} {'tok/s @' + str(work.concurrency):>10} "
        f"{'vs engine':>9} {'tokens/req':>10}  goals"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, Any] = {}
    for path in paths:
        if path.skipped:
            print(f"{path.label:<26} skipped: {path.skipped}")
            summary[path.name] = {"skipped": path.skipped}
            continue
        entry = {
            "ttft_p50_ms": round(path.ttft_p50_ms, 1),
            "ttft_samples": len(path.samples),
            "tok_s": round(path.tok_s, 1),
            "tok_s_runs": [round(run.tok_s, 1) for run in path.runs],
            "tokens_per_request": round(path.tokens_per_request, 1),
            "ignore_eos": path is engine,
        }
        if path is engine:
            print(
                f"{path.label:<26} {path.ttft_p50_ms:>11.1f} {'':>10} {path.tok_s:>10.1f} {'':>9} "
                f"{path.tokens_per_request:>10.1f}  (EOS ignored)"
            )
        else:
            delta = path.ttft_p50_ms - engine.ttft_p50_ms
            ratio = path.tok_s / engine.tok_s
            missed = [name for name, ok in (("TTFT", delta <= TTFT_GOAL_MS), ("tok/s", ratio >= RATIO_GOAL)) if not ok]
            entry.update(ttft_delta_ms=round(delta, 1), tok_s_ratio=round(ratio, 3), meets_goals=not missed)
            verdict = f"MISSED: {', '.join(missed)}" if missed else "met"
            print(
                f"{path.label:<26} {path.ttft_p50_ms:>11.1f} {delta:>+8.1f}ms {path.tok_s:>10.1f} {ratio:>9.3f} "
                f"{path.tokens_per_request:>10.1f}  {verdict}"
            )
        summary[path.name] = entry
    print_cpu(paths, summary)
    stages = meta["websocket_ttft_stages_ms"]
    print(
        f"\nWebSocket TTFT by stage (medians, from the reply's created_at and ttft_ms as the servers recorded them):\n"
        f"  web until the reply row exists {stages['web_until_reply_row']} ms; reply row to the worker's first delta "
        f"{stages['reply_row_to_worker_first_delta']} ms: to the worker taking it (commit, Celery) "
        f"{stages['reply_row_to_worker_start']} ms,\n  then the task's reads and the engine "
        f"{stages['worker_start_to_first_delta']} ms (engine alone {engine.ttft_p50_ms:.1f} ms); first delta to the "
        f"browser {stages['delta_to_client']} ms"
    )
    print("\n" + json.dumps({"serving_bench": {**meta, "workload": work.__dict__, **summary}}))


def print_cpu(paths: list[Result], summary: dict[str, Any]) -> None:
    """CPU milliseconds per streamed token, by process, in the concurrent runs. The engine path runs in the
    bench process (engine and its readers), the others in the worker (engine, task threads, stream writes)
    and the web process; the bench process is then only their clients. Redis is the whole server's (other
    databases' clients included)."""
    measured = [path for path in paths if not path.skipped and path.cpu_ms_per_token]
    if not measured:
        return
    names = list(measured[0].cpu_per_token)
    print("\nCPU ms per streamed token in the concurrent runs (median of rounds), by process:")
    header = f"{'path':<26} " + " ".join(f"{name:>8}" for name in names) + f" {'total':>8}"
    print(header)
    print("-" * len(header))
    for path in measured:
        cpu = path.cpu_per_token
        print(f"{path.label:<26} " + " ".join(f"{cpu[name]:>8.2f}" for name in names) + f" {sum(cpu.values()):>8.2f}")
        summary[path.name]["cpu_ms_per_token"] = {name: round(value, 3) for name, value in cpu.items()}


if __name__ == "__main__":
    sys.exit(main())
