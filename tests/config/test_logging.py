from __future__ import annotations

import json
import logging

import pytest

from config.logging import JsonFormatter
from config.request_id import RequestIdFilter, request_id_var


def test_json_lines_carry_level_logger_message_request_id_and_extras():
    record = logging.LogRecord("djinn.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.generation_id = "abc"
    token = request_id_var.set("req-123456")
    RequestIdFilter().filter(record)
    request_id_var.reset(token)

    line = JsonFormatter().format(record)

    payload = json.loads(line)
    assert payload["level"] == "info"
    assert payload["logger"] == "djinn.test"
    assert payload["message"] == "hello world"
    assert payload["request_id"] == "req-123456"
    assert payload["generation_id"] == "abc"
    assert "\n" not in line


@pytest.mark.django_db
def test_every_response_carries_a_request_id(client):
    first = client.get("/healthz")
    second = client.get("/healthz")

    assert len(first["X-Request-ID"]) == 32
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
def test_a_well_formed_incoming_request_id_is_kept_and_a_malformed_one_replaced(client):
    kept = client.get("/healthz", HTTP_X_REQUEST_ID="lb-0123456789")
    replaced = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")

    assert kept["X-Request-ID"] == "lb-0123456789"
    assert replaced["X-Request-ID"] != "bad id\nwith newline"


@pytest.mark.django_db
def test_log_lines_written_during_a_request_carry_its_id(client, caplog):
    caplog.handler.addFilter(RequestIdFilter())

    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get("/no-such-page/")

    lines = [record for record in caplog.records if record.name == "django.request"]
    assert response.status_code == 404
    assert lines
    assert {record.request_id for record in lines} == {response["X-Request-ID"]}
