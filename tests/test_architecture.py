"""The import rules of DESIGN.md ("Layout"), as contracts in .importlinter, checked with import-linter:
apps depend one way, the engine imports nothing from Django nor from the rest of Djinn, the engine's package is
its only door, and the worker's side of a generation imports nothing of the web side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]


def test_every_import_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")

    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=BASE_DIR, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout
