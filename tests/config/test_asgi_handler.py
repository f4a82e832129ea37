"""config.asgi_handler: one trip to a thread per request, threads reused and bounded, streamed responses closed
and holding neither a thread nor a database connection, bodies over the limit refused before they are read."""

from __future__ import annotations

import asyncio
import io
import itertools
import threading
import warnings
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from django.core import signals
from django.db import connection
from django.http import FileResponse, HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path

from config.asgi_handler import DjinnASGIHandler

seen: dict[str, list] = {"view_threads": [], "finished_threads": [], "stream_closed": [], "connected": []}
release = threading.Event()


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


def blocking(request: HttpRequest) -> JsonResponse:
    release.wait(10)
    return JsonResponse({"ok": True})


def streams_after_the_database(request: HttpRequest) -> StreamingHttpResponse:
    connection.ensure_connection()  # as a view that authenticates its user does

    async def events() -> AsyncIterator[bytes]:
        # Looked at from the request's thread, once the headers are out: its connection is back.
        seen["connected"].append(await sync_to_async(lambda: connection.connection is not None)())
        yield b"data: done\n\n"

    return StreamingHttpResponse(events(), content_type="text/event-stream")


def a_file(request: HttpRequest) -> FileResponse:
    # What WhiteNoise hands back for a static file: a response streaming a file through a sync iterator.
    return FileResponse(io.BytesIO(b"x" * 200_000 + b"end"), content_type="application/javascript")


urlpatterns = [
    path("where", where),
    path("endless", endless),
    path("file", a_file),
    path("blocking", blocking),
    path("api/v1/thing", where),
    path("v1/thing", where),
    path("database-then-stream", streams_after_the_database),
]
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


def scope(url: str, headers: list[tuple[bytes, bytes]] = ()) -> dict:
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
        "headers": [(b"host", b"localhost"), *headers],
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


LIMIT = 64 * 1024
FIFTY_MB = str(50 * 1024 * 1024).encode()


@pytest.mark.urls("config.urls")  # Djinn's own routes (the error page links to them)
@pytest.mark.parametrize(
    ("url", "content_type", "fragment"),
    [
        ("/v1/chat/completions", "application/json", b'"code": "request_too_large"'),
        ("/api/v1/conversations", "application/json", b'"code": "request_too_large"'),
        ("/accounts/login/", "text/html; charset=utf-8", b"too large"),
    ],
)
def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(settings, url, content_type, fragment):
    settings.DJINN_MAX_REQUEST_BYTES = LIMIT
    sent: list[dict] = []

    async def receive() -> dict:
        raise AssertionError("the body was read")

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(DjinnASGIHandler()(scope(url, [(b"content-length", FIFTY_MB)]), receive, send))

    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 413
    assert headers[b"content-type"] == content_type.encode()
    assert fragment in sent[1]["body"]
    assert seen["view_threads"] == []


def test_a_body_sent_in_chunks_is_refused_as_soon_as_it_passes_the_limit(settings):
    settings.DJINN_MAX_REQUEST_BYTES = LIMIT
    chunks = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal chunks
        chunks += 1
        return {"type": "http.request", "body": b"x" * 10_000, "more_body": True}  # for ever, if let

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(DjinnASGIHandler()(scope("/api/v1/thing"), receive, send))

    assert sent[0]["status"] == 413
    assert chunks == LIMIT // 10_000 + 1
    assert seen["view_threads"] == []


def test_requests_past_the_thread_limit_wait_for_a_thread_then_get_a_503(settings):
    settings.DJINN_REQUEST_THREADS = 1
    settings.DJINN_REQUEST_QUEUE_TIMEOUT_S = 1

    async def scenario() -> tuple[list[dict], list[dict]]:
        handler = DjinnASGIHandler()
        release.clear()
        first = asyncio.create_task(get(handler, "/blocking"))
        await asyncio.sleep(0.2)  # the first holds the only thread
        refused = await get(handler, "/api/v1/thing")
        release.set()
        return await first, refused

    first, refused = asyncio.run(scenario())

    assert first[0]["status"] == 200
    assert refused[0]["status"] == 503
    assert dict(refused[0]["headers"])[b"retry-after"] == b"5"


@pytest.mark.django_db
def test_a_streamed_response_gives_back_its_thread_and_its_database_connection_with_its_headers(settings):
    settings.DJINN_REQUEST_THREADS = 1
    settings.DJINN_REQUEST_QUEUE_TIMEOUT_S = 1

    async def scenario() -> tuple[list[dict], list[dict]]:
        handler = DjinnASGIHandler()
        streaming = asyncio.create_task(get(handler, "/endless"))  # its client stays: it streams for ever
        await asyncio.sleep(0.2)
        other = await get(handler, "/where")  # the only thread is free again
        streaming.cancel()
        stream = await get(handler, "/database-then-stream")
        return other, stream

    other, stream = asyncio.run(scenario())

    assert other[0]["status"] == 200
    assert stream[0]["status"] == 200
    assert seen["connected"] == [False]
