"""``python -m inference.engine bench``: what one engine does on this machine.

Measures load time, prefill throughput, single-stream decode, aggregate decode at several concurrencies
(every request makes exactly ``new_tokens`` tokens: EOS is ignored), time to first token over those
requests, peak RSS, and a multi-turn chat's prefix-cache hit rate with turn-1 vs last-turn TTFT. Prints a
table, then one JSON line (last) for scripts. If llama-cpp-python is installed it runs the same GGUF with
2 threads for comparison.
"""

from __future__ import annotations

import json
import random
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .engine import Engine
from .errors import PromptTooLongError
from .sampling import SamplingParams


@dataclass
class Workload:
    prefill_tokens: int
    new_tokens: int
    concurrency: tuple[int, ...]
    chat_turns: int
    chat_reply_tokens: int


FULL = Workload(prefill_tokens=512, new_tokens=128, concurrency=(1, 4, 16, 64), chat_turns=10, chat_reply_tokens=48)
QUICK = Workload(prefill_tokens=128, new_tokens=32, concurrency=(1, 4, 16), chat_turns=10, chat_reply_tokens=16)


@dataclass
class Timing:
    submitted: float
    first: float = 0.0
    done: float = 0.0
    tokens: int = 0
    cached_prompt_tokens: int = 0
    prompt_tokens: int = 0


def run_bench(model: str | Path | None, *, device: str = "auto", quick: bool = False, out: TextIO) -> int:
    work = QUICK if quick else FULL
    started = time.perf_counter()
    engine = Engine(model, device=device)
    load_s = time.perf_counter() - started
    try:
        results = _measure(engine, work, load_s)
    finally:
        engine.shutdown()
    # Before llama.cpp loads its own copy of the model into this process.
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["llama_cpp"], results["llama_cpp_tok_s"] = _llama_cpp(engine.model_path, work.new_tokens)
    ours = results["single_stream_tok_s"]
    theirs = results["llama_cpp_tok_s"]
    results["llama_cpp_ratio"] = round(ours / theirs, 3) if theirs else None
    _print_table(results, out)
    out.write(json.dumps(results) + "\n")
    out.flush()
    return 0


def _measure(engine: Engine, work: Workload, load_s: float) -> dict[str, Any]:
    rng = random.Random(0)
    vocab = engine.config.vocab_size

    def random_prompt(n: int) -> list[int]:
        # Fresh random ids every time, so nothing here is served from the prefix cache.
        return [rng.randrange(vocab) for _ in range(n)]

    engine.generate(random_prompt(16), SamplingParams(temperature=0.0, max_tokens=4))  # warm-up
    prefill = _run_requests(engine, [random_prompt(work.prefill_tokens)], max_tokens=1)[0]
    single = _run_requests(engine, [random_prompt(32)], max_tokens=work.new_tokens)[0]
    aggregate: dict[str, float] = {}
    ttfts: list[float] = []
    for concurrency in work.concurrency:
        timings = _run_requests(engine, [random_prompt(32) for _ in range(concurrency)], max_tokens=work.new_tokens)
        wall = max(t.done for t in timings) - min(t.submitted for t in timings)
        aggregate[str(concurrency)] = round(sum(t.tokens for t in timings) / wall, 1)
        ttfts += [t.first - t.submitted for t in timings]
    chat = _chat(engine, work)
    prompt_tokens = sum(t.prompt_tokens for t in chat)
    return {
        "model": engine.model_path.name,
        "device": engine.device,
        "load_s": round(load_s, 2),
        "prefill_tok_s": round(work.prefill_tokens / (prefill.first - prefill.submitted), 1),
        "single_stream_tok_s": round((single.tokens - 1) / (single.done - single.first), 1),
        "aggregate_tok_s": aggregate,
        "ttft_p50_ms": round(_percentile(ttfts, 50) * 1e3, 1),
        "ttft_p99_ms": round(_percentile(ttfts, 99) * 1e3, 1),
        "prefix_hit_rate": round(sum(t.cached_prompt_tokens for t in chat) / prompt_tokens, 3),
        "turn1_ttft_ms": round((chat[0].first - chat[0].submitted) * 1e3, 1),
        "turn10_ttft_ms": round((chat[-1].first - chat[-1].submitted) * 1e3, 1),  # the last turn (see chat_turns)
        "chat_turns": len(chat),
        "new_tokens": work.new_tokens,
    }


