"""The fault suite's scenarios. Each one drives the running stack (chaos.stack) with real clients
(chaos.clients) while it breaks something, then checks what must hold and returns a Result: its figures and
the violations found (none, when Djinn kept its promises).

Every loop here is bounded in count and in time; every address is loopback.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos import clients
from chaos.clients import Followed, http
from chaos.stack import STALE_AFTER_S, SWEEP_INTERVAL_S, VISIBILITY_TIMEOUT_S, ChaosStack

DEADLINE_S = 90  # every wait for the stack to settle gives up after this long (and says so)
V1_LONG = 12_000  # tokens: a completion the tiny model takes longer to write than a lapsed lease takes to notice


@dataclass
class Account:
    index: int
    user_id: int
    email: str
    password: str
    cookie: str  # "sessionid=..."
    key: str  # the API key, in clear (only the client and this process ever hold it)


@dataclass
class Result:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, condition: bool, violation: str) -> None:
        if not condition:
            self.violations.append(violation)

    def line(self) -> str:
        figures = " ".join(f"{name}={value}" for name, value in self.figures.items())
        verdict = "ok  " if not self.violations else "FAIL"
        text = f"{verdict} {self.name:<22} {self.seconds:6.1f}s  {figures}  violations={len(self.violations)}"
        return text + "".join(f"\n       - {violation}" for violation in self.violations[:10])


@dataclass
class Suite:
    stack: ChaosStack
    accounts: list[Account]
    short: bool
    rng: random.Random = field(default_factory=lambda: random.Random(1234))
    secrets_in_clear: list[str] = field(default_factory=list)  # must never appear in the database or the logs
    v1_prompts: list[str] = field(default_factory=list)  # /v1 prompt texts: kept nowhere, logged nowhere

    @property
    def port(self) -> int:
        return self.stack.port

    def size(self, full: int, short: int) -> int:
        return short if self.short else full

    def params(self, max_tokens: int) -> dict[str, Any]:
        return {"temperature": 0, "max_tokens": max_tokens}

    def content(self, account: Account, kind: str) -> str:
        marker = f"prompt-{uuid.uuid4().hex[:12]}"
        if kind == "v1":
            self.v1_prompts.append(marker)
        return f"Tell me a story about {marker} for user {account.index}."

    async def chat(self, kind: str, account: Account, max_tokens: int, *, leave_after: int | None = None) -> Followed:
        content = self.content(account, kind)
        if kind == "ws":
            return await clients.ws_chat(
                self.port, account.cookie, account.index, content, self.params(max_tokens), leave_after=leave_after
            )
        if kind == "sse":
            return await clients.sse_chat(
                self.port, account.key, account.index, content, self.params(max_tokens), leave_after=leave_after
            )
        return await clients.v1_chat(
            self.port, account.key, account.index, content, self.params(max_tokens), leave_after=leave_after
        )


# -- helpers -------------------------------------------------------------------------------------------


def run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def wait(predicate: Callable[[], Any], *, timeout: float = DEADLINE_S, interval: float = 0.25) -> Any:
    """Poll until truthy; the last (falsy) value when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def unfinished_replies() -> int:
    from conversations.models import Message

    return Message.objects.filter(status__in=[Message.Status.QUEUED, Message.Status.RUNNING]).count()


def generation_uuid(followed: Followed) -> str | None:
    if followed.generation_id is None:
        return None
    return str(uuid.UUID(followed.generation_id))


def stream_events(generation_id: str) -> list[dict[str, Any]]:
    from inference import streams

    return streams.read_events(generation_id, after=0)


def check_followed(result: Result, followed: list[Followed]) -> None:
    """What every client must have seen: only its own generation's events, in order, no gap, no duplicate,
    and an end (unless it left on purpose)."""
    foreign = sum(len(f.foreign) for f in followed)
    result.figures["events"] = sum(len(f.seqs) for f in followed)
    result.figures["foreign_events"] = foreign
    result.check(foreign == 0, f"{foreign} events reached a client that does not own their generation")
    for f in followed:
        if f.gaps or f.duplicates:
            result.violations.append(f"{f.kind} {f.generation_id}: {f.gaps} gaps, {f.duplicates} duplicates")
    # A message whose sending failed outright (the connection dropped before the turn was made, a 503) is
    # not lost: the page puts it back in the composer; the scenario checks no reply of it is left hanging.
    unsent = [f for f in followed if f.generation_id is None]
    result.figures["unsent"] = len(unsent)
    ended = [f for f in followed if not f.left and f.generation_id is not None]
    no_end = [f for f in ended if f.terminal is None]
    result.check(not no_end, f"{len(no_end)} clients never got an end: {[(f.kind, f.errors[-1:]) for f in no_end[:3]]}")


def check_owners(result: Result, followed: list[Followed], accounts: list[Account]) -> None:
    """Each generation a client followed belongs to that client's user, in the database."""
    from accounts.models import UsageRecord
    from conversations.models import Message

    wrong = 0
    for f in followed:
        generation = generation_uuid(f)
        if generation is None:
            continue
        owner = accounts[f.owner].user_id
        if f.kind in ("ws", "sse"):
            wrong += not Message.objects.filter(pk=generation, conversation__owner_id=owner).exists()
        else:
            wrong += UsageRecord.objects.filter(generation_id=generation).exclude(user_id=owner).exists()
    result.check(wrong == 0, f"{wrong} generations belong to someone else than the user who followed them")


