"""``make rehearsal`` in the form CI runs (16 concurrent chats instead of 64): the image built here from a Debian
base, Djinn's roles in podman containers behind PgBouncer and a load balancer, every step checked by the
script itself (deploy/rehearsal/rehearsal.py), which exits 1 on a failed check and removes what it started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.deploy.conftest import ROOT

STEPS = (
    "build the image and the services image",
    "start the migration and 10 containers",
    "sign up, chat and /v1 through each web",
    "16 concurrent chats through the balancer",
    "SIGTERM an inference worker mid-reply",
    "SIGTERM every other role",
    "remove what the rehearsal started",
)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a machine without the images builds them first: about six minutes
def test_the_rehearsal_deploys_every_role_and_each_step_passes():
    if os.geteuid() != 0:
        pytest.skip("the rehearsal needs root (debootstrap, podman networks)")
    if missing := [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]:
        pytest.skip(f"the rehearsal needs {', '.join(missing)} (.ci/run installs them; make rehearsal too)")

    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "rehearsal" / "rehearsal.py"), "--chats", "16"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    print(result.stdout)

    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    lines = result.stdout.splitlines()
    for number, step in enumerate(STEPS, start=1):
        assert any(line.startswith(f"{number:>2}. {step}") and "FAIL" not in line for line in lines), step
    assert lines[-1] == "rehearsal: every step passed"
    leftovers = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True)
    assert "djinn-rehearsal" not in leftovers.stdout
