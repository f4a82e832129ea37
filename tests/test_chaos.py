"""The fault suite's short form (``python -m chaos --short``): every scenario of ``make chaos`` against the
real processes, with fewer clients and shorter waits. It prints one line per scenario; a violation fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1200


@pytest.mark.slow
def test_the_fault_suite_short_form_finds_no_violation() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "DJANGO_SETTINGS"))}

    result = subprocess.run(
        [sys.executable, "-m", "chaos", "--short"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )

    print(result.stdout)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-6000:]}"