def check_ledger(result: Result, generations: list[str]) -> None:
    """One usage record per generation that ended (completed or cancelled), equal to the tokens its stream or
    its row says it made; none for a failed one, but a completion whose worker died is charged for what it
    streamed; never two."""
    from django.db.models import Count

    from accounts.models import UsageRecord
    from conversations.generations import COMPLETION_ORPHANED as ORPHANED
    from conversations.models import Message

    mismatches = []
    records = {str(r.generation_id): r for r in UsageRecord.objects.filter(generation_id__in=generations)}
    duplicates = UsageRecord.objects.values("generation_id").annotate(n=Count("id")).filter(n__gt=1).count()
    messages = {str(m.pk): m for m in Message.objects.filter(pk__in=generations)}
    for generation in generations:
        record = records.get(generation)
        message = messages.get(generation)
        if message is not None:
            charged = message.status in (Message.Status.COMPLETED, Message.Status.CANCELLED)
            if charged and (record is None or record.completion_tokens != message.completion_tokens):
                charged_tokens = record and record.completion_tokens
                mismatches.append(
                    f"reply {generation} ({message.status}): {charged_tokens} charged, {message.completion_tokens} made"
                )
            elif not charged and record is not None:
                mismatches.append(f"reply {generation} ({message.status}) charged {record.completion_tokens}")
            continue
        events = stream_events(generation)
        done = [e for e in events if e["type"] == "done"]
        if done and done[-1]["usage"]:
            made = done[-1]["usage"]["completion_tokens"]
            if record is None or record.completion_tokens != made:
                mismatches.append(
                    f"completion {generation}: {record and record.completion_tokens} charged, {made} made"
                )
        elif any(e["type"] == "error" for e in events) or (events and not done):
            # Failed: charged nothing, unless its worker died mid-way (orphaned, or no end written): then
            # charged for what it streamed, the tokens its last delta counted.
            deltas = [e for e in events if e["type"] == "delta"]
            orphaned = not any(e["type"] == "error" for e in events) or events[-1].get("message") == ORPHANED
            streamed = int(deltas[-1].get("tokens") or 0) if deltas and orphaned else 0
            charged = record.completion_tokens if record is not None else 0
            if charged != streamed:
                mismatches.append(f"failed completion {generation} charged {charged}, streamed {streamed}")
    result.figures["ledger_checked"] = len(generations)
    result.figures["ledger_mismatches"] = len(mismatches) + duplicates
    result.violations += mismatches[:10]
    result.check(duplicates == 0, f"{duplicates} generations charged twice")


def check_reservations(result: Result, accounts: list[Account]) -> None:
    """Once every generation has ended, no user holds a plan reservation any more: settled or released by the
    worker, or (its worker killed) dropped once its claim's grace ran out with no heartbeat."""
    from accounts.billing import quotas
    from inference import streams

    def left() -> int:
        return sum(len(quotas.held(user_id=a.user_id, alive_key=streams.heartbeat_key("{id}"))) for a in accounts)

    wait(lambda: left() == 0, timeout=quotas.CLAIM_GRACE_S + 15)
    result.figures["reservations_left"] = left()
    result.check(result.figures["reservations_left"] == 0, f"{result.figures['reservations_left']} reservations held")


def check_text_kept(result: Result, followed: list[Followed]) -> None:
    """A chat client that followed its reply to the end saw exactly the text saved for it."""
    from conversations.models import Message

    lost = 0
    for f in followed:
        if f.kind == "v1" or f.left or f.terminal is None or f.generation_id is None:
            continue
        message = Message.objects.filter(pk=f.generation_id).first()
        if message is None or message.content != f.text:
            lost += 1
            if lost <= 3:
                saved = None if message is None else (message.status, len(message.content))
                result.violations.append(f"{f.kind} {f.generation_id}: streamed {len(f.text)} chars, saved {saved}")
    result.figures["text_mismatches"] = lost


def settle(result: Result) -> None:
    """Wait for every reply to end (the sweeper fails orphans): none may stay queued or running."""
    stuck = wait(lambda: unfinished_replies() == 0, timeout=DEADLINE_S) or unfinished_replies()
    result.figures["stuck"] = 0 if stuck is True else stuck
    result.check(stuck is True, f"{stuck} replies still queued or running {DEADLINE_S} s after the scenario")


# -- 1. cross-talk ---------------------------------------------------------------------------------------


def cross_talk(suite: Suite) -> Result:
    """Many concurrent streamed chats from many users over all three paths, a third of the clients leaving at
    random moments, Redis behind a proxy that delays every packet at random."""
    result = Result("1 no cross-talk")
    count = suite.size(300, 30)
    users = suite.accounts[: suite.size(30, 6)]
    assert suite.stack.redis is not None
    suite.stack.redis.delay(0.0, jitter=0.01)
    kinds = ["ws", "sse", "v1"]

    async def everyone() -> list[Followed]:
        jobs = []
        for i in range(count):
            leave = suite.rng.randint(1, 12) if suite.rng.random() < 0.3 else None
            jobs.append(suite.chat(kinds[i % 3], users[i % len(users)], suite.rng.randint(8, 40), leave_after=leave))
        return await asyncio.gather(*jobs)

    try:
        followed = run_async(everyone())
    finally:
        suite.stack.redis.delay(0.0)
    result.figures.update(requests=count, users=len(users), left=sum(f.left for f in followed))
    check_followed(result, followed)
    unsent = [f.errors[-1:] for f in followed if f.generation_id is None]
    result.check(not unsent, f"{len(unsent)} messages could not be sent, with no fault: {unsent[:3]}")
    settle(result)
    check_owners(result, followed, suite.accounts)
    check_text_kept(result, followed)
    generations = [g for g in (generation_uuid(f) for f in followed) if g]
    wait(lambda: _completions_ended(followed), timeout=30)
    check_ledger(result, generations)
    check_reservations(result, suite.accounts)
    return result


