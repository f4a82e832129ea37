"""Settings read the environment once, and a bad value stops the process with a message naming it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import dj_database_url
import pytest
from django.conf import settings as django_settings

BASE_DIR = Path(__file__).resolve().parents[2]


def run_django(args: list[str], **overrides: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=os.environ.get("DATABASE_URL", ""), REDIS_URL=django_settings.REDIS_URL)
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "DATABASE_URL",
            "mysql://root@localhost/djinn",
            "DATABASE_URL='mysql://root@localhost/djinn' is not a valid URL",
        ),
        ("DATABASE_URL", "postgres://user:pw@:notaport/db", "DATABASE_URL="),
        ("REDIS_URL", "http://localhost:6379", "REDIS_URL='http://localhost:6379' is not a valid URL"),
        ("DJANGO_DEBUG", "maybe", "DJANGO_DEBUG='maybe' is not a boolean"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml' must be one of: text, json"),
        ("DJINN_DEVICE", "tpu", "DJINN_DEVICE='tpu' must be one of: auto, cpu, cuda"),
        ("EMAIL_URL", "pigeon://coop", "EMAIL_URL='pigeon://coop' is not a valid URL"),
    ],
)
def test_a_bad_environment_value_fails_at_start_naming_the_variable(variable, value, message):
    result = run_django(["check"], **{variable: value})

    assert result.returncode != 0
    assert message in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_a_password_in_a_bad_url_is_not_printed():
    result = run_django(["check"], DATABASE_URL="mysql://root:hunter2@localhost/djinn")

    assert result.returncode != 0
    assert "hunter2" not in result.stderr


def test_production_requires_a_secret_key():
    result = run_django(["check"], DJANGO_DEBUG="0", DJANGO_SECRET_KEY="", DJANGO_ALLOWED_HOSTS="djinn.example.com")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in result.stderr


def test_production_settings_pass_check_deploy_with_no_warnings():
    result = run_django(
        ["check", "--deploy", "--fail-level", "WARNING"],
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS="djinn.example.com",
    )

    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout


def test_a_databases_entry_round_trips_through_database_url():
    from config.env import database_url

    socket_entry = {"HOST": "/srv/djinn var/pg", "PORT": "5432", "USER": "postgres", "NAME": "djinn"}
    tcp_entry = {"HOST": "db.internal", "PORT": 6432, "USER": "app", "PASSWORD": "p@ss:word", "NAME": "djinn"}

    socket_parsed = dj_database_url.parse(database_url(socket_entry))
    tcp_parsed = dj_database_url.parse(database_url(tcp_entry))

    assert (socket_parsed["HOST"], socket_parsed["USER"], socket_parsed["NAME"]) == (
        "/srv/djinn var/pg",
        "postgres",
        "djinn",
    )
    assert (tcp_parsed["HOST"], tcp_parsed["PORT"], tcp_parsed["PASSWORD"]) == ("db.internal", 6432, "p@ss:word")


@pytest.mark.parametrize("pgbouncer", ["0", "1"])
def test_behind_pgbouncer_no_server_side_cursor_prepared_statement_or_startup_option_is_used(pgbouncer):
    show = (
        "import json; from django.conf import settings; d = settings.DATABASES['default']; "
        "print(json.dumps([d['DISABLE_SERVER_SIDE_CURSORS'], d['OPTIONS'].get('prepare_threshold', 5), "
        "d['OPTIONS'].get('options')]))"
    )
    result = run_django(["shell", "-c", show], DATABASE_PGBOUNCER=pgbouncer, DATABASE_STATEMENT_TIMEOUT_MS="30000")

    assert result.returncode == 0, result.stderr
    expected = [True, None, None] if pgbouncer == "1" else [False, 5, "-c statement_timeout=30000"]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
