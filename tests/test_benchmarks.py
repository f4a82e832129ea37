"""The serving benchmark still runs end to end (so it cannot rot), and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from benchmarks import serving_stack

BASE_DIR = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_serving_bench_quick_measures_all_three_paths_and_cleans_up(chat_model_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/serving_bench.py", "--quick", "--model", str(chat_model_path), "--timeout", "400"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=500,
    )

    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])["serving_bench"]
    for path in ("engine", "websocket", "sse"):
        assert report[path]["ttft_p50_ms"] > 0
        assert report[path]["tok_s"] > 0
        assert report[path]["tokens_per_request"] == report["workload"]["new_tokens"]  # the tiny model never stops
        assert report[path]["cpu_ms_per_token"]["web"] >= 0
        assert report[path]["cpu_ms_per_token"]["worker"] >= 0
    assert "TTFT p50 ms" in result.stdout
    assert "CPU ms per streamed token" in result.stdout
    scratch = report["scratch"]
    assert not serving_stack.database_exists(serving_stack.base_database_url(), scratch["database"])
    assert serving_stack.redis_db_is_empty(scratch["redis"])
    marks = (scratch["worker"], f"--port {scratch['port']}")  # the worker's node name, uvicorn's port
    commands = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert not [command for command in commands if any(mark in command for mark in marks)]


def test_documents_bench_finds_the_answer_and_drops_its_database() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/documents_bench.py", "--rounds", "1", "--megabytes", "0.05"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["benchmark"] == "documents"
    assert report["medians_ms"]["select passages"] > 0 and report["medians_ms"]["passages chosen"] >= 1
    base = serving_stack.base_database_url()
    assert not serving_stack.database_exists(base, base.rsplit("/", 1)[-1].split("?")[0] + "_docbench")
