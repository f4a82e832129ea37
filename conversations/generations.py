"""The inference worker's side of a generation: how a chat reply or an API completion becomes text.

Both share one body, :class:`Generation`: claim, track it with the process's pump (``inference.pump``: from
then on its deltas, heartbeats, partial saves and cancel flags are the pump's), render the prompt, submit it
to the engine, wait for the end, then save the end and append the terminal event. Subclasses say where the
prompt comes from and what finishing or failing means for them: a Message row for a reply
(:class:`ReplyGeneration`), only the stream and a usage record for a completion
(:class:`CompletionGeneration`).

Status only moves forward (queued -> running -> completed | cancelled | failed), each step a guarded update,
so a redelivered task can never produce a second reply or a second charge. A reply found ``running`` whose
worker stopped heart-beating was left by a dead worker: it is failed with a clear reason (the user can
regenerate), never re-run, since its stream already holds what the dead worker streamed. The beat job
:func:`sweep_stale` does the same for replies no delivery comes back for. A task that dies before its
claim is delivered again at most DJINN_TASK_MAX_DELIVERIES times. A completion is claimed in Redis for as
long as the broker could deliver it again, and runs only while its reader still holds its lease.

Every generation that ends (completed, or cancelled with the tokens it made) writes one usage record, keyed
by its generation id; a failed one is not charged. Writes to PostgreSQL and Redis are retried for up to
DJINN_DB_RETRY_S / DJINN_REDIS_RETRY_S; when a reply still cannot be saved, its stream says so first and
its text is kept (in the row, or in the stream for the sweeper to save).

This module is what the tasks call; it imports nothing of the web side (services, views, tasks).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from django.utils.translation import gettext_noop

from accounts.models import UsageRecord
from accounts.usage import usage_record
from conversations import limits, prompts, selectors
from conversations.errors import ConversationError, InvalidInput
from conversations.models import Conversation, Message
from inference import metrics, runtime, streams
from inference.engine import Engine, EngineError, InvalidRequestError, RequestOutput, SamplingParams, TokenLogprob
from inference.faults import close_connections, retrying_db, retrying_redis
from inference.models import LLMModel
from inference.pump import Snapshot, Tracked, get_pump
from inference.redis import get_redis
from inference.registry import model_get

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A chat reply's reasons are kept in English and said in the reader's language (presenters, the WebSocket).
ORPHANED = gettext_noop("The worker writing this reply stopped. Regenerate to try again.")
NEVER_STARTED = gettext_noop("No worker took this reply in time. Regenerate to try again.")
INTERRUPTED = gettext_noop("This reply was interrupted because its worker shut down. Regenerate to try again.")
ENGINE_FAILED = gettext_noop("The model failed while writing this reply. Regenerate to try again.")
STREAM_LOST = gettext_noop(
    "This reply could not be delivered: the server lost its connection to Redis. Regenerate to try again."
)
GAVE_UP = "This reply stopped its worker {n} times, so it was given up. Regenerate to try again."
# A queued reply older than this (seconds) whose task was not sent (the broker was away when it was made) is
# sent by the sweeper. Far longer than the moment between a reply's commit and its task being sent.
REQUEUE_AFTER_S = 10

COMPLETION_ORPHANED = "The worker writing this completion stopped. Try again."
COMPLETION_ENGINE_FAILED = "The model failed while writing this completion. Try again."
COMPLETION_INTERRUPTED = "This completion was interrupted because its worker shut down. Try again."
COMPLETION_STREAM_LOST = "This completion could not be delivered: the server lost its connection to Redis. Try again."
READER_GONE = "Nobody is waiting for this completion any more."


def _db(func: Callable[[], T], what: str) -> T:
    return retrying_db(func, deadline_s=settings.DJINN_DB_RETRY_S, what=what)


class Generation(ABC):
    """The body every generation shares (see the module docstring)."""

    usage_source = UsageRecord.Source.CHAT
    leased = False  # stop it when its reader's lease lapses (a completion's client is gone)
    # What the user reads when the engine fails, when the worker shuts down mid-generation, when Redis is lost.
    engine_failed = ENGINE_FAILED
    interrupted = INTERRUPTED
    stream_lost = STREAM_LOST

    def __init__(self, generation_id: UUID, *, model_name: str, created_at: datetime) -> None:
        self.generation_id = generation_id
        self.id = str(generation_id)
        self.model_name = model_name
        self.created_at = created_at  # for the time to first token (queueing included)
        self.started = time.monotonic()
        self.tracked: Tracked | None = None

    # -- what subclasses provide ---------------------------------------------------------------------

    @abstractmethod
    def prompt(self, engine: Engine, model: LLMModel) -> tuple[list[int], SamplingParams]:
        """The prompt's token ids and the sampling parameters. Raises ConversationError when it cannot run."""

    @abstractmethod
    def end(self, status: str, finish_reason: str, final: RequestOutput | None) -> None:
        """The generation ended with ``status`` (completed or cancelled): save, record usage, append ``done``."""

    @abstractmethod
    def fail(self, reason: str, *, code: str = "generation_failed", final: RequestOutput | None = None) -> None:
        """The generation failed: ``reason`` is shown to the user. Append the ``error`` event, then save."""

    def save_hook(self) -> Callable[[list[Snapshot]], set[str]] | None:
        """What saves this kind's partial text and heartbeats (once per pump tick, for all of them)."""
        return None

    def taken_away(self, final: RequestOutput | None) -> None:
        """Someone else ended it while it ran (deleted, or failed by the sweeper): by default nothing to do."""
        return None

    def logprob_entries(self, output: RequestOutput) -> list[dict[str, Any]]:
        return []

    wants_logprobs = False

    # -- the shared body -----------------------------------------------------------------------------

    def run(self) -> None:
        pump = get_pump()
        try:
            try:
                self.tracked = pump.track(
                    self.id,
                    save=self.save_hook(),
                    logprobs=self.logprob_entries if self.wants_logprobs else None,
                    leased=self.leased,
                )
                if self._submit():
                    self.tracked.wait()
                    self._finish()
            except Exception:
                # The task's last line of defence: whatever broke, the generation must not stay "running".
                logger.exception("Generation %s crashed", self.id, extra={"generation_id": self.id})
                if self.tracked is not None:
                    self.tracked._abort()
                self.fail(self.engine_failed)
                raise
        finally:
            if self.tracked is not None:
                pump.untrack(self.tracked)

    def _submit(self) -> bool:
        """Render the prompt and hand it to the engine; False (and the generation ended) if it cannot run."""
        assert self.tracked is not None
        try:
            model = _db(lambda: model_get(self.model_name), "Reading the model")
            engine = runtime.get_engine(model)
            prompt_ids, params = self.prompt(engine, model)
        except LLMModel.DoesNotExist:
            self.fail(f"The model {self.model_name!r} is no longer available.", code="model_not_found")
            return False
        except ConversationError as exc:
            self.fail(exc.message, code=exc.code)
            return False
        except InvalidRequestError as exc:  # the prompt or its chat template (too slow to render, say)
            self.fail(str(exc), code=InvalidInput.code)
            return False
        except EngineError:
            logger.exception("The engine refused generation %s", self.id, extra={"generation_id": self.id})
            self.fail(self.engine_failed)
            return False
        finally:
            close_connections()  # nothing is read while the engine writes: do not hold a connection meanwhile
        if self.tracked.cancel_seen or self.tracked.reader_gone or self._cancel_flag(retrying=True):
            self.end(Message.Status.CANCELLED, "cancelled", None)
            return False
        self.tracked.attach(engine)
        try:
            engine.submit(prompt_ids, params, request_id=self.id, sink=get_pump().on_step)
        except InvalidRequestError as exc:
            self.fail(str(exc), code=InvalidInput.code)
            return False
        return True

    def _finish(self) -> None:
        tracked = self.tracked
        assert tracked is not None
        final = tracked.final
        if tracked.failure is not None:
            self.fail(self.stream_lost, code="stream_lost", final=final)
        elif tracked.taken_away:
            self.taken_away(final)  # deleted, or ended by someone else: its stream has ended already
        elif final is None:
            self.fail(self.engine_failed)
        elif final.finish_reason == "abort" and (tracked.cancel_seen or tracked.reader_gone or self._cancel_flag()):
            self.end(Message.Status.CANCELLED, "cancelled", final)
        elif final.finish_reason == "abort":
            self.fail(self.interrupted, final=final)
        elif final.finish_reason == "error":
            logger.error("Engine error in generation %s: %s", self.id, final.error, extra={"generation_id": self.id})
            self.fail(self.engine_failed, final=final)
        else:
            self.end(Message.Status.COMPLETED, str(final.finish_reason), final)

    def _cancel_flag(self, *, retrying: bool = False) -> bool:
        """Whether the cancel flag is set; False when Redis cannot say (after retrying for a while, if asked)."""
        try:
            if retrying:
                return retrying_redis(
                    lambda: streams.cancel_requested(self.id),
                    deadline_s=settings.DJINN_REDIS_RETRY_S,
                    what="Reading a cancel flag",
                )
            return streams.cancel_requested(self.id)
        except redis.RedisError:
            return False

    def append_terminal(self, type_: str, **fields: Any) -> None:
        """Append the ``done`` or ``error`` event. If Redis stays unreachable, readers find the end in
        PostgreSQL (replies) or notice the worker is gone (completions)."""
        try:
            if self.tracked is not None:
                get_pump().append_terminal(self.tracked, type_, **fields)
            elif type_ == "error":  # it never got as far as the pump
                streams.StreamWriter(self.generation_id).error(**fields)
        except redis.RedisError:
            logger.error("Could not append the %s event of %s", type_, self.id, extra={"generation_id": self.id})

    def ttft_ms(self) -> int | None:
        first = self.tracked.first_text_at if self.tracked is not None else None
        if first is None:
            return None
        return max(0, round((first - self.created_at.timestamp()) * 1000))

    def usage(self, final: RequestOutput | None) -> dict[str, int]:
        """Tokens processed and produced (zero when the engine never ran the request)."""
        if final is None:
            return {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
        return {
            "prompt_tokens": final.usage.prompt_tokens,
            "completion_tokens": final.usage.completion_tokens,
            "cached_tokens": final.usage.cached_prompt_tokens,
        }

    def duration_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)

    def inter_token_s(self, completion_tokens: int) -> float | None:
        """Mean seconds between this generation's tokens, first to last (None for fewer than two)."""
        first = self.tracked.first_text_at if self.tracked is not None else None
        if first is None or completion_tokens < 2:
            return None
        return max(0.0, time.time() - first) / (completion_tokens - 1)

    def finished_metrics(self, status: str, usage: dict[str, int], duration_ms: int) -> None:
        metrics.generation_finished(
            self.model_name,
            status,
            ttft_ms=self.ttft_ms(),
            duration_ms=duration_ms,
            inter_token_s=self.inter_token_s(usage["completion_tokens"]),
            prompt_tokens=usage["prompt_tokens"],
            cached_tokens=usage["cached_tokens"],
            completion_tokens=usage["completion_tokens"],
        )


