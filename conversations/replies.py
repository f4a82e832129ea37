"""How a generation becomes text: the body of the ``generate_reply`` task, shared (class :class:`Generation`)
with the inline API completions of ``conversations.completions``.

Status only moves forward (queued -> running -> completed | cancelled | failed), each step a guarded
update, so a redelivered task can never produce a second reply. Orphans: a reply found ``running``
whose worker stopped heart-beating was left by a dead worker. It is marked ``failed`` with a clear
reason (the user can regenerate), never re-run: its stream already holds the text the dead worker
streamed, and a second run could only contradict it. The beat job :func:`sweep_stale` does the same
for replies no delivery comes back for.

Every generation that ends (completed, or cancelled with the tokens it made) writes one usage record,
keyed by its generation id; a failed one is not charged.

One watcher thread per process sends the heartbeats of all generations the process is writing and checks
their cancel flags, so both keep working while a generation waits in the engine and yields no token.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import redis
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import UsageRecord
from accounts.usage import usage_record
from conversations import prompts, selectors
from conversations.errors import ConversationError
from conversations.models import Conversation, Message
from inference import metrics, runtime, streams
from inference.engine import Engine, EngineError, RequestOutput, SamplingParams
from inference.models import LLMModel
from inference.registry import model_get
from inference.stream_batching import BatchedStreamWriter

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 2.0
PARTIAL_SAVE_INTERVAL_S = 1.0

ORPHANED = "The worker writing this reply stopped. Regenerate to try again."
NEVER_STARTED = "No worker took this reply in time. Regenerate to try again."
INTERRUPTED = "This reply was interrupted because its worker shut down. Regenerate to try again."
ENGINE_FAILED = "The model failed while writing this reply. Regenerate to try again."


def generate(message_id: UUID | str) -> None:
    """Write the reply ``message_id`` (an assistant message). Safe to call any number of times."""
    message = (
        Message.objects.select_related("conversation__owner").filter(pk=message_id, role=Message.Role.ASSISTANT).first()
    )
    if message is None or message.is_finished:
        return  # deleted, or a redelivery of a finished reply
    if message.status == Message.Status.RUNNING:
        fail_if_stale(message.pk, message=ORPHANED)
        return
    now = timezone.now()
    claimed = Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
        status=Message.Status.RUNNING, heartbeat_at=now, updated_at=now
    )
    if claimed:
        metrics.generation_started(message.model)
        _Reply(message).run()


def fail_if_stale(message_id: UUID, *, message: str = ORPHANED) -> bool:
    """Mark a running reply whose heartbeat is older than DJINN_GENERATION_STALE_AFTER_S failed, and end its
    stream with an error. False if it is alive or already finished."""
    cutoff = timezone.now() - timedelta(seconds=settings.DJINN_GENERATION_STALE_AFTER_S)
    stale = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
    return _fail(Message.objects.filter(stale, pk=message_id, status=Message.Status.RUNNING), message_id, message)


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
        failed += _fail(queued, pk, NEVER_STARTED)
    return failed


def _fail(guarded: Any, message_id: UUID, reason: str, *, code: str = "generation_failed") -> bool:
    """Move the rows of ``guarded`` (at most the one message) to failed; on success, end the stream."""
    model = guarded.values_list("model", flat=True).first()
    if not guarded.update(status=Message.Status.FAILED, finish_reason="error", error=reason, updated_at=timezone.now()):
        return False
    logger.warning("Reply %s failed: %s", message_id, reason, extra={"generation_id": str(message_id), "code": code})
    streams.StreamWriter(message_id).error(message=reason, code=code)
    metrics.generation_finished(model or "", Message.Status.FAILED)
    return True


class Generation(ABC):
    """The body every generation shares, chat reply or API completion: render the prompt, submit it to the
    engine, forward each delta to the generation's stream (checking the cancel flag with every one), and
    end with one terminal event and one usage record. Subclasses say where the prompt comes from and
    what finishing or failing means for them (a Message row for a reply, nothing but the stream for a
    completion).

    The deltas do not pass through the task's thread: the engine thread hands each one to the generation's
    sink (:meth:`_on_engine_output`), which gives it to the process's stream writer thread and returns. The
    task's thread sleeps meanwhile, waking once a second to save the partial reply (checkpoint) and once at
    the end. With 16 replies at once that is one thread hand-over per step instead of 16 threads woken per
    token, each fighting the engine thread for the interpreter.
    """

    usage_source = UsageRecord.Source.CHAT
    # What the user reads when the engine fails, and when the worker shuts down mid-generation.
    engine_failed = ENGINE_FAILED
    interrupted = INTERRUPTED

    def __init__(self, generation_id: UUID, *, model_name: str, created_at: datetime) -> None:
        self.generation_id = generation_id
        self.id = str(generation_id)
        self.model_name = model_name
        self.created_at = created_at  # for the time to first token (queueing included)
        # Deltas go through the process's stream writer thread, batched with the other generations' (the
        # engine's step makes them together); it aborts the request in the engine when the cancel flag is set.
        self.writer = BatchedStreamWriter(generation_id)
        self.started = time.monotonic()
        self.text: list[str] = []
        self.seq = self.writer.seq
        self.ttft_ms: int | None = None
        # Shared between the engine thread (the sink) and the task's thread, under _lock: text, seq and these.
        self._lock = threading.Lock()
        self._latest: RequestOutput | None = None
        self._final: RequestOutput | None = None
        self._ended = threading.Event()
        self._closed = False  # the task's thread is done with the generation: the sink drops what comes
        self._sink_failure: Exception | None = None  # what stopped the sink (Redis failed): the run fails

    # -- what subclasses provide ---------------------------------------------------------------------

    @abstractmethod
    def prompt(self, engine: Engine, model: LLMModel) -> tuple[list[int], SamplingParams]:
        """The prompt's token ids and the sampling parameters. Raises ConversationError when it cannot run."""

    @abstractmethod
    def end(self, status: str, finish_reason: str, final: RequestOutput | None) -> None:
        """The generation ended with ``status`` (completed or cancelled): save, record usage, append ``done``."""

    @abstractmethod
    def fail(self, reason: str, *, code: str = "generation_failed", final: RequestOutput | None = None) -> None:
        """The generation failed: ``reason`` is shown to the user. Append the ``error`` event."""

    def checkpoint(self, output: RequestOutput, content: str, seq: int) -> bool:
        """Called about once a second while deltas flow, with the reply so far and the seq of its last delta;
        False stops the generation (it was taken away)."""
        return True

    def on_output(self, output: RequestOutput) -> None:  # noqa: B027 (an optional hook: most do nothing)
        """Called for every engine output, before its text (if any) is appended to the stream. It runs in the
        engine thread, between steps: it must be quick."""

    # -- the shared body -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            engine = self._submit()
            if engine is None:
                return
            _watcher.add(self.generation_id, engine)
            try:
                final = self._wait(engine)
            except BaseException:
                # Stop the engine thread's deliveries before anything else goes to the stream (fail() below).
                self._close()
                engine.abort(self.id)
                raise
            finally:
                _watcher.remove(self.generation_id)
            if self._sink_failure is not None:
                raise self._sink_failure
            if final is not None:
                self._finish(final)
        except Exception:
            # The task's last line of defence: whatever broke, the generation must not stay "running".
            logger.exception("Generation %s crashed", self.id, extra={"generation_id": self.id})
            self.fail(self.engine_failed)
            raise
        finally:
            self._close()
            self.writer.close()

    def _close(self) -> None:
        """From here on the sink drops what the engine hands over (waiting for a delivery in progress)."""
        with self._lock:
            self._closed = True

    def _submit(self) -> Engine | None:
        """Render the prompt and hand it to the engine; None (and the generation ended) if it cannot run."""
        try:
            model = model_get(self.model_name)
            engine = runtime.get_engine(model)
            prompt_ids, params = self.prompt(engine, model)
            if streams.cancel_requested(self.generation_id):
                self.end(Message.Status.CANCELLED, "cancelled", None)
                return None
            # The writer thread reads the cancel flag with each batch it writes and aborts at once.
            self.writer.on_cancel = lambda: engine.abort(self.id)
            engine.submit(prompt_ids, params, request_id=self.id, sink=self._on_engine_output)
        except LLMModel.DoesNotExist:
            self.fail(f"The model {self.model_name!r} is no longer available.", code="model_not_found")
            return None
        except ConversationError as exc:
            self.fail(exc.message, code=exc.code)
            return None
        except EngineError:
            logger.exception("The engine refused generation %s", self.id, extra={"generation_id": self.id})
            self.fail(self.engine_failed)
            return None
        return engine

    def _on_engine_output(self, output: RequestOutput) -> None:
        """The engine's sink, in the engine thread: hand the delta to the stream writer thread and return.
        If the writer reports that Redis failed, the exception ends the request in the engine, which then
        hands over a last output with finish_reason "error"."""
        with self._lock:
            if self._closed:
                return
            try:
                self.on_output(output)
                text = output.text.replace("\x00", "")  # PostgreSQL text cannot hold NUL
                if text:
                    if self.ttft_ms is None:
                        self.ttft_ms = _ms_since(self.created_at)
                    self.seq = self.append_delta(text)
                    self.text.append(text)  # only once handed over: the saved text never runs ahead of the stream
                elif output.finish_reason is None:
                    self.writer.check_cancel()  # a step that made no text still looks at the cancel flag
                self._latest = output
            except Exception as exc:
                self._sink_failure = self._sink_failure or exc
                raise  # the engine ends the request and hands over a last output, "error"
            finally:
                if output.finish_reason is not None:  # the last one, whatever happened to it
                    self._final = output
                    self._ended.set()

    def _wait(self, engine: Engine) -> RequestOutput | None:
        """Sleep until the engine hands over the final output, saving the partial reply about once a second
        meanwhile; the final output, or None if the generation was taken away (deleted, or failed by the
        sweeper) while it was being written, in which case it is aborted in the engine."""
        saved_seq = self.seq
        while not self._ended.wait(PARTIAL_SAVE_INTERVAL_S):
            with self._lock:
                latest, seq, content = self._latest, self.seq, "".join(self.text)
            if latest is None or seq == saved_seq:
                continue
            saved_seq = seq
            if not self.checkpoint(latest, content, seq):
                self._close()  # nothing more goes to a stream that is no longer this generation's
                engine.abort(self.id)
                return None
        return self._final

    def append_delta(self, text: str) -> int:
        return self.writer.delta(text)

    def _finish(self, final: RequestOutput) -> None:
        reason = final.finish_reason
        if reason == "abort" and streams.cancel_requested(self.generation_id):
            self.end(Message.Status.CANCELLED, "cancelled", final)
        elif reason == "abort":
            self.fail(self.interrupted, final=final)
        elif reason == "error":
            logger.error("Engine error in generation %s: %s", self.id, final.error, extra={"generation_id": self.id})
            self.fail(self.engine_failed, final=final)
        else:
            self.end(Message.Status.COMPLETED, str(reason), final)

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

    def finished_metrics(self, status: str, usage: dict[str, int], duration_ms: int) -> None:
        metrics.generation_finished(
            self.model_name,
            status,
            ttft_ms=self.ttft_ms,
            duration_ms=duration_ms,
            prompt_tokens=usage["prompt_tokens"],
            cached_tokens=usage["cached_tokens"],
            completion_tokens=usage["completion_tokens"],
        )


