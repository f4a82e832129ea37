from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from inference.engine import Engine, SamplingParams
from inference.engine.__main__ import main

ROOT = Path(__file__).resolve().parents[3]


def test_piped_chat_answers_each_line_with_the_whole_conversation_as_context(
    tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=6)
    with Engine(tiny_llama_path, device="cpu") as engine:
        first = engine.generate([{"role": "user", "content": "Hello there"}], params).text
        history = [
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "And then?"},
        ]
        second = engine.generate(history, params).text
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello there\n\nAnd then?\n"))

    code = main(["chat", "--model", str(tiny_llama_path), "--device", "cpu", "--temperature", "0", "--max-tokens", "6"])

    assert code == 0
    assert capsys.readouterr().out == f"{first}\n{second}\n"


def test_chat_with_a_missing_model_says_so_and_exits_with_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["chat", "--model", str(tmp_path / "nope.gguf")])

    assert code == 1
    assert "Model not found" in capsys.readouterr().err


def test_quick_bench_prints_a_table_then_one_json_line_with_every_figure(tiny_llama_path: Path) -> None:
    # A real subprocess, as a user runs it: `python -m inference.engine bench`.
    command = ["-m", "inference.engine", "bench", "--model", str(tiny_llama_path), "--device", "cpu", "--quick"]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])

    assert "single-stream decode" in done.stdout
    assert set(figures) >= {
        "model",
        "device",
        "single_stream_tok_s",
        "aggregate_tok_s",
        "ttft_p50_ms",
        "ttft_p99_ms",
        "peak_rss_mib",
        "prefix_hit_rate",
        "turn1_ttft_ms",
        "turn10_ttft_ms",
    }
    assert set(figures["aggregate_tok_s"]) == {"1", "4", "16"}
    assert figures["prefix_hit_rate"] > 0.5
    assert figures["device"] == "cpu"