# -- chat replies --------------------------------------------------------------------------------------


def reply_generate(message_id: UUID | str, *, task_id: str | None = None) -> UUID | None:
    """Write the reply ``message_id`` (an assistant message). Safe to call any number of times; ``task_id``
    (the Celery task's) counts the deliveries of one task. Returns the id of its conversation when that still
    has a provisional title (the caller asks for one), else None."""
    message = _db(
        lambda: (
            Message.objects.select_related("conversation__owner")
            .filter(pk=message_id, role=Message.Role.ASSISTANT)
            .first()
        ),
        "Reading a reply",
    )
    if message is None or message.is_finished:
        return None  # deleted, or a redelivery of a finished reply
    if message.status == Message.Status.RUNNING:
        fail_if_stale(message.pk, message=ORPHANED)
        return None
    deliveries = _count_delivery(task_id)
    if deliveries > settings.DJINN_TASK_MAX_DELIVERIES:
        queued = Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED)
        _fail_guarded(queued, message.pk, GAVE_UP.format(n=deliveries - 1), code="gave_up")
        return None
    now = timezone.now()
    claimed = _db(
        lambda: Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
            status=Message.Status.RUNNING, heartbeat_at=now, updated_at=now
        ),
        "Claiming a reply",
    )
    if not claimed:
        return None
    limits.claimed(user_id=message.conversation.owner_id, generation_id=message.pk)
    metrics.generation_started(message.model)
    reply = ReplyGeneration(message)
    reply.run()
    return message.conversation_id if reply.wants_title else None