class _Reply(Generation):
    """A chat reply: an assistant Message, saved as it streams."""

    def __init__(self, message: Message) -> None:
        super().__init__(message.pk, model_name=message.model, created_at=message.created_at)
        self.message = message

    def prompt(self, engine: Engine, model: LLMModel) -> tuple[list[int], SamplingParams]:
        conversation = self.message.conversation
        path = selectors.branch_path(conversation_id=conversation.pk, leaf_id=self.message.parent_id)
        chat = prompts.chat_messages(owner=conversation.owner, conversation=conversation, path=path)
        prompt_ids = engine.tokenizer.encode_chat(chat)
        context = runtime.context_length(model)
        prompts.ensure_room(len(prompt_ids), context, model)
        return prompt_ids, prompts.sampling_params(self.message.params, max_tokens_limit=context - len(prompt_ids))

    def checkpoint(self, output: RequestOutput, content: str, seq: int) -> bool:
        return bool(
            Message.objects.filter(pk=self.message.pk, status=Message.Status.RUNNING).update(
                content=content,
                content_seq=seq,
                completion_tokens=output.usage.completion_tokens,
                heartbeat_at=timezone.now(),
                updated_at=timezone.now(),
            )
        )

    def _fields(self, final: RequestOutput | None) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "content": "".join(self.text),
            "content_seq": self.seq,
            "ttft_ms": self.ttft_ms,
            "duration_ms": self.duration_ms(),
            "updated_at": timezone.now(),
        }
        if final is not None:
            fields.update(self.usage(final))
        return fields

    def end(self, status: str, finish_reason: str, final: RequestOutput | None) -> None:
        fields = self._fields(final)
        usage = self.usage(final)
        guarded = Message.objects.filter(pk=self.message.pk, status=Message.Status.RUNNING)
        # The reply's end and its charge commit together: a redelivery finds the reply finished and charges
        # nothing, and a reply is never finished without its usage record.
        with transaction.atomic():
            if not guarded.update(status=status, finish_reason=finish_reason, **fields):
                return  # deleted or failed by the sweeper meanwhile: its stream has already ended
            usage_record(
                user_id=self.message.conversation.owner_id,
                generation_id=self.generation_id,
                model=self.model_name,
                source=self.usage_source,
                **usage,
            )
        self.seq = self.writer.done(finish_reason=finish_reason, usage=usage)
        self.finished_metrics(status, usage, fields["duration_ms"])
        if status == Message.Status.COMPLETED:
            self._title_if_provisional()

    def fail(self, reason: str, *, code: str = "generation_failed", final: RequestOutput | None = None) -> None:
        guarded = Message.objects.filter(pk=self.message.pk, status=Message.Status.RUNNING)
        if guarded.update(status=Message.Status.FAILED, finish_reason="error", error=reason, **self._fields(final)):
            logger.warning("Reply %s failed: %s", self.id, reason, extra={"generation_id": self.id, "code": code})
            self.seq = self.writer.error(message=reason, code=code)
            metrics.generation_finished(self.model_name, Message.Status.FAILED)

    def _title_if_provisional(self) -> None:
        from conversations.tasks import generate_title

        conversation_id = self.message.conversation_id
        if Conversation.objects.filter(pk=conversation_id, title_is_provisional=True).exists():
            transaction.on_commit(lambda: generate_title.delay(str(conversation_id)))


