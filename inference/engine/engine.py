"""The engine: one background thread steps the model; any number of threads submit, stream and abort.

    engine = Engine()                                  # the default model, on CUDA if there is one
    rid = engine.submit([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=64))
    for delta in engine.stream(rid):
        print(delta.text, end="")

A server writing many replies at once passes ``sink=`` to ``submit`` instead of reading ``stream``: once per
step the engine thread hands that callable every output the step made for its requests, in one list, so
no thread per reply wakes per token and the consumer sees where a step ends.

Each step: take new requests and aborts, let the scheduler pick the batch, run the model, sample, turn
the tokens into text deltas (stop strings held back until they can be ruled out) and put one
RequestOutput per sequence on that request's queue.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .batch import Batch
from .block_manager import BlockManager
from .errors import EngineError, InvalidRequestError, PromptTooLongError
from .paths import resolve_model_path
from .runner import ModelRunner
from .sampling import SamplingParams, TokenLogprob, sample
from .scheduler import ScheduledBatch, Scheduler
from .sequence import Sequence
from .tokenizer import IncrementalDetokenizer, StopStringMatcher, Tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

# Steps of up to this many tokens take the int4 path (see linear.py) and may prefer fewer threads.
SMALL_STEP_TOKENS = 8

# Tokens one step may compute: big enough to prefill quickly, small enough that running decodes are not
# held up for long by a long prompt arriving (chunked prefill).
DEFAULT_BATCHED_TOKENS = {"cpu": 512, "cuda": 8192}


@dataclass
class Usage:
    prompt_tokens: int
    cached_prompt_tokens: int  # prompt tokens whose K/V came from the prefix cache
    completion_tokens: int


@dataclass
class RequestOutput:
    """One delta of a request's reply. ``finish_reason`` is set on the last one only:
    "stop" (EOS, stop string or stop token), "length", "abort" or "error" (then ``error`` says why)."""

    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: str | None
    usage: Usage
    logprobs: list[TokenLogprob] | None = None  # one per token in token_ids, when the request asked
    error: str | None = None


# Called once per engine step (in the engine thread) with the outputs of that step for the requests submitted
# with it, in request order; the last output of a request has a finish_reason.
Sink = Callable[[list[RequestOutput]], None]


@dataclass
class _Request:
    seq: Sequence
    detokenizer: IncrementalDetokenizer
    stops: StopStringMatcher
    sink: Sink | None = None  # when set, outputs go to it once per step (engine thread), not to ``outputs``
    outputs: queue.Queue[RequestOutput] = field(default_factory=queue.Queue)


class Engine:
    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        max_num_seqs: int = 64,
        max_num_batched_tokens: int | None = None,
        kv_cache_bytes: int | None = None,
        num_kv_blocks: int | None = None,
        block_size: int = 16,
        threads: int | None = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        """Load the model (a path, an alias of the default model, or None for the default) and start serving.

        ``kv_cache_bytes`` / ``num_kv_blocks`` size the paged KV cache (default: the runner's, by device).
        ``threads`` caps PyTorch's CPU threads (default: the cores this process may use).
        """
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        batched = max_num_batched_tokens or DEFAULT_BATCHED_TOKENS.get(torch.device(self.device).type, 512)
        if max_num_seqs < 1 or batched < max_num_seqs:
            raise InvalidRequestError(
                f"max_num_seqs ({max_num_seqs}) must be at least 1 and at most max_num_batched_tokens ({batched})."
            )
        self.model_path = resolve_model_path(model)
        # Called after each step with its kind ("prefill" when any sequence computed more than one token,
        # else "decode"), the sequences in it and its seconds (the forward pass and sampling): for metrics.
        self.on_step: Callable[[str, int, float], None] | None = None
        # The tokenizer first: its scratch memory is freed before the weights arrive, so the two peaks
        # do not add up (peak RSS with the default model 1068 -> 918 MiB measured).
        self.tokenizer: Tokenizer = load_tokenizer(self.model_path)
        self.runner = ModelRunner.load(
            self.model_path,
            device=self.device,
            num_kv_blocks=num_kv_blocks,
            block_size=block_size,
            kv_cache_bytes=kv_cache_bytes,
            dtype=dtype,
        )
        if threads is not None:
            torch.set_num_threads(threads)
        self._threads_requested = threads
        # Chosen by _choose_thread_count in the step loop's thread; 0 = leave torch's setting alone.
        self._small_step_threads = 0
        self._large_step_threads = 0
        self._threads_in_use = 0
        self.config = self.runner.config
        self.max_model_len = min(self.config.max_position_embeddings, self.runner.num_kv_blocks * block_size)
        eos = list(dict.fromkeys([*self.tokenizer.eos_token_ids, *self.config.eos_token_ids]))
        self.scheduler = Scheduler(
            BlockManager(self.runner.num_kv_blocks, block_size),
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=batched,
            max_model_len=self.max_model_len,
            eos_token_ids=eos,
        )
        self._requests: dict[str, _Request] = {}
        self._inbox: list[Sequence] = []
        self._aborts: list[str] = []
        self._wakeup = threading.Condition()
        self._stopping = False
        self._generated_tokens = 0
        # Outputs of the current step for sink requests, by sink, handed over when the step ends (_flush_sinks).
        self._sink_outputs: dict[int, tuple[Sink, list[tuple[_Request, RequestOutput]]]] = {}
        self._stats: dict[str, Any] = {}
        self._publish_stats()
        self._thread = threading.Thread(target=self._run, name="djinn-engine", daemon=True)
        self._thread.start()

    # -- the caller's side (any thread) ------------------------------------------------------------

    def submit(
        self,
        prompt: SequenceOf[Mapping[str, Any]] | SequenceOf[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        *,
        sink: Sink | None = None,
    ) -> str:
        """Queue a request: chat messages (rendered with the model's chat template) or prompt token ids.

        With ``sink``, the request's outputs are not for ``stream``: at the end of each step the engine thread
        calls ``sink`` once with every output of that step for the requests submitted with it (the last one of
        a request with a finish_reason), and forgets each request once its last output is handed over. The
        sink runs between steps of every request, so it must be quick and must not block (hand the outputs
        over, do not write them to a network). If it raises, the unfinished requests of that call end there:
        they are aborted, and the sink is called once more with a last output for each, finish_reason "error".

        Raises PromptTooLongError when the prompt plus ``max_tokens`` (or one token) exceeds the context,
        InvalidRequestError for an empty or malformed prompt or a request id already in use.
        """
        params = params or SamplingParams()
        token_ids = self._prompt_token_ids(prompt)
        wanted = len(token_ids) + (params.max_tokens or 1)
        if wanted > self.max_model_len:
            raise PromptTooLongError(
                f"The prompt has {len(token_ids)} tokens and asks for up to {params.max_tokens or 1} more, "
                f"but the context holds {self.max_model_len} tokens.",
                prompt_tokens=len(token_ids),
                max_context=self.max_model_len,
            )
        request_id = request_id or uuid.uuid4().hex
        seq = Sequence(request_id, token_ids, params)
        request = _Request(seq, IncrementalDetokenizer(self.tokenizer), StopStringMatcher(params.stop), sink)
        with self._wakeup:
            if self._stopping:
                raise EngineError("The engine has been shut down.")
            if request_id in self._requests:
                raise InvalidRequestError(f"Request id {request_id!r} is already in use.")
            self._requests[request_id] = request
            self._inbox.append(seq)
            self._wakeup.notify()
        return request_id

    def stream(self, request_id: str) -> Iterator[RequestOutput]:
        """Yield the request's deltas until the one with a finish_reason. Leaving early aborts the request."""
        request = self._requests.get(request_id)
        if request is None:
            raise InvalidRequestError(f"Unknown request id {request_id!r}.")
        if request.sink is not None:
            raise InvalidRequestError(f"Request {request_id!r} delivers its outputs to its sink, not to a stream.")
        finished = False
        try:
            while not finished:
                output = request.outputs.get()
                finished = output.finish_reason is not None
                yield output
        finally:
            # Once nobody reads the queue, nothing else may be put on it for ever.
            self._requests.pop(request_id, None)
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        """Stop the request at the next step (its stream then ends with finish_reason "abort").
        Unknown or finished ids are ignored."""
        with self._wakeup:
            self._aborts.append(request_id)
            self._wakeup.notify()

    def generate(
        self,
        prompt: SequenceOf[Mapping[str, Any]] | SequenceOf[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
    ) -> RequestOutput:
        """Submit and wait for the whole reply, as one RequestOutput. Raises EngineError if the step failed."""
        request_id = self.submit(prompt, params, request_id)
        text: list[str] = []
        token_ids: list[int] = []
        logprobs: list[TokenLogprob] = []
        last = None
        for last in self.stream(request_id):
            text.append(last.text)
            token_ids += last.token_ids
            logprobs += last.logprobs or []
        assert last is not None
        if last.finish_reason == "error":
            raise EngineError(f"Generation failed: {last.error}")
        wanted_logprobs = last.logprobs is not None
        return RequestOutput(
            request_id, "".join(text), token_ids, last.finish_reason, last.usage, logprobs if wanted_logprobs else None
        )

    def stats(self) -> dict[str, Any]:
        """A snapshot for metrics: running/waiting sequences, KV blocks, prefix-cache hit rate, counters."""
        return dict(self._stats)

    def shutdown(self) -> None:
        """Stop the step loop; unfinished requests end with "abort". Safe to call twice."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _prompt_token_ids(self, prompt: SequenceOf[Mapping[str, Any]] | SequenceOf[int]) -> list[int]:
        if isinstance(prompt, str) or not prompt:
            raise InvalidRequestError("The prompt must be a non-empty list of chat messages or of token ids.")
        if all(isinstance(m, Mapping) for m in prompt):
            return self.tokenizer.encode_chat(prompt)
        vocab = self.config.vocab_size
        if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in prompt):
            raise InvalidRequestError(f"Prompt token ids must be integers in [0, {vocab}).")
        return list(prompt)

    # -- the step loop (the engine thread) ---------------------------------------------------------

    def _choose_thread_count(self) -> None:
        """Measure a one-token step here, in the step loop's own thread, with all cores and with one; keep
        the faster.

        OpenMP teams started from a thread other than the main one behave differently: on the 2-core
        machines this was built on, a batch-1 step took 28 ms with two threads from such a thread against
        17.5 ms with one (12 ms with two from the main thread). No request exists yet, so the slot written
        (block 0, offset 0) holds nothing anyone reads before it is written again.
        """
        cores = torch.get_num_threads()
        if cores <= 1:
            return
        batch = Batch(
            input_ids=[0], positions=[0], query_lens=[1], context_lens=[1], block_tables=[[0]], slot_mapping=[0]
        )

        def step_ms(threads: int) -> float:
            torch.set_num_threads(threads)
            for _ in range(2):
                self.runner.execute(batch)
            times = []
            for _ in range(7):
                started = time.perf_counter()
                self.runner.execute(batch)
                times.append(time.perf_counter() - started)
            return statistics.median(times) * 1000

        timings = {threads: step_ms(threads) for threads in (cores, 1)}
        self._small_step_threads = min(timings, key=timings.__getitem__)
        self._large_step_threads = cores
        logger.info(
            "engine threads: %d for steps of up to %d tokens, %d above (one-token step %s ms)",
            self._small_step_threads,
            SMALL_STEP_TOKENS,
            cores,
            {k: round(v, 1) for k, v in timings.items()},
        )

    def _set_threads_for(self, num_tokens: int) -> None:
        # Small steps are int4 mat-vecs bound by memory, where one thread can win (see above); larger ones run
        # dense bf16 matmuls that scale with cores (measured: 16-way decode 258 tok/s on 2 threads, 200 on 1).
        wanted = self._small_step_threads if num_tokens <= SMALL_STEP_TOKENS else self._large_step_threads
        if wanted and wanted != self._threads_in_use:
            torch.set_num_threads(wanted)
            self._threads_in_use = wanted

    def _run(self) -> None:
        with torch.inference_mode():
            if self._threads_requested is None and self.device == "cpu":
                self._choose_thread_count()
            while True:
                with self._wakeup:
                    while not (self._inbox or self._aborts or self._stopping or self.scheduler.has_unfinished()):
                        self._wakeup.wait()
                    if self._stopping:
                        break
                    inbox, self._inbox = self._inbox, []
                    aborts, self._aborts = self._aborts, []
                for seq in inbox:
                    self.scheduler.add(seq)
                for request_id in aborts:
                    self._abort_now(request_id)
                if self.scheduler.has_unfinished():
                    self._step()
                self._flush_sinks()
                self._publish_stats()
        with self._wakeup:
            leftover = self._inbox
            self._inbox = []
        for seq in leftover:
            self.scheduler.add(seq)
        for seq in [*self.scheduler.running, *self.scheduler.waiting]:
            self._end(seq, "abort")
        self._flush_sinks()
        self._publish_stats()

    def _step(self) -> None:
        scheduled = self.scheduler.schedule()
        if scheduled is None:
            return
        started = time.perf_counter()
        try:
            self._set_threads_for(scheduled.batch.num_tokens)
            logits = self.runner.execute(scheduled.batch)  # (B, V) float32
            rows = self.scheduler.on_executed(scheduled)
            seqs = [scheduled.seqs[i] for i in rows]
            tokens: list[int] = []
            logprobs: list[TokenLogprob | None] = []
            if seqs:
                tokens, logprobs = sample(logits if len(rows) == len(scheduled.seqs) else logits[rows], seqs)
        except Exception as exc:
            # The loop must outlive a bad step (out of memory, a kernel error): only this batch's requests fail.
            logger.exception("Engine step failed for %d sequences", len(scheduled.seqs))
            self._fail_all(scheduled, exc)
            return
        if self.on_step is not None:
            kind = "decode" if scheduled.batch.num_tokens == len(scheduled.seqs) else "prefill"
            self.on_step(kind, len(scheduled.seqs), time.perf_counter() - started)
        for seq, token, logprob in zip(seqs, tokens, logprobs, strict=True):
            try:
                self._emit(seq, token, logprob)
            except Exception as exc:
                logger.exception("Turning a token into text failed for request %s", seq.request_id)
                self._end(seq, "error", error=f"{type(exc).__name__}: {exc}")

    def _emit(self, seq: Sequence, token: int, logprob: TokenLogprob | None) -> None:
        request = self._requests.get(seq.request_id)
        if request is None:  # its stream was left early and its abort is on the way
            self.scheduler.finish(seq, "abort")
            return
        reason = self.scheduler.append_token(seq, token)
        self._generated_tokens += 1
        text = ""
        if reason != "stop":  # an EOS or stop token ends the reply without being part of its text
            text, stopped = request.stops.push(request.detokenizer.push(token))
            if stopped:
                reason = "stop"
        if reason is not None and not request.stops.stopped:
            tail, stopped = request.stops.push(request.detokenizer.flush())
            text += tail + request.stops.flush()
            if stopped:
                reason = "stop"
        if reason is not None:
            self.scheduler.finish(seq, reason)
        output = RequestOutput(
            seq.request_id, text, [token], reason, _usage(seq), [logprob] if logprob is not None else None
        )
        self._deliver(request, output)

    def _deliver(self, request: _Request, output: RequestOutput) -> None:
        if request.sink is None:
            request.outputs.put(output)
            return
        if output.finish_reason is not None:
            self._requests.pop(output.request_id, None)
        _sink, outputs = self._sink_outputs.setdefault(id(request.sink), (request.sink, []))
        outputs.append((request, output))

    def _flush_sinks(self) -> None:
        """Hand each sink the outputs this step made for its requests, in one call."""
        while self._sink_outputs:
            pending, self._sink_outputs = self._sink_outputs, {}
            for sink, delivered in pending.values():
                try:
                    sink([output for _request, output in delivered])
                except Exception as exc:
                    logger.exception("A sink failed on %d outputs", len(delivered))
                    self._fail_sink_requests(sink, delivered, exc)

    def _fail_sink_requests(self, sink: Sink, delivered: list[tuple[_Request, RequestOutput]], exc: Exception) -> None:
        """The sink raised: end its requests of that call that were still going, with a last output "error"."""
        error = f"{type(exc).__name__}: {exc}"
        finals = []
        for request, output in delivered:
            if output.finish_reason is not None:
                continue
            self._requests.pop(output.request_id, None)
            self.scheduler.finish(request.seq, "error")
            finals.append(RequestOutput(output.request_id, "", [], "error", _usage(request.seq), None, error))
        if not finals:
            return
        try:
            sink(finals)
        except Exception:
            logger.exception("A sink failed again on the last outputs of %d requests", len(finals))

    def _abort_now(self, request_id: str) -> None:
        seq = self.scheduler.get(request_id)
        if seq is not None:
            self._end(seq, "abort")
        else:
            # Already finished: nobody will read the rest of its queue through stream(), so let it go.
            request = self._requests.get(request_id)
            if request is not None and request.seq.is_finished:
                self._requests.pop(request_id, None)

    def _end(self, seq: Sequence, reason: str, *, error: str | None = None) -> None:
        """Finish a sequence that produced no new token in this step and tell its stream."""
        self.scheduler.finish(seq, reason)
        request = self._requests.get(seq.request_id)
        if request is not None:
            logprobs = [] if seq.params.logprobs else None
            self._deliver(request, RequestOutput(seq.request_id, "", [], reason, _usage(seq), logprobs, error))

    def _fail_all(self, scheduled: ScheduledBatch, exc: Exception) -> None:
        for seq in scheduled.seqs:
            if not seq.is_finished:
                self._end(seq, "error", error=f"{type(exc).__name__}: {exc}")

    def _publish_stats(self) -> None:
        scheduler = self.scheduler
        blocks = scheduler.block_manager
        prompt = scheduler.prompt_tokens_total
        cached = scheduler.cached_prompt_tokens_total
        self._stats = {
            "running": len(scheduler.running),
            "waiting": len(scheduler.waiting),
            "kv_blocks_total": blocks.num_blocks,
            "kv_blocks_used": blocks.num_used_blocks,
            "kv_blocks_free": blocks.num_free_blocks,
            "kv_blocks_cached": blocks.num_cached_blocks,
            "prompt_tokens": prompt,
            "cached_prompt_tokens": cached,
            "prefix_hit_rate": cached / prompt if prompt else 0.0,
            "generated_tokens": self._generated_tokens,
            "preemptions": scheduler.num_preemptions,
        }


def _usage(seq: Sequence) -> Usage:
    return Usage(
        prompt_tokens=seq.num_prompt_tokens,
        cached_prompt_tokens=seq.num_cached_prompt_tokens or 0,
        completion_tokens=seq.num_output_tokens,
    )