def _count_delivery(task_id: str | None) -> int:
    """How many times this task has been delivered, this one included (1 if Redis cannot say)."""
    if task_id is None:
        return 1
    key = f"djinn:task:{task_id}:deliveries"
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, settings.DJINN_BROKER_VISIBILITY_TIMEOUT_S * (settings.DJINN_TASK_MAX_DELIVERIES + 1))
        return int(pipe.execute()[0])
    except redis.RedisError:
        logger.warning("Could not count the deliveries of task %s", task_id, exc_info=True)
        return 1


def first_delivery(task_id: str | None) -> bool:
    """Whether this is the first delivery of the task ``task_id`` (True when Redis cannot say)."""
    if task_id is None:
        return True
    key = f"djinn:task:{task_id}:claim"
    try:
        return bool(get_redis().set(key, "1", nx=True, ex=settings.DJINN_BROKER_VISIBILITY_TIMEOUT_S * 2))
    except redis.RedisError:
        logger.warning("Could not claim task %s", task_id, exc_info=True)
        return True


def fail_if_stale(message_id: UUID, *, message: str = ORPHANED) -> bool:
    """Mark a running reply whose heartbeat is older than DJINN_GENERATION_STALE_AFTER_S failed, and end its
    stream with an error. False if it is alive or already finished."""
    cutoff = timezone.now() - timedelta(seconds=settings.DJINN_GENERATION_STALE_AFTER_S)
    stale = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
    return _fail_guarded(
        Message.objects.filter(stale, pk=message_id, status=Message.Status.RUNNING), message_id, message
    )