def _ms_since(moment: Any) -> int:
    return max(0, round((timezone.now() - moment).total_seconds() * 1000))


class _Watcher:
    """Every HEARTBEAT_INTERVAL_S, for each reply this process is writing: mark its worker alive (in
    PostgreSQL for the sweeper, in Redis for readers) and abort it in the engine if its cancel flag is set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[UUID, Engine] = {}
        self._thread: threading.Thread | None = None

    def add(self, message_id: UUID, engine: Engine) -> None:
        with self._lock:
            self._active[message_id] = engine
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="djinn-reply-watcher", daemon=True)
                self._thread.start()

    def remove(self, message_id: UUID) -> None:
        with self._lock:
            self._active.pop(message_id, None)

    def _run(self) -> None:
        while True:
            time.sleep(HEARTBEAT_INTERVAL_S)
            with self._lock:
                active = dict(self._active)
            if not active:
                continue
            try:
                self.beat(active)
            except (DatabaseError, redis.RedisError):
                # A blip must not end the heartbeats of every reply: try again next time.
                logger.warning("Reply heartbeat failed", exc_info=True)
            finally:
                # One short query every few seconds: holding a connection open in between would pin a
                # server slot (and a PgBouncer one) for the life of the process.
                connection.close()

    @staticmethod
    def beat(active: dict[UUID, Engine]) -> None:
        Message.objects.filter(pk__in=list(active), status=Message.Status.RUNNING).update(heartbeat_at=timezone.now())
        cancelled = streams.heartbeat_many(list(active), ttl_s=round(HEARTBEAT_INTERVAL_S * 5))
        for message_id in cancelled:
            active[message_id].abort(str(message_id))


_watcher = _Watcher()
