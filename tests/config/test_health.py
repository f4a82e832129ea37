from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

pytestmark = pytest.mark.django_db


def test_healthz_says_the_process_is_alive(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_when_database_redis_and_migrations_are_fine(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_readyz_names_redis_when_it_is_unreachable(client, settings, unused_tcp_port):
    settings.REDIS_URL = f"redis://127.0.0.1:{unused_tcp_port}/0"

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "fail", "checks": {"database": "ok", "redis": "redis unreachable"}}


def test_readyz_names_the_database_when_it_is_unreachable(unused_tcp_port):
    env = dict(os.environ, DATABASE_URL=f"postgres://postgres@127.0.0.1:{unused_tcp_port}/djinn")
    env["REDIS_URL"] = django_settings.REDIS_URL
    script = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client(HTTP_HOST='localhost').get('/readyz'); print(r.status_code, json.dumps(r.json()))"
    )

    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    status, body = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "503"
    assert '"database": "database unreachable"' in body
    assert '"redis": "ok"' in body


def test_metrics_are_open_when_no_token_is_set(client, settings):
    settings.METRICS_TOKEN = ""

    response = client.get("/metrics")

    assert response.status_code == 200
    assert b"django_http_requests_total" in response.content


def test_metrics_require_the_bearer_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"

    missing = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")

    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert b"django_http_requests_total" in right.content


def test_a_request_with_a_wrong_host_gets_400(client):
    response = client.get("/healthz", HTTP_HOST="evil.example.com")

    assert response.status_code == 400