def enqueued_key(message_id: UUID | str) -> str:
    """Set when the reply's task is sent, for as long as it may wait in the queue: a queued reply without it
    lost its task (never sent, or lost by the broker)."""
    return f"{streams.stream_key(message_id)}:queued"


def replies_to_requeue() -> list[UUID]:
    """Queued replies older than REQUEUE_AFTER_S whose task was not sent in that time: the broker was out of
    reach when they were made, or lost them (a Redis restart without persistence). Sending one twice is
    harmless: only one delivery can claim it."""
    cutoff = timezone.now() - timedelta(seconds=REQUEUE_AFTER_S)
    queued = list(
        Message.objects.filter(status=Message.Status.QUEUED, created_at__lt=cutoff).values_list("pk", flat=True)[:500]
    )
    if not queued:
        return []
    try:
        pipe = get_redis().pipeline(transaction=False)
        for pk in queued:
            pipe.exists(enqueued_key(pk))
        sent = pipe.execute()
    except redis.RedisError:
        return []  # the broker's Redis is away too: next time
    return [pk for pk, was_sent in zip(queued, sent, strict=True) if not was_sent]


def sweep_stale() -> int:
    """Fail the replies whose worker stopped heart-beating, and those no worker took within
    DJINN_GENERATION_QUEUED_TIMEOUT_S. Returns how many it failed."""
    now = timezone.now()
    stale_cutoff = now - timedelta(seconds=settings.DJINN_GENERATION_STALE_AFTER_S)
    running = Message.objects.filter(status=Message.Status.RUNNING).filter(
        Q(heartbeat_at__lt=stale_cutoff) | Q(heartbeat_at__isnull=True)
    )
    failed = sum(fail_if_stale(pk) for pk in running.values_list("pk", flat=True))
    queued_cutoff = now - timedelta(seconds=settings.DJINN_GENERATION_QUEUED_TIMEOUT_S)
    for pk in Message.objects.filter(status=Message.Status.QUEUED, created_at__lt=queued_cutoff).values_list(
        "pk", flat=True
    ):
        queued = Message.objects.filter(pk=pk, status=Message.Status.QUEUED, created_at__lt=queued_cutoff)
        failed += _fail_guarded(queued, pk, NEVER_STARTED)
    return failed