def _completions_ended(followed: list[Followed]) -> bool:
    from inference import streams

    for f in followed:
        generation = generation_uuid(f)
        if (
            f.kind == "v1"
            and generation
            and not any(e["type"] in streams.TERMINAL_TYPES for e in stream_events(generation))
        ):
            return False
    return True


# -- 2. worker SIGKILL -------------------------------------------------------------------------------


def worker_kill(suite: Suite) -> Result:
    """SIGKILL an inference worker mid-generation, several times; then a reply that kills its worker every time."""
    result = Result("2 worker SIGKILL")
    rounds = suite.size(3, 1)
    followed_all: list[Followed] = []
    worst_s = 0.0
    for round_number in range(rounds):

        async def round_(round_number: int = round_number) -> tuple[list[Followed], float]:
            jobs = [
                asyncio.ensure_future(suite.chat(["ws", "sse", "v1"][i % 3], suite.accounts[i % 6], 300))
                for i in range(suite.size(12, 6))
            ]
            await asyncio.sleep(0.5)
            await _until(lambda: _running_replies() >= 2, timeout=30)
            killed_at = time.monotonic()
            suite.stack.kill_inference(round_number % 2)
            suite.stack.start_inference(round_number % 2)
            done = await asyncio.gather(*jobs)
            return done, killed_at

        followed, killed_at = run_async(round_())
        followed_all += followed
        # The replies the kill took: how long after it each one ended (with its reason) for its client.
        ended = [f.ended_at for f in followed if f.ended_at and _failed(f)]
        worst_s = max(worst_s, max(ended) - killed_at if ended else 0.0)
        suite.stack.wait_ready()
    check_followed(result, followed_all)
    failed = [f for f in followed_all if _failed(f)]
    result.figures.update(kills=rounds, requests=len(followed_all), failed=len(failed), worst_end_s=round(worst_s, 1))
    # A reply whose worker died ends (failed, with a reason) once it is seen stale by the sweeper.
    bound = STALE_AFTER_S + 2 * SWEEP_INTERVAL_S + 15
    result.check(worst_s <= bound, f"a reply took {worst_s:.0f} s to end after its worker died (bound {bound} s)")
    settle(result)
    check_text_kept(result, followed_all)
    check_one_end_each(result, [g for g in (generation_uuid(f) for f in followed_all) if g])
    check_ledger(result, [g for g in (generation_uuid(f) for f in followed_all) if g])
    check_reservations(result, suite.accounts)
    _poison_pill(suite, result)
    return result


def _failed(followed: Followed) -> bool:
    terminal = followed.terminal or {}
    return terminal.get("type") in ("generation.error", "error") or "error" in terminal


def check_one_end_each(result: Result, generations: list[str]) -> None:
    from inference import streams

    twice = [g for g in generations if sum(e["type"] in streams.TERMINAL_TYPES for e in stream_events(g)) > 1]
    result.check(not twice, f"{len(twice)} streams have two ends (a reply written twice): {twice[:3]}")


def _replies_since(since: Any) -> int:
    from conversations.models import Message

    return Message.objects.filter(role=Message.Role.ASSISTANT, created_at__gte=since).count()


def _running_replies() -> int:
    from conversations.models import Message

    return Message.objects.filter(status=Message.Status.RUNNING).count()


