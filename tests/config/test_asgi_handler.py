"""config.asgi_handler: one trip to a thread per request, threads reused, streamed responses closed."""

from __future__ import annotations

import asyncio
import io
import itertools
import threading
import warnings
from collections.abc import AsyncIterator

import pytest
from django.core import signals
from django.http import FileResponse, HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path

from config.asgi_handler import DjinnASGIHandler

seen: dict[str, list] = {"view_threads": [], "finished_threads": [], "stream_closed": []}


def where(request: HttpRequest) -> JsonResponse:
    seen["view_threads"].append(threading.get_ident())
    return JsonResponse({"ok": True})


async def endless(request: HttpRequest) -> StreamingHttpResponse:
    async def events() -> AsyncIterator[bytes]:
        try:
            for n in itertools.count():
                yield f"data: {n}\n\n".encode()
                await asyncio.sleep(0)
        finally:
            seen["stream_closed"].append(True)

    return StreamingHttpResponse(events(), content_type="text/event-stream")


def a_file(request: HttpRequest) -> FileResponse:
    # What WhiteNoise hands back for a static file: a response streaming a file through a sync iterator.
    return FileResponse(io.BytesIO(b"x" * 200_000 + b"end"), content_type="application/javascript")


urlpatterns = [path("where", where), path("endless", endless), path("file", a_file)]
pytestmark = pytest.mark.urls(__name__)


@pytest.fixture(autouse=True)
def _record_request_finished():
    for values in seen.values():
        values.clear()

    def receiver(**kwargs: object) -> None:
        seen["finished_threads"].append(threading.get_ident())

    signals.request_finished.connect(receiver)
    yield
    signals.request_finished.disconnect(receiver)


def scope(url: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def get(handler: DjinnASGIHandler, url: str) -> list[dict]:
    """One request whose client stays until the response has been sent."""
    sent: list[dict] = []
    body_read = False

    async def receive() -> dict:
        nonlocal body_read
        if not body_read:
            body_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    await handler(scope(url), receive, send)
    return sent


def test_a_request_runs_its_sync_code_in_one_thread_which_the_next_request_reuses():
    async def two_requests() -> tuple[list[dict], list[dict]]:
        handler = DjinnASGIHandler()
        return await get(handler, "/where"), await get(handler, "/where")

    first, second = asyncio.run(two_requests())

    assert [first[0]["status"], second[0]["status"]] == [200, 200]
    assert first[1]["body"] == second[1]["body"] == b'{"ok": true}'
    assert len(set(seen["view_threads"])) == 1
    assert seen["finished_threads"] == seen["view_threads"]  # request_finished: once a request, same thread
    assert seen["view_threads"][0] != threading.get_ident()


def test_a_file_is_sent_whole_without_djangos_sync_iterator_warning_and_closed_in_the_requests_thread():
    handler = DjinnASGIHandler()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="StreamingHttpResponse must consume synchronous iterators")
        sent = asyncio.run(get(handler, "/file"))

    body = b"".join(message.get("body", b"") for message in sent[1:])
    assert sent[0]["status"] == 200
    assert body == b"x" * 200_000 + b"end"
    assert len(seen["finished_threads"]) == 1 and seen["finished_threads"][0] != threading.get_ident()


def test_a_client_that_leaves_while_a_chunk_is_sent_closes_the_views_generator():
    async def leave_mid_stream() -> tuple[list[dict], list[bool]]:
        handler = DjinnASGIHandler()
        sent: list[dict] = []
        body_read = False
        chunk_sent = asyncio.Event()

        async def receive() -> dict:
            nonlocal body_read
            if not body_read:
                body_read = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await chunk_sent.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                chunk_sent.set()
                await asyncio.Event().wait()  # a slow client: this send never completes

        await asyncio.wait_for(handler(scope("/endless"), receive, send), timeout=10)
        return sent, list(seen["stream_closed"])  # before asyncio.run closes what is left at its end

    sent, closed = asyncio.run(leave_mid_stream())

    assert sent[0]["status"] == 200
    assert closed == [True]
    assert len(seen["finished_threads"]) == 1