def _fail_guarded(guarded: Any, message_id: UUID, reason: str, *, code: str = "generation_failed") -> bool:
    """Move the rows of ``guarded`` (at most the one message, not running here) to failed, keeping the text
    its stream holds beyond what was saved; on success, end the stream with the reason."""
    row = guarded.values("model", "content", "content_seq", "conversation__owner_id").first()
    if row is None:
        return False
    fields: dict[str, Any] = {}
    events = _events_after(message_id, row["content_seq"])
    deltas = [event for event in events if event["type"] == "delta"]
    if deltas and not any(event["type"] in streams.TERMINAL_TYPES for event in events):
        fields = {"content": row["content"] + "".join(e["text"] for e in deltas), "content_seq": deltas[-1]["seq"]}
    if not guarded.update(
        status=Message.Status.FAILED, finish_reason="error", error=reason, updated_at=timezone.now(), **fields
    ):
        return False
    logger.warning("Reply %s failed: %s", message_id, reason, extra={"generation_id": str(message_id), "code": code})
    limits.release(user_id=row["conversation__owner_id"], generation_id=message_id)
    try:
        streams.StreamWriter(message_id).error(message=reason, code=code)
    except redis.RedisError:
        logger.error("Could not end the stream of %s", message_id, extra={"generation_id": str(message_id)})
    metrics.generation_finished(row["model"] or "", Message.Status.FAILED, error_code=code)
    return True


def _events_after(message_id: UUID, seq: int) -> list[dict[str, Any]]:
    try:
        return streams.read_events(message_id, after=seq)
    except redis.RedisError:
        return []


def save_reply_partials(snapshots: list[Snapshot]) -> set[str]:
    """The pump's save hook for replies: every one's heartbeat, and the text of those that grew, in one
    UPDATE; returns the ids that are no longer running (deleted, or failed by the sweeper)."""
    now = timezone.now()
    ids = [snapshot.generation_id for snapshot in snapshots]
    fields: dict[str, Any] = {"heartbeat_at": now}
    changed = [snapshot for snapshot in snapshots if snapshot.changed]
    if changed:

        def by_id(column: str, value: Callable[[Snapshot], Any]) -> Case:
            field = Message._meta.get_field(column)
            whens = [When(pk=s.generation_id, then=Value(value(s), output_field=field)) for s in changed]
            return Case(*whens, default=F(column), output_field=field)

        fields["content"] = by_id("content", lambda snapshot: snapshot.content)
        fields["content_seq"] = by_id("content_seq", lambda snapshot: snapshot.seq)
        fields["completion_tokens"] = by_id("completion_tokens", lambda snapshot: snapshot.completion_tokens)
        fields["updated_at"] = by_id("updated_at", lambda snapshot: now)
    running = Message.objects.filter(pk__in=ids, status=Message.Status.RUNNING)
    if running.update(**fields) == len(ids):
        return set()
    still = {str(pk) for pk in running.values_list("pk", flat=True)}
    return set(ids) - still