async def _until(predicate: Callable[[], bool], *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def _poison_pill(suite: Suite, result: Result) -> None:
    """A reply that kills whichever worker takes it, every time it is delivered: it must end failed, after a
    bounded number of deliveries, and the workers must go on serving others."""
    from django.utils import timezone

    from conversations.models import Message

    account = suite.accounts[0]
    since = timezone.now()

    async def poisoned() -> Followed:
        return await suite.chat("sse", account, 300)

    async def scenario() -> tuple[Followed, int]:
        job = asyncio.ensure_future(poisoned())
        kills = 0
        deadline = time.monotonic() + STALE_AFTER_S + VISIBILITY_TIMEOUT_S * 3 + 30
        reply_id = None
        while not job.done() and time.monotonic() < deadline:
            reply_id = reply_id or _newest_reply_of(account.user_id, since)
            if (
                reply_id
                and Message.objects.filter(
                    pk=reply_id, status=Message.Status.RUNNING, heartbeat_at__isnull=False
                ).exists()
                and kills == 0
            ):
                for index in range(2):
                    suite.stack.kill_inference(index)
                    suite.stack.start_inference(index)
                kills += 1
            await asyncio.sleep(0.2)
        return await asyncio.wait_for(job, timeout=30), kills

    followed, kills = run_async(scenario())
    suite.stack.wait_ready()
    reply = Message.objects.filter(pk=followed.generation_id).first() if followed.generation_id else None
    result.figures["poison_kills"] = kills
    result.check(
        reply is not None and reply.status == Message.Status.FAILED, f"the poison reply ended {reply and reply.status}"
    )
    # Long after its task was due to come back, it was not run again.
    time.sleep(min(VISIBILITY_TIMEOUT_S + 5, 30))
    reply = Message.objects.filter(pk=followed.generation_id).first() if followed.generation_id else None
    result.check(reply is not None and reply.status == Message.Status.FAILED, "the poison reply was run again")
    after = run_async(suite.chat("ws", suite.accounts[1], 8))
    result.check(
        after.terminal is not None and after.terminal.get("type") == "generation.done", "the workers stopped serving"
    )


def _newest_reply_of(user_id: int, since: Any) -> str | None:
    from conversations.models import Message

    pk = (
        Message.objects.filter(conversation__owner_id=user_id, role=Message.Role.ASSISTANT, created_at__gte=since)
        .order_by("-created_at")
        .values_list("pk", flat=True)
        .first()
    )
    return str(pk) if pk else None


# -- 3. Redis restarted --------------------------------------------------------------------------------


def redis_restart(suite: Suite) -> Result:
    """Redis killed and started again mid-stream (its append-only file keeps the queues and streams)."""
    result = Result("3 Redis restarted")
    count = suite.size(12, 6)

    async def scenario() -> tuple[list[Followed], float, float]:
        jobs = [
            asyncio.ensure_future(suite.chat(["ws", "sse", "v1"][i % 3], suite.accounts[i % 6], 200))
            for i in range(count)
        ]
        await _until(lambda: _running_replies() >= 2, timeout=30)
        suite.stack.redis_server.kill()
        await asyncio.sleep(1.0)
        suite.stack.redis_server.start()
        back_at = time.monotonic()
        recovered_at = await _first_success(suite, deadline_s=30)
        done = await asyncio.gather(*jobs)
        return done, back_at, recovered_at

    followed, back_at, recovered_at = run_async(scenario())
    recovery_s = recovered_at - back_at
    result.figures.update(requests=count, recovery_s=round(recovery_s, 1))
    result.check(recovery_s <= 10, f"a new completion first worked {recovery_s:.1f} s after Redis was back (goal 10 s)")
    check_followed(result, followed)
    statuses = run_async(_probe_statuses(suite, 20))
    errors = [s for s in statuses if s >= 500]
    result.figures["5xx_after"] = len(errors)
    result.check(not errors, f"{len(errors)} answers of 500 or more after the recovery")
    settle(result)
    return result


async def _first_success(suite: Suite, *, deadline_s: float) -> float:
    """When a fresh /v1 completion first succeeds end to end (monotonic)."""
    deadline = time.monotonic() + deadline_s
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 2}
    while time.monotonic() < deadline:
        try:
            status, _h, _b = await http(
                suite.port,
                "POST",
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {suite.accounts[2].key}"},
                body=body,
                timeout=10,
            )
            if status == 200:
                return time.monotonic()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        await asyncio.sleep(0.2)
    return time.monotonic() + 999


async def _probe_statuses(suite: Suite, count: int) -> list[int]:
    account = suite.accounts[3]
    probes = [
        ("GET", "/api/v1/conversations", {"Authorization": f"Bearer {account.key}"}),
        ("GET", "/v1/models", {"Authorization": f"Bearer {account.key}"}),
        ("GET", "/", {"Cookie": account.cookie}),
        ("GET", "/readyz", {}),
    ]
    statuses = []
    for i in range(count):
        method, path, headers = probes[i % len(probes)]
        statuses.append((await http(suite.port, method, path, headers=headers))[0])
    return statuses


# -- 4. PostgreSQL unreachable ---------------------------------------------------------------------------


def postgres_outage(suite: Suite) -> Result:
    """PostgreSQL out of reach for 10 s (connections refused, open ones cut) while replies stream."""
    from conversations.models import Conversation

    result = Result("4 PostgreSQL away 10s")
    before = set(Conversation.objects.values_list("pk", flat=True))
    assert suite.stack.pg is not None

    async def scenario() -> tuple[list[Followed], list[tuple[float, int, bytes]], float]:
        jobs = [
            asyncio.ensure_future(suite.chat(["ws", "sse"][i % 2], suite.accounts[i % 6], 300))
            for i in range(suite.size(8, 4))
        ]
        await _until(lambda: _running_replies() >= 2, timeout=30)
        suite.stack.pg.refuse(True)
        probes: list[tuple[float, int, bytes]] = []
        outage_ends = time.monotonic() + 10
        account = suite.accounts[4]
        kinds = (
            ("GET", "/api/v1/conversations", {"Authorization": f"Bearer {account.key}"}),
            ("GET", "/v1/models", {"Authorization": f"Bearer {account.key}"}),
            ("GET", "/", {"Cookie": account.cookie}),
            ("GET", "/readyz", {}),
        )

        async def probe(method: str, path: str, headers: dict[str, str]) -> tuple[float, int, bytes]:
            started = time.monotonic()
            status, _headers, body = await http(suite.port, method, path, headers=headers, timeout=30)
            return time.monotonic() - started, status, body

        while time.monotonic() < outage_ends - 2.5:  # every probe answered before the outage ends
            probes += await asyncio.gather(*(probe(*kind) for kind in kinds))
            await asyncio.sleep(0.25)
        suite.stack.pg.refuse(False)
        back_at = time.monotonic()
        while (await http(suite.port, "GET", "/readyz"))[0] != 200 and time.monotonic() - back_at < 30:
            await asyncio.sleep(0.2)
        green_s = time.monotonic() - back_at
        return await asyncio.gather(*jobs), probes, green_s

    followed, probes, green_s = run_async(scenario())
    slowest = max(seconds for seconds, _status, _body in probes)
    statuses = sorted({status for _seconds, status, _body in probes})
    clear = (b"service_unavailable", b"unreachable", b"back in a moment")  # JSON codes, /readyz, the page
    unclear = [body for _s, status, body in probes if status == 503 and not any(word in body for word in clear)]
    result.figures.update(
        probes=len(probes), statuses=statuses, slowest_s=round(slowest, 2), green_after_s=round(green_s, 1)
    )
    result.check(statuses == [503], f"requests during the outage answered {statuses}, not only 503")
    result.check(slowest <= 2.0, f"a request took {slowest:.1f} s to fail (goal: within 2 s)")
    result.check(not unclear, f"{len(unclear)} 503s without a clear body")
    result.check(green_s <= 10, f"/readyz took {green_s:.1f} s to turn green")
    after = set(Conversation.objects.values_list("pk", flat=True))
    result.check(before <= after, f"{len(before - after)} conversations committed before the fault are gone")
    check_followed(result, followed)
    settle(result)
    check_text_kept(result, followed)
    return result


