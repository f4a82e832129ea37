"""The image's entry point: ``djinn ROLE`` (python -m config.role) runs the Procfile's process of that name, or
``migrate``, or any other command as given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from config import role
from config.env import database_url

ROOT = Path(__file__).resolve().parents[2]


def djinn(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "config.role", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_roles_are_the_procfiles_processes_and_migrate():
    assert role.roles() == ["web", "worker", "beat", "inference-worker", "migrate"]
    usage = djinn("help")
    assert usage.returncode == 0
    assert "roles: web, worker, beat, inference-worker, migrate" in usage.stdout


def test_a_role_execs_its_procfile_command_with_the_extra_arguments_after_it():
    [shell, flag, line] = role.role_command("beat", ["--pidfile", "/tmp/beat pid"])

    assert [shell, flag] == ["/bin/sh", "-c"]
    assert line == "exec " + role.procfile_roles()["beat"] + " --pidfile '/tmp/beat pid'"
    # The shell fills in the Procfile's defaults from the environment, as honcho does.
    shown = subprocess.run(
        [shell, flag, line.replace("exec celery", "exec echo celery", 1)],
        env={"PATH": os.environ["PATH"], "DJINN_VAR_DIR": "/var/lib/djinn"},
        capture_output=True,
        text=True,
    )
    assert "--schedule /var/lib/djinn/celerybeat-schedule" in shown.stdout


def test_anything_else_runs_as_a_command_and_a_missing_one_says_so():
    ran = djinn(sys.executable, "-c", "import os; print(os.getcwd())")
    assert (ran.returncode, ran.stdout.strip()) == (0, str(ROOT))

    missing = djinn("no-such-role")
    assert missing.returncode == 127
    assert "cannot run 'no-such-role'" in missing.stderr and "Roles: web," in missing.stderr


@pytest.mark.django_db
def test_migrate_checks_and_applies_migrations_against_the_configured_database():
    env = {"DATABASE_URL": database_url(settings.DATABASES["default"]), "DJANGO_SETTINGS_MODULE": "config.settings"}
    checked = djinn("migrate", "--check", **env)
    assert checked.returncode == 0, checked.stderr

    applied = djinn("migrate", **env)
    assert applied.returncode == 0, applied.stderr
    assert "No migrations to apply." in applied.stdout