class ReplyGeneration(Generation):
    """A chat reply: an assistant Message, saved as it streams."""

    def __init__(self, message: Message) -> None:
        super().__init__(message.pk, model_name=message.model, created_at=message.created_at)
        self.message = message
        self.wants_title = False

    def save_hook(self) -> Callable[[list[Snapshot]], set[str]]:
        return save_reply_partials

    def prompt(self, engine: Engine, model: LLMModel) -> tuple[list[int], SamplingParams]:
        conversation = self.message.conversation

        def read() -> list[dict[str, str]]:
            path = selectors.branch_path(conversation_id=conversation.pk, leaf_id=self.message.parent_id)
            return prompts.chat_messages(
                owner=conversation.owner, conversation=conversation, path=path, sources=self.message.sources
            )

        chat = _db(read, "Reading the conversation")
        # A reply whose parent is a reply continues it: the model writes on from its text.
        prompt_ids = engine.tokenizer.encode_chat(chat, continue_final_message=prompts.continues_reply(chat))
        context = runtime.context_length(model)
        prompts.ensure_room(len(prompt_ids), context, model)
        return prompt_ids, prompts.sampling_params(self.message.params, max_tokens_limit=context - len(prompt_ids))

    def _fields(self, final: RequestOutput | None) -> dict[str, Any]:
        tracked = self.tracked
        fields: dict[str, Any] = {
            "content": tracked.text if tracked is not None else "",
            "content_seq": tracked.seq if tracked is not None else 0,
            "ttft_ms": self.ttft_ms(),
            "duration_ms": self.duration_ms(),
            "updated_at": timezone.now(),
        }
        if final is not None:
            fields.update(self.usage(final))
        return fields

    def end(self, status: str, finish_reason: str, final: RequestOutput | None) -> None:
        fields = self._fields(final)
        usage = self.usage(final)
        owner_id = self.message.conversation.owner_id

        def save() -> bool:
            # The reply's end and its charge commit together: a redelivery finds the reply finished and
            # charges nothing, and a reply is never finished without its usage record.
            with transaction.atomic():
                guarded = Message.objects.filter(pk=self.message.pk, status=Message.Status.RUNNING)
                if not guarded.update(status=status, finish_reason=finish_reason, **fields):
                    return False
                usage_record(
                    user_id=owner_id,
                    generation_id=self.generation_id,
                    model=self.model_name,
                    source=self.usage_source,
                    **usage,
                )
            return True

        if not _db(save, f"Saving the end of reply {self.id}"):
            return  # deleted or failed by the sweeper meanwhile: its stream has ended already
        limits.settle(user_id=owner_id, generation_id=self.generation_id, usage=usage)
        self.append_terminal("done", finish_reason=finish_reason, usage=usage)
        self.finished_metrics(status, usage, fields["duration_ms"])
        if status == Message.Status.COMPLETED:
            self.wants_title = _db(
                lambda: Conversation.objects.filter(
                    pk=self.message.conversation_id, title_is_provisional=True
                ).exists(),
                "Reading the title",
            )

    def taken_away(self, final: RequestOutput | None) -> None:
        """A reply whose conversation was deleted while it ran is charged for the tokens it made (a reply
        failed by the sweeper meanwhile was released by it)."""
        exists = _db(lambda: Message.objects.filter(pk=self.message.pk).exists(), "Reading a reply")
        if exists:
            return
        usage = self.usage(final)
        if final is None and self.tracked is not None:
            usage["completion_tokens"] = self.tracked.completion_tokens
        owner_id = self.message.conversation.owner_id
        _db(
            lambda: usage_record(
                user_id=owner_id,
                generation_id=self.generation_id,
                model=self.model_name,
                source=self.usage_source,
                **usage,
            ),
            f"Charging deleted reply {self.id}",
        )
        limits.settle(user_id=owner_id, generation_id=self.generation_id, usage=usage)

    def fail(self, reason: str, *, code: str = "generation_failed", final: RequestOutput | None = None) -> None:
        # The stream first: a reader learns of the failure even if the row cannot be saved now (then the
        # sweeper fails the row later, with the text the stream holds). A failed reply is not charged.
        self.append_terminal("error", message=reason, code=code)
        limits.release(user_id=self.message.conversation.owner_id, generation_id=self.generation_id)
        fields = self._fields(final)

        def save() -> int:
            guarded = Message.objects.filter(pk=self.message.pk, status=Message.Status.RUNNING)
            return guarded.update(status=Message.Status.FAILED, finish_reason="error", error=reason, **fields)

        if _db(save, f"Saving the failure of reply {self.id}"):
            logger.warning("Reply %s failed: %s", self.id, reason, extra={"generation_id": self.id, "code": code})
            metrics.generation_finished(self.model_name, Message.Status.FAILED, error_code=code)


