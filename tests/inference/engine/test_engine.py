"""The engine end to end on the tiny random Llama (float32, so batched and one-at-a-time runs agree exactly)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from inference.engine import (
    Engine,
    EngineError,
    InvalidRequestError,
    PromptTooLongError,
    RequestOutput,
    SamplingParams,
)

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


def make_engine(path: Path, **options: object) -> Engine:
    return Engine(path, device="cpu", dtype=torch.float32, **options)


@pytest.fixture(scope="module")
def engine(tiny_llama_path: Path) -> Iterator[Engine]:
    with make_engine(tiny_llama_path, num_kv_blocks=64, max_num_seqs=8, max_num_batched_tokens=64) as eng:
        yield eng


def idle_stats(engine: Engine) -> dict:
    """Stats once the step loop has gone idle (it publishes them right after the step that ends the last request)."""
    deadline = time.monotonic() + 10
    stats = engine.stats()
    while (stats["running"] or stats["waiting"]) and time.monotonic() < deadline:
        time.sleep(0.01)
        stats = engine.stats()
    return stats


def collect(engine: Engine, request_id: str) -> list[RequestOutput]:
    return list(engine.stream(request_id))


def random_prompt(rng: random.Random, low: int, high: int) -> list[int]:
    return [rng.randrange(3, 512) for _ in range(rng.randrange(low, high))]


def test_concurrent_requests_with_random_aborts_all_end_and_match_one_at_a_time_runs(engine: Engine) -> None:
    rng = random.Random(0)
    # (prompt, max_tokens, abort after reading this many deltas: 99 = never)
    jobs = [(random_prompt(rng, 1, 120), rng.randrange(1, 30), rng.choice([1, 3, 99, 99, 99])) for _ in range(40)]
    results: dict[int, list[RequestOutput]] = {}

    def client(indices: list[int]) -> None:
        submitted = {
            i: engine.submit(jobs[i][0], SamplingParams(temperature=0.0, max_tokens=jobs[i][1])) for i in indices
        }
        for i in indices:
            results[i] = []
            for delta in engine.stream(submitted[i]):
                results[i].append(delta)
                if len(results[i]) == jobs[i][2]:
                    engine.abort(submitted[i])

    threads = [threading.Thread(target=client, args=(list(range(k, 40, 4)),)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = idle_stats(engine)
    alone = [engine.generate(prompt, SamplingParams(temperature=0.0, max_tokens=n)) for prompt, n, _ in jobs]
    streamed = [[t for delta in results[i] for t in delta.token_ids] for i in range(40)]
    ended = [results[i][-1].finish_reason for i in range(40)]
    completed = [i for i in range(40) if ended[i] != "abort"]

    assert set(ended) <= {"stop", "length", "abort"}
    assert [delta.finish_reason for i in range(40) for delta in results[i][:-1]] == [None] * sum(
        len(results[i]) - 1 for i in range(40)
    )
    assert [streamed[i] for i in range(40)] == [alone[i].token_ids[: len(streamed[i])] for i in range(40)]
    assert [streamed[i] for i in completed] == [alone[i].token_ids for i in completed]
    assert ["".join(d.text for d in results[i]) for i in completed] == [alone[i].text for i in completed]
    assert "abort" in ended
    assert stats["kv_blocks_used"] == 0


def test_preemption_in_a_tiny_kv_cache_keeps_greedy_outputs_unchanged(tiny_llama_path: Path) -> None:
    rng = random.Random(1)
    prompts = [random_prompt(rng, 30, 50) for _ in range(6)]
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    with make_engine(tiny_llama_path, num_kv_blocks=12, max_num_seqs=6, max_num_batched_tokens=64) as small:
        ids = [small.submit(p, params) for p in prompts]
        together = [[t for r in collect(small, i) for t in r.token_ids] for i in ids]
        stats = idle_stats(small)
        alone = [small.generate(p, params).token_ids for p in prompts]

    assert together == alone
    assert stats["preemptions"] > 0
    assert stats["kv_blocks_used"] == 0


def test_a_repeated_prefix_is_served_from_the_cache_and_counted(engine: Engine) -> None:
    history = [
        {"role": "system", "content": "You are a helpful assistant. " * 12},
        {"role": "user", "content": "The capital of France is Paris."},
    ]
    first = engine.generate(history, GREEDY)
    history += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And Italy?"}]

    second = engine.generate(history, GREEDY)

    assert first.usage.cached_prompt_tokens == 0
    assert second.usage.cached_prompt_tokens >= first.usage.prompt_tokens // 16 * 16
    assert second.usage.cached_prompt_tokens % 16 == 0
    assert engine.stats()["prefix_hit_rate"] > 0


def test_messages_are_rendered_with_the_models_chat_template(engine: Engine) -> None:
    messages = [{"role": "user", "content": "Hello! How can I help you today?"}]

    out = engine.generate(messages, SamplingParams(temperature=0.0, max_tokens=2))

    assert out.usage.prompt_tokens == len(engine.tokenizer.encode_chat(messages))


def test_the_same_seed_gives_the_same_reply_even_beside_other_requests(engine: Engine) -> None:
    prompt = [10, 20, 30, 40]
    seeded = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=20, ignore_eos=True, seed=7)
    alone = engine.generate(prompt, seeded)
    others = [engine.submit([50 + i] * 30, SamplingParams(temperature=1.0, max_tokens=20)) for i in range(3)]

    crowded = engine.generate(prompt, seeded)
    other_seed = engine.generate(prompt, SamplingParams(temperature=1.0, max_tokens=20, ignore_eos=True, seed=8))
    for request_id in others:
        collect(engine, request_id)

    assert crowded.token_ids == alone.token_ids
    assert other_seed.token_ids != alone.token_ids


def test_a_stop_string_ends_the_reply_just_before_it(engine: Engine) -> None:
    prompt = [100, 200, 300]
    full = engine.generate(prompt, SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True))
    stop = full.text[8:11]

    cut = engine.generate(prompt, SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True, stop=[stop]))

    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]


def test_max_tokens_ends_the_reply_with_length(engine: Engine) -> None:
    out = engine.generate([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True))

    assert out.finish_reason == "length"
    assert len(out.token_ids) == 5
    assert out.usage.completion_tokens == 5


def test_logprobs_come_with_each_token_when_asked(engine: Engine) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, logprobs=True, top_logprobs=2)

    out = engine.generate([8, 9, 10], params)

    assert [lp.token_id for lp in out.logprobs] == out.token_ids
    assert all(lp.logprob <= 0.0 and len(lp.top) == 2 for lp in out.logprobs)
    assert [lp.top[0][0] for lp in out.logprobs] == out.token_ids


def test_a_prompt_longer_than_the_context_is_refused_at_submit_and_serving_goes_on(engine: Engine) -> None:
    too_long = [7] * engine.max_model_len

    with pytest.raises(PromptTooLongError) as refused:
        engine.submit(too_long, SamplingParams(max_tokens=1))
    after = engine.generate([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True))

    assert refused.value.max_context == engine.max_model_len
    assert after.finish_reason == "length"


def test_bad_prompts_are_invalid_requests(engine: Engine) -> None:
    with pytest.raises(InvalidRequestError):
        engine.submit([], GREEDY)
    with pytest.raises(InvalidRequestError):
        engine.submit([1, 2, 100_000], GREEDY)


def test_abort_ends_the_stream_with_abort_and_frees_its_blocks(engine: Engine) -> None:
    request_id = engine.submit([3, 4, 5] * 40, SamplingParams(temperature=0.0, max_tokens=300, ignore_eos=True))
    stream = engine.stream(request_id)
    next(stream)

    engine.abort(request_id)
    rest = list(stream)

    assert rest[-1].finish_reason == "abort"
    assert len([t for r in rest for t in r.token_ids]) < 299
    assert idle_stats(engine)["kv_blocks_used"] == 0


def test_leaving_a_stream_early_aborts_the_request(engine: Engine) -> None:
    request_id = engine.submit([9, 9, 9], SamplingParams(temperature=0.0, max_tokens=400, ignore_eos=True))

    for _ in engine.stream(request_id):
        break

    assert idle_stats(engine)["kv_blocks_used"] == 0
    with pytest.raises(InvalidRequestError):
        engine.stream(request_id).__next__()


class Sink:
    """Collects what the engine thread hands over, one call per step, and lets the test wait for the requests'
    last outputs. ``fail_at``: raise on that call (1-based)."""

    def __init__(self, expected: int = 1, fail_at: int | None = None) -> None:
        self.calls: list[list[RequestOutput]] = []
        self.threads: set[str] = set()
        self.expected = expected
        self.finished = threading.Event()
        self.fail_at = fail_at

    def __call__(self, outputs: list[RequestOutput]) -> None:
        self.threads.add(threading.current_thread().name)
        self.calls.append(outputs)
        if sum(o.finish_reason is not None for o in self.outputs) >= self.expected:
            self.finished.set()
        if len(self.calls) == self.fail_at:
            raise RuntimeError("the consumer broke")

    @property
    def outputs(self) -> list[RequestOutput]:
        return [output for call in self.calls for output in call]

    def of(self, request_id: str) -> list[RequestOutput]:
        return [output for output in self.outputs if output.request_id == request_id]

    def wait(self) -> list[RequestOutput]:
        assert self.finished.wait(30), "the requests never ended"
        return self.outputs


def test_a_sink_gets_the_same_outputs_as_a_stream_from_the_engine_thread_once_per_step(engine: Engine) -> None:
    prompt = [5, 6, 7, 8] * 5
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True, stop=["zz"])
    streamed = collect(engine, engine.submit(prompt, params))
    sink = Sink(expected=4)
    with engine._wakeup:  # all four join the same first step
        request_ids = [engine.submit(prompt, params, sink=sink) for _ in range(4)]

    sink.wait()

    for request_id in request_ids:
        assert [(o.text, o.token_ids, o.finish_reason) for o in sink.of(request_id)] == [
            (o.text, o.token_ids, o.finish_reason) for o in streamed
        ]
    assert sink.threads == {"djinn-engine"}
    # One call per step, each with one output of every request: the step is the unit of output.
    assert len(sink.calls) == len(streamed)
    assert all(sorted(o.request_id for o in call) == sorted(request_ids) for call in sink.calls)
    assert idle_stats(engine)["kv_blocks_used"] == 0


def test_a_sinks_request_cannot_also_be_streamed_and_is_forgotten_when_it_ends(engine: Engine) -> None:
    sink = Sink()
    request_id = engine.submit([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True), sink=sink)
    with pytest.raises(InvalidRequestError):
        next(engine.stream(request_id))
    sink.wait()

    # Its id is free again once the last output was handed over.
    assert collect(engine, engine.submit([1, 2, 3], GREEDY, request_id=request_id))[-1].finish_reason == "length"


def test_aborting_a_sinks_request_ends_it_with_abort(engine: Engine) -> None:
    sink = Sink()
    params = SamplingParams(temperature=0.0, max_tokens=300, ignore_eos=True)
    request_id = engine.submit([3, 4, 5] * 40, params, sink=sink)
    deadline = time.monotonic() + 10
    while not sink.calls and time.monotonic() < deadline:
        time.sleep(0.005)

    engine.abort(request_id)
    outputs = sink.wait()

    assert outputs[-1].finish_reason == "abort"
    assert sum(len(o.token_ids) for o in outputs) < 300
    assert idle_stats(engine)["kv_blocks_used"] == 0


def test_a_sink_that_raises_ends_its_requests_with_an_error_and_nothing_else(engine: Engine) -> None:
    broken, healthy = Sink(fail_at=2), Sink()
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    with engine._wakeup:
        engine.submit([7, 8, 9], params, sink=broken)
        engine.submit([7, 8, 9], params, sink=healthy)

    outputs = broken.wait()

    assert [o.finish_reason for o in outputs] == [None, None, "error"]
    assert "the consumer broke" in outputs[-1].error
    assert healthy.wait()[-1].finish_reason == "length"
    assert sum(len(o.token_ids) for o in healthy.outputs) == 20
    assert idle_stats(engine)["kv_blocks_used"] == 0


def test_a_failing_step_fails_only_its_requests_and_the_loop_keeps_serving(tiny_llama_path: Path) -> None:
    with make_engine(tiny_llama_path, num_kv_blocks=32) as eng:
        # Fault injection at the device boundary: the model "crashes" on any batch holding token 66.
        execute = eng.runner.execute

        def flaky_execute(batch):
            if 66 in batch.input_ids:
                raise RuntimeError("simulated device fault")
            return execute(batch)

        eng.runner.execute = flaky_execute
        failed = list(eng.stream(eng.submit([66, 67], GREEDY)))
        with pytest.raises(EngineError):
            eng.generate([66], GREEDY)
        healthy = eng.generate([1, 2, 3], GREEDY)
        stats = idle_stats(eng)

    assert failed[-1].finish_reason == "error"
    assert "simulated device fault" in failed[-1].error
    assert healthy.finish_reason == "length"
    assert stats["kv_blocks_used"] == 0


def test_shutdown_aborts_what_is_running_and_refuses_new_work(tiny_llama_path: Path) -> None:
    eng = make_engine(tiny_llama_path, num_kv_blocks=32)
    request_id = eng.submit([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=400, ignore_eos=True))
    stream = eng.stream(request_id)
    next(stream)

    eng.shutdown()

    assert list(stream)[-1].finish_reason == "abort"
    with pytest.raises(EngineError):
        eng.submit([1, 2, 3], GREEDY)
