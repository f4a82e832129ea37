"""The deployment's files, rendered and checked offline: kubectl (kustomize), kubernetes-validate, promtool.

A tool that is missing skips its tests with the reason; CI installs all three (requirements-dev.txt and
.ci/run)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
OVERLAYS = ("cpu", "gpu")


def tool(name: str) -> str:
    """The executable ``name``: beside this Python (the virtualenv's bin) or on PATH; skips when missing."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(
            f"{name} is not installed (pip install -r requirements-dev.txt; promtool: apt-get install prometheus)"
        )
    return found


def render(overlay: str) -> str:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    """Each overlay's manifests as kubectl renders them."""
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def resources(rendered) -> dict[str, list[dict]]:
    """Each overlay's manifests, parsed."""
    return {overlay: [doc for doc in yaml.safe_load_all(text) if doc] for overlay, text in rendered.items()}