# -- API completions -----------------------------------------------------------------------------------


def claim_key(generation_id: UUID | str) -> str:
    """Set by the worker that takes a completion (``completion_generate``): before it, nobody has."""
    return f"{streams.stream_key(generation_id)}:claim"


def completion_generate(generation_id: UUID | str, request: dict[str, Any]) -> None:
    """Run the completion ``generation_id`` (``request`` as built by ``completions.completion_start``). Safe
    to call any number of times: only the first call runs it, and only while its reader waits for it."""
    generation_id = UUID(str(generation_id))
    client = get_redis()
    # As long as the broker could deliver the task again, and the stream lives after that.
    claim_ttl = settings.DJINN_BROKER_VISIBILITY_TIMEOUT_S + streams.STREAM_TTL_S

    def claim() -> tuple[bool, bool]:
        """(claimed, its reader is there), with the heartbeat set from the claim on, so a reader waiting for
        the first token knows a worker has it; in one round trip."""
        pipe = client.pipeline(transaction=True)
        pipe.set(claim_key(generation_id), "1", nx=True, ex=claim_ttl)
        pipe.exists(streams.lease_key(generation_id))
        claimed, leased = pipe.execute()
        if claimed:
            streams.heartbeat(generation_id)
        return bool(claimed), bool(leased)

    # A redelivery has no way to tell that a claim it could not write was written: retried with the same key
    # (SET NX), a claim that went through and lost its answer reads as "claimed by another": orphaned.
    claimed, leased = retrying_redis(claim, deadline_s=settings.DJINN_REDIS_RETRY_S, what="Claiming a completion")
    if not claimed:
        _end_if_orphaned(generation_id, request)
        return
    completion = CompletionGeneration(generation_id, request)
    if not leased:
        limits.release(user_id=request["user_id"], generation_id=generation_id)
        streams.StreamWriter(generation_id).error(message=READER_GONE, code="reader_gone")
        logger.info(
            "Completion %s dropped: its reader is gone", generation_id, extra={"generation_id": str(generation_id)}
        )
        return
    limits.claimed(user_id=request["user_id"], generation_id=generation_id)
    metrics.generation_started(request["model"])
    completion.run()


def _end_if_orphaned(generation_id: UUID, request: dict[str, Any]) -> None:
    """A redelivery: end the stream with an error if the worker that claimed the completion died before
    finishing it; else (finished, or still being written) do nothing."""
    writer = streams.StreamWriter(generation_id)
    last = streams.read_events(generation_id, after=writer.seq - 1) if writer.seq else []
    if (last and last[-1]["type"] in streams.TERMINAL_TYPES) or streams.worker_alive(generation_id):
        return
    logger.warning("Completion %s was orphaned", generation_id, extra={"generation_id": str(generation_id)})
    writer.error(message=COMPLETION_ORPHANED)
    completion_charge_streamed(generation_id, request)