# -- 5. web process restarted --------------------------------------------------------------------------


def web_restart(suite: Suite) -> Result:
    """uvicorn stopped with SIGTERM, then with SIGKILL, while WebSocket, REST SSE and /v1 clients stream."""
    from inference import streams

    result = Result("5 web restarted")
    followed_all: list[Followed] = []
    stopped_v1: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGKILL):

        async def scenario(sig: signal.Signals = sig) -> list[Followed]:
            from django.utils import timezone

            count = suite.size(6, 3)
            since = timezone.now()
            # Chats long enough to be cut mid-reply; completions long enough to outlast their lease.
            jobs = [
                asyncio.ensure_future(suite.chat(kind, suite.accounts[i], V1_LONG if kind == "v1" else 400))
                for i in range(count)
                for kind in ("ws", "sse", "v1")
            ]
            # Every chat's turn made (the restart is about streams in progress, not messages being sent).
            turns_made = await _until(lambda: _replies_since(since) >= 2 * count, timeout=60)
            result.check(turns_made, f"only {_replies_since(since)} of {2 * count} chats got a turn before the restart")
            await _until(lambda: _running_replies() >= 2, timeout=30)
            await asyncio.sleep(0.3)
            await asyncio.get_running_loop().run_in_executor(None, suite.stack.restart_web, sig)
            return await asyncio.gather(*jobs)

        followed = run_async(scenario())
        followed_all += followed
        for f in followed:
            if f.kind == "v1" and f.generation_id and f.terminal is None:
                stopped_v1.append(str(uuid.UUID(f.generation_id)))
    chats = [f for f in followed_all if f.kind != "v1"]
    resumed = sum(f.reconnects > 0 for f in chats)
    result.figures.update(restarts=2, chats=len(chats), resumed=resumed)
    check_followed(result, chats)
    unsent = [f.errors[-1:] for f in chats if f.generation_id is None]
    result.check(not unsent, f"{len(unsent)} chats got no turn: {unsent[:3]}")
    settle(result)
    check_text_kept(result, chats)

    def v1_ended() -> bool:
        return all(any(e["type"] in streams.TERMINAL_TYPES for e in stream_events(g)) for g in stopped_v1)

    wait(v1_ended, timeout=streams.LEASE_TTL_S + 20)
    not_stopped = []
    for generation in stopped_v1:
        ends = [e for e in stream_events(generation) if e["type"] in streams.TERMINAL_TYPES]
        end = ends[-1] if ends else {}
        cancelled = end.get("type") == "done" and end.get("finish_reason") == "cancelled"
        if cancelled and end["usage"]["completion_tokens"] < V1_LONG:
            continue  # stopped mid-way, charged for what it made
        if end.get("type") == "error" and end.get("code") == "reader_gone":
            continue  # dropped before it started: its client was gone by then
        not_stopped.append((end.get("type"), end.get("finish_reason") or end.get("code")))
    result.figures.update(orphaned_v1=len(stopped_v1), v1_not_stopped=len(not_stopped))
    result.check(
        not not_stopped, f"{len(not_stopped)} /v1 generations whose client was gone were not stopped: {not_stopped[:3]}"
    )
    return result


# -- 6. slow readers -------------------------------------------------------------------------------------


