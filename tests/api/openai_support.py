"""Shared by the tests/api/test_openai_*.py modules: an SDK client on the live server, and raw requests for
what the SDK will not send (no key, bad JSON, a wrong method)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx2  # the HTTP client of the pinned openai SDK
from openai import OpenAI

MODEL = "smollm2-135m-instruct"  # the default registry entry; DJINN_MODEL points it at the tiny model
HELLO = [{"role": "user", "content": "Hello there"}]


def sdk(live_server_url: str, key: str) -> OpenAI:
    return OpenAI(base_url=f"{live_server_url}/v1", api_key=key, max_retries=0, timeout=60)


def raw(live_server_url: str, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> httpx2.Response:
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx2.request(method, f"{live_server_url}{path}", headers=headers, timeout=60, **kwargs)


def generation_id(completion_id: str) -> UUID:
    """The generation behind a completion id (``chatcmpl-<hex of the first choice's generation id>``)."""
    return UUID(completion_id.removeprefix("chatcmpl-"))