def completion_charge_streamed(generation_id: UUID | str, request: dict[str, Any]) -> None:
    """Charge a completion whose worker died for what it streamed: its prompt and the completion tokens its
    last delta counted (nothing if none was streamed), and end its reservation. Idempotent: the first record
    of a generation stands."""
    deltas = [event for event in streams.read_events(generation_id, after=0) if event["type"] == "delta"]
    tokens = int(deltas[-1].get("tokens") or 0) if deltas else 0
    if not tokens:
        limits.release(user_id=request["user_id"], generation_id=generation_id)
        return
    usage = {"prompt_tokens": int(request.get("prompt_tokens") or 0), "completion_tokens": tokens}
    _db(
        lambda: usage_record(
            user_id=request["user_id"],
            generation_id=generation_id,
            model=request["model"],
            source=UsageRecord.Source.API,
            api_key_id=request["api_key_id"],
            **usage,
        ),
        f"Charging the streamed part of {generation_id}",
    )
    limits.settle(user_id=request["user_id"], generation_id=generation_id, usage=usage)


class CompletionGeneration(Generation):
    """An API completion: nothing of it is kept but its stream and its usage record."""

    usage_source = UsageRecord.Source.API
    leased = True
    engine_failed = COMPLETION_ENGINE_FAILED
    interrupted = COMPLETION_INTERRUPTED
    stream_lost = COMPLETION_STREAM_LOST

    def __init__(self, generation_id: UUID, request: dict[str, Any]) -> None:
        created_at = datetime.fromtimestamp(request["created"], tz=UTC)
        super().__init__(generation_id, model_name=request["model"], created_at=created_at)
        self.request = request
        self.wants_logprobs = bool(request["params"].get("logprobs"))
        self.tokenizer: Any = None
        self.ended = False

    def prompt(self, engine: Engine, model: LLMModel) -> tuple[list[int], SamplingParams]:
        prompt_ids = engine.tokenizer.encode_chat(self.request["messages"])
        params = dict(self.request["params"])
        # The web process checked the fit against the checkpoint; this engine's KV cache may hold less.
        params["max_tokens"] = prompts.completion_max_tokens(
            len(prompt_ids), runtime.context_length(model), asked=params.get("max_tokens"), default=params
        )
        try:
            sampling = SamplingParams(**params)
        except (InvalidRequestError, TypeError) as exc:
            raise InvalidInput(str(exc)) from exc
        self.tokenizer = engine.tokenizer
        return prompt_ids, sampling

    def logprob_entries(self, output: RequestOutput) -> list[dict[str, Any]]:
        """In the pump's writer thread, off the engine's."""
        return [self._logprob_entry(logprob) for logprob in output.logprobs or []]

    def end(self, status: str, finish_reason: str, final: RequestOutput | None) -> None:
        if self.ended:
            return
        usage = self.usage(final)
        _db(
            lambda: usage_record(
                user_id=self.request["user_id"],
                generation_id=self.generation_id,
                model=self.model_name,
                source=self.usage_source,
                api_key_id=self.request["api_key_id"],
                **usage,
            ),
            f"Recording the usage of {self.id}",
        )
        limits.settle(user_id=self.request["user_id"], generation_id=self.generation_id, usage=usage)
        self.append_terminal("done", finish_reason=finish_reason, usage=usage)
        self.ended = True
        self.finished_metrics(status, usage, self.duration_ms())

    def fail(self, reason: str, *, code: str = "generation_failed", final: RequestOutput | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        logger.warning("Completion %s failed: %s", self.id, reason, extra={"generation_id": self.id, "code": code})
        limits.release(user_id=self.request["user_id"], generation_id=self.generation_id)
        self.append_terminal("error", message=reason, code=code)
        metrics.generation_finished(self.model_name, Message.Status.FAILED, error_code=code)

    def _logprob_entry(self, logprob: TokenLogprob) -> dict[str, Any]:
        entry = self._token(logprob.token_id, logprob.logprob)
        entry["top_logprobs"] = [self._token(token_id, value) for token_id, value in logprob.top]
        return entry

    def _token(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.tokenizer.decode([token_id]) or self.tokenizer.id_to_token(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}