def slow_readers(suite: Suite) -> Result:
    """Clients reading their reply one byte a second beside users chatting: the others are not slowed, the
    database pool (smaller than the number of slow readers) is not drained, and each slow reader still gets its
    whole reply. The others are timed alone, then once every slow reader's reply is written (so that what is
    compared is the slow reading, not the model writing their replies)."""
    from conversations.models import Message

    result = Result("6 slow readers")
    count = suite.size(50, 20)
    slow_s = suite.size(30, 12)

    async def others() -> tuple[float, int]:
        started = time.monotonic()
        chats = await asyncio.gather(*(suite.chat("ws", suite.accounts[i % 6], 32) for i in range(6)))
        ok_pages = 0
        for _ in range(10):
            headers = {"Authorization": f"Bearer {suite.accounts[5].key}"}
            status, _h, _b = await http(suite.port, "GET", "/api/v1/conversations", headers=headers)
            ok_pages += status == 200
        done = all(f.terminal is not None for f in chats)
        return (time.monotonic() - started) if done else float("inf"), ok_pages

    def written(generations: list[str]) -> bool:
        return (
            len(generations) == count
            and not Message.objects.filter(
                pk__in=generations, status__in=[Message.Status.QUEUED, Message.Status.RUNNING]
            ).exists()
        )

    async def scenario() -> tuple[float, float, int, bool, list[tuple[str, str]]]:
        alone, _pages = await others()
        generations: list[str] = []
        readers = [
            asyncio.ensure_future(_slow_reader(suite, suite.accounts[i % 6], slow_s, generations)) for i in range(count)
        ]
        await _until(lambda: written(generations), timeout=slow_s)
        still_slow = not any(reader.done() for reader in readers)
        beside, pages = await others()
        return alone, beside, pages, still_slow, await asyncio.gather(*readers)

    alone, beside, pages, still_slow, read = run_async(scenario())
    incomplete = 0
    for generation, text in read:
        message = Message.objects.filter(pk=generation).first() if generation else None
        incomplete += message is None or message.content != text
    ratio = beside / alone if alone else float("inf")
    result.figures.update(
        slow_readers=count,
        db_pool=suite.stack.env.get("DATABASE_POOL_MAX_SIZE"),
        seconds_slow=slow_s,
        others_alone_s=round(alone, 2),
        others_beside_s=round(beside, 2),
        ratio=round(ratio, 2),
        pages_ok=f"{pages}/10",
    )
    result.check(still_slow, "the slow readers' replies took longer to write than the slow phase lasted")
    result.check(incomplete == 0, f"{incomplete} slow readers did not get their whole reply")
    result.check(pages == 10, f"only {pages} of 10 page requests answered beside the slow readers")
    result.check(ratio <= 3, f"other users were {ratio:.1f}x slower beside the slow readers")
    return result


async def _slow_reader(suite: Suite, account: Account, slow_s: int, generations: list[str]) -> tuple[str, str]:
    """POST a conversation, then read its reply's events through a tiny receive buffer, one byte a second for
    ``slow_s`` seconds, then the rest at full speed; (reply id, its text)."""
    status, _headers, body = await http(
        suite.port,
        "POST",
        "/api/v1/conversations",
        headers={"Authorization": f"Bearer {account.key}"},
        body={"content": suite.content(account, "sse"), "params": suite.params(200)},
    )
    if status != 201:
        return "", ""
    generation = json.loads(body)["assistant_message"]["id"]
    generations.append(generation)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", suite.port))
    request = (
        f"GET /api/v1/generations/{generation}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {account.key}\r\nConnection: close\r\n\r\n"
    ).encode()
    await loop.sock_sendall(sock, request)
    data = b""
    slow_until = time.monotonic() + slow_s
    while time.monotonic() < slow_until:
        data += await loop.sock_recv(sock, 1)
        await asyncio.sleep(1.0)
    deadline = time.monotonic() + 60
    while not data.endswith(b"\r\n0\r\n\r\n") and time.monotonic() < deadline:  # to the stream's last chunk
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout=60)
        if not chunk:
            break
        data += chunk
    sock.close()
    data = _dechunk(data.split(b"\r\n\r\n", 1)[1]) if b"\r\n\r\n" in data else b""
    text = "".join(
        event["text"]
        for event in (
            json.loads(line[6:]) for line in data.decode(errors="replace").splitlines() if line.startswith("data: ")
        )
        if event.get("type") == "delta"
    )
    return generation, text


def _dechunk(body: bytes) -> bytes:
    """A chunked HTTP body's content (as far as it goes)."""
    content = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            break
        if size == 0:
            break
        content += rest[:size]
        body = rest[size + 2 :]
    return content


# -- 7. oversized and hostile input ----------------------------------------------------------------------