def _run_requests(engine: Engine, prompts: list[list[int]], *, max_tokens: int) -> list[Timing]:
    """Submit all prompts at once and read every stream on its own thread, as concurrent clients would."""
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    timings = []
    threads = []
    for prompt in prompts:
        timing = Timing(submitted=time.perf_counter())
        request_id = engine.submit(prompt, params)
        timings.append(timing)
        threads.append(threading.Thread(target=_consume, args=(engine, request_id, timing)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings


def _consume(engine: Engine, request_id: str, timing: Timing) -> None:
    for delta in engine.stream(request_id):
        if delta.token_ids and not timing.tokens:
            timing.first = time.perf_counter()
        timing.tokens += len(delta.token_ids)
        timing.prompt_tokens = delta.usage.prompt_tokens
        timing.cached_prompt_tokens = delta.usage.cached_prompt_tokens
    timing.done = time.perf_counter()


def _chat(engine: Engine, work: Workload) -> list[Timing]:
    """A conversation of up to ``chat_turns`` turns; each turn's prompt is the whole history so far."""
    params = SamplingParams(temperature=0.0, max_tokens=work.chat_reply_tokens)
    history = [{"role": "system", "content": "You are a concise assistant. Answer in a sentence or two."}]
    timings = []
    for turn in range(1, work.chat_turns + 1):
        history.append({"role": "user", "content": f"Tell me one fact about the number {turn * 7}."})
        timing = Timing(submitted=time.perf_counter())
        try:
            request_id = engine.submit(history, params)
        except PromptTooLongError:
            break  # a small-context model: the chat ends here and the report says how many turns it had
        reply = []
        for delta in engine.stream(request_id):
            if delta.token_ids and not timing.tokens:
                timing.first = time.perf_counter()
            timing.tokens += len(delta.token_ids)
            timing.prompt_tokens = delta.usage.prompt_tokens
            timing.cached_prompt_tokens = delta.usage.cached_prompt_tokens
            reply.append(delta.text)
        timing.done = time.perf_counter()
        history.append({"role": "assistant", "content": "".join(reply)})
        timings.append(timing)
    return timings


def _llama_cpp(model_path: Path, new_tokens: int) -> tuple[str, float | None]:
    """llama.cpp's single-stream decode tok/s on the same GGUF with 2 threads, and a status line."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return "not installed", None
    if model_path.suffix != ".gguf":
        return "skipped: the model is not a GGUF file", None
    llm = Llama(model_path=str(model_path), n_threads=2, n_ctx=1024, verbose=False)
    prompt = llm.tokenize(b"Write a long story about a lighthouse keeper.")
    best = 0.0
    for _ in range(2):  # the first run pays for warm-up
        llm.reset()
        count = 0
        first = time.perf_counter()
        for _token in llm.generate(prompt, top_k=1, temp=0.0):
            count += 1
            if count == 1:
                first = time.perf_counter()
            if count == new_tokens:  # counted the same way as ours: EOS does not end it
                break
        best = max(best, (count - 1) / (time.perf_counter() - first))
    return "measured", round(best, 1)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return ordered[rank]


def _print_table(r: dict[str, Any], out: TextIO) -> None:
    rows = [
        ("model", r["model"]),
        ("device", r["device"]),
        ("load time", f"{r['load_s']} s"),
        ("prefill", f"{r['prefill_tok_s']} tok/s"),
        ("single-stream decode", f"{r['single_stream_tok_s']} tok/s"),
    ]
    rows += [
        (f"aggregate decode, {c} concurrent", f"{v} tok/s ({r['new_tokens']} new tokens each)")
        for c, v in r["aggregate_tok_s"].items()
    ]
    rows += [
        ("TTFT p50 / p99 (concurrency sweep)", f"{r['ttft_p50_ms']} / {r['ttft_p99_ms']} ms"),
        ("peak RSS", f"{r['peak_rss_mib']} MiB"),
        (f"prefix-cache hit rate ({r['chat_turns']}-turn chat)", f"{r['prefix_hit_rate']:.1%}"),
        (f"TTFT turn 1 vs turn {r['chat_turns']}", f"{r['turn1_ttft_ms']} vs {r['turn10_ttft_ms']} ms"),
    ]
    if r["llama_cpp_tok_s"] is None:
        rows.append(("llama.cpp (llama-cpp-python)", f"{r['llama_cpp']}: no comparison"))
    else:
        rows.append(("llama.cpp single stream, 2 threads", f"{r['llama_cpp_tok_s']} tok/s"))
        rows.append(("ours / llama.cpp", f"{r['llama_cpp_ratio']}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        out.write(f"{name:<{width}}  {value}\n")