BIG_BODY_ROUTES = [
    ("POST", "/"),
    ("POST", "/accounts/login/"),
    ("POST", "/api/v1/conversations"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/admin/login/"),
    ("POST", "/api/v1/keys"),
    ("PUT", "/static/js/chat/main.js"),
    ("POST", "/no/such/route"),
]


def hostile_input(suite: Suite, model_path: Path) -> Result:
    result = Result("7 hostile input")
    # A 50 MB body: refused by its Content-Length before it is read, on every route.
    refused = [(path, _big_body(suite.port, method, path)) for method, path in BIG_BODY_ROUTES]
    not_413 = [(path, status) for path, (status, _s) in refused if status != 413]
    slowest = max(seconds for _path, (_status, seconds) in refused)
    result.figures.update(big_bodies=len(refused), slowest_413_s=round(slowest, 2))
    result.check(not not_413, f"a 50 MB body got {not_413}")
    # A prompt over the context: refused before any work.
    from conversations.models import Message

    messages_before = Message.objects.count()
    account = suite.accounts[0]
    long_prompt = "word " * 19_000  # past the model's context, within the message length limit
    v1 = run_async(
        http(
            suite.port,
            "POST",
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {account.key}"},
            body={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": long_prompt}]},
        )
    )
    rest = run_async(
        http(
            suite.port,
            "POST",
            "/api/v1/conversations",
            headers={"Authorization": f"Bearer {account.key}"},
            body={"content": long_prompt},
        )
    )
    result.check(v1[0] == 400 and b"context_length_exceeded" in v1[2], f"/v1 over the context answered {v1[0]}")
    result.check(
        rest[0] == 400 and b"context_length_exceeded" in rest[2], f"/api/v1 over the context answered {rest[0]}"
    )
    result.check(Message.objects.count() == messages_before, "a message over the context was stored or queued")
    # A WebSocket flood.
    flood = run_async(_flood(suite, account))
    result.figures.update(flood_frames=flood[0], flood_refused=flood[1], flood_close=flood[2])
    result.check(flood[1] > 0 and flood[2] == 4429, f"a WebSocket flood was not limited: {flood}")
    # A chat template that never finishes.
    seconds, status, body = _evil_template(suite, model_path, account)
    result.figures.update(template_status=status, template_s=round(seconds, 1))
    result.check(
        status == 400 and b"did not finish" in body, f"a never-ending chat template answered {status}: {body[:200]!r}"
    )
    result.check(seconds < 10, f"the never-ending chat template held the request {seconds:.0f} s")
    healthy = run_async(suite.chat("sse", suite.accounts[1], 8))
    result.check(healthy.terminal is not None, "Djinn stopped answering after the hostile input")
    return result


def _big_body(port: int, method: str, path: str) -> tuple[int, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
            + b"x" * 65536
        )
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, time.monotonic() - started


async def _flood(suite: Suite, account: Account) -> tuple[int, int, int]:
    sent = refused = 0
    close_code = 0
    try:
        async with clients._tab(suite.port, account.cookie) as tab:
            for _ in range(600):
                await tab.send(json.dumps({"type": "conversation.search", "query": ""}))
                sent += 1
            async for raw in tab:
                frame = json.loads(raw)
                refused += frame.get("code") == "rate_limited"
    except clients.ConnectionClosed as exc:
        close_code = exc.rcvd.code if exc.rcvd else 0
    return sent, refused, close_code


def _evil_template(suite: Suite, model_path: Path, account: Account) -> tuple[float, int, bytes]:
    import shutil

    from inference.models import LLMModel

    evil = suite.stack.logs / "evil-model"
    if not evil.exists():
        shutil.copytree(model_path, evil)
        config = json.loads((evil / "tokenizer_config.json").read_text())
        config["chat_template"] = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        (evil / "tokenizer_config.json").write_text(json.dumps(config))
    LLMModel.objects.update_or_create(
        name="evil", defaults={"display_name": "Evil", "source": str(evil), "enabled": True}
    )
    started = time.monotonic()
    status, _headers, body = run_async(
        http(
            suite.port,
            "POST",
            "/api/v1/conversations",
            headers={"Authorization": f"Bearer {account.key}"},
            body={"content": "Hi", "model": "evil"},
            timeout=60,
        )
    )
    seconds = time.monotonic() - started
    LLMModel.objects.filter(name="evil").update(enabled=False)
    return seconds, status, body


# -- 8. fuzzing ----------------------------------------------------------------------------------------


def fuzzing(suite: Suite) -> Result:
    """schemathesis over /api/v1 and /v1 with one user's key against the live stack; another user's objects
    must come out untouched, and reaching them by id must look exactly like an unknown id."""
    result = Result("8 fuzzing")
    # Two users no other scenario touches: Alice fuzzes with her key (and may revoke it, or delete her own
    # chats: that is hers to do); Bob has a conversation and a key of his own.
    alice, bob = suite.accounts[-2], suite.accounts[-1]
    run_async(suite.chat("sse", bob, 8))
    wait(lambda: not _provisional_titles(bob.user_id), timeout=30)  # the title task is done with it
    bob_before = _snapshot(bob.user_id)
    examples = suite.size(30, 5)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{suite.stack.url}/api/schema/?format=json",
        "--url",
        suite.stack.url,
        "-H",
        f"Authorization: Bearer {alice.key}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--include-path-regex",
        r"^/(api/)?v1/",
        "-n",
        str(examples),
        "--seed",
        "1234",
        "--request-timeout",
        "60",
        "--max-failures",
        "5",
        "--warnings",
        "off",
        "--report",
        "junit",
        "--report-dir",
        str(suite.stack.logs / "schemathesis"),
    ]
    started = time.monotonic()
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=suite.stack.env, cwd=suite.stack.logs
    )
    failures = [line for line in run.stdout.splitlines() if line.strip().startswith(("❌", "FAILED", "_"))][:5]
    result.figures.update(
        examples_per_operation=examples, schemathesis_s=round(time.monotonic() - started), exit=run.returncode
    )
    result.check(run.returncode == 0, f"schemathesis found problems: {failures or run.stdout[-800:]}")
    # Bob's things, reached with a fresh key of Alice's, answer exactly as unknown ids do.
    from accounts import services as account_services
    from accounts.models import User

    _row, fresh_key = account_services.api_key_create(user=User.objects.get(pk=alice.user_id), name="probe")
    suite.secrets_in_clear.append(fresh_key)
    probes = run_async(_cross_user_probes(suite, Account(alice.index, alice.user_id, "", "", "", fresh_key), bob))
    leaks = [probe for probe in probes if probe[1] != 404]
    result.figures["cross_user_probes"] = len(probes)
    result.check(not leaks, f"another user's objects were reachable: {leaks[:3]}")
    result.check(_snapshot(bob.user_id) == bob_before, "another user's objects changed during the fuzzing")
    return result


def _provisional_titles(user_id: int) -> bool:
    from conversations.models import Conversation

    return Conversation.objects.filter(owner_id=user_id, title_is_provisional=True).exists()


def _snapshot(user_id: int) -> list[Any]:
    from accounts.models import ApiKey
    from conversations.models import Conversation, Message

    return [
        list(
            Conversation.objects.filter(owner_id=user_id)
            .order_by("pk")
            .values_list("pk", "title", "archived", "pinned")
        ),
        list(
            Message.objects.filter(conversation__owner_id=user_id).order_by("pk").values_list("pk", "content", "status")
        ),
        list(ApiKey.objects.filter(user_id=user_id).order_by("pk").values_list("pk", "revoked_at")),
    ]


async def _cross_user_probes(suite: Suite, alice: Account, bob: Account) -> list[tuple[str, int]]:
    from conversations.models import Conversation, Message

    conversation = await asyncio.to_thread(lambda: Conversation.objects.filter(owner_id=bob.user_id).first())
    if conversation is None:
        return []
    reply = await asyncio.to_thread(lambda: Message.objects.filter(conversation=conversation, role="assistant").first())
    key_id = await asyncio.to_thread(lambda: _key_id(bob.user_id))
    headers = {"Authorization": f"Bearer {alice.key}"}
    probes = [
        ("GET", f"/api/v1/conversations/{conversation.pk}"),
        ("PATCH", f"/api/v1/conversations/{conversation.pk}"),
        ("DELETE", f"/api/v1/conversations/{conversation.pk}"),
        ("POST", f"/api/v1/conversations/{conversation.pk}/messages"),
        ("GET", f"/api/v1/generations/{reply.pk}/events" if reply else "/api/v1/generations/none/events"),
        ("POST", f"/api/v1/generations/{reply.pk}/cancel" if reply else "/api/v1/generations/none/cancel"),
        ("DELETE", f"/api/v1/keys/{key_id}"),
    ]
    answers = []
    for method, path in probes:
        body = {"content": "mine now"} if method in ("POST", "PATCH") else None
        status, _h, _b = await http(suite.port, method, path, headers=headers, body=body)
        answers.append((f"{method} {path}", status))
    return answers


def _key_id(user_id: int) -> int:
    from accounts.models import ApiKey

    return ApiKey.objects.filter(user_id=user_id).values_list("pk", flat=True).first() or 0


# -- 9. hardening --------------------------------------------------------------------------------------


def hardening(suite: Suite) -> Result:
    """No API key, password or /v1 prompt in clear in the database or the logs (chat prompts are kept, as
    conversations, but never logged); the security headers in production; ``check --deploy`` clean."""
    result = Result("9 hardening")
    dump = _database_text()
    logs = suite.stack.logs_text()
    secrets = suite.secrets_in_clear
    in_db = [secret[:10] for secret in secrets if secret in dump]
    in_logs = [secret[:10] for secret in secrets if secret in logs]
    v1_in_db = [prompt for prompt in suite.v1_prompts if prompt in dump]
    v1_in_logs = [prompt for prompt in suite.v1_prompts if prompt in logs]
    chat_prompts_logged = logs.count("Tell me a story about")
    result.figures.update(
        secrets=len(secrets), v1_prompts=len(suite.v1_prompts), db_chars=len(dump), log_chars=len(logs)
    )
    result.check(not in_db, f"{len(in_db)} keys or passwords in clear in the database")
    result.check(not in_logs, f"{len(in_logs)} keys or passwords in clear in the logs")
    result.check(not v1_in_db, f"{len(v1_in_db)} /v1 prompts stored in the database")
    result.check(not v1_in_logs, f"{len(v1_in_logs)} /v1 prompts in the logs")
    result.check(chat_prompts_logged == 0, f"chat prompt text appears {chat_prompts_logged} times in the logs")
    status, headers, _body = run_async(
        http(suite.port, "GET", "/accounts/login/", headers={"X-Forwarded-Proto": "https"})
    )
    policy = headers.get("content-security-policy", "")
    expected = {
        "content-security-policy": "script-src 'self'" in policy
        and "style-src 'self'" in policy
        and "unsafe" not in policy,
        "strict-transport-security": "max-age=" in headers.get("strict-transport-security", ""),
        "x-content-type-options": headers.get("x-content-type-options") == "nosniff",
        "x-frame-options": headers.get("x-frame-options") == "DENY",
        "referrer-policy": headers.get("referrer-policy") == "same-origin",
        "cross-origin-opener-policy": headers.get("cross-origin-opener-policy") == "same-origin",
    }
    missing = [name for name, present in expected.items() if not present]
    result.check(status == 200 and not missing, f"security headers missing or wrong: {missing}")
    # The production settings as deployed behind TLS (the stack itself serves plain HTTP on loopback).
    env = {**suite.stack.env, "DATABASE_URL": suite.stack.db_url, "REDIS_URL": suite.stack.redis_server.url}
    env.pop("DJANGO_SECURE_SSL_REDIRECT", None)
    check = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=str(Path(__file__).resolve().parents[1]),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result.figures["check_deploy"] = "clean" if check.returncode == 0 else "issues"
    result.check(check.returncode == 0, f"check --deploy: {check.stdout[-400:]}{check.stderr[-400:]}")
    return result


def _database_text() -> str:
    """Every row of every table of the scratch database, as text."""
    from django.db import connection

    parts = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in cursor.fetchall():
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{table}" AS t')
            parts += [row[0] for row in cursor.fetchall()]
    return "\n".join(parts)
