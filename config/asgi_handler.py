"""Django's ASGI handler, run with one trip from the event loop to a thread per request instead of about ten.

Django's own handler loads the middleware chain in async mode. With our sync middleware (WhiteNoise,
sessions, auth...) and sync views (DRF), a request then crosses between the event loop and a thread at
every layer: the request_started signal, the chain, each process_view, the view, the response's close()
with request_finished. Each crossing costs a thread wake-up and a loop iteration, and each request also
starts a thread of its own and another one to join it. Measured on /healthz on a 2-core machine: about
4.5 ms of CPU a request with Django's handler, 1 ms with this one.

Here the chain is loaded in sync mode, as under WSGI, and request_started, the chain and (for a response
whose content is all there) close() run in one call in a thread; each request borrows a single-thread
executor kept from earlier requests. What Django's handler guarantees still holds:

- all of a request's thread-sensitive sync code runs in one thread, so it sees one database connection;
- async views still run on the event loop (the sync chain calls them through async_to_sync, as the
  old SyncBoundaryMiddleware made it do), and a client that leaves cancels them;
- streamed responses (SSE) are sent from the event loop, which notices a client leaving, and closed
  (request_finished) after the last byte.

Two limits protect the process. A body larger than DJINN_MAX_REQUEST_BYTES is refused with 413 before it is
read (by its Content-Length, or as soon as a chunked body passes the limit), on every route: Django spools
any body to disk, and DRF's JSON parser reads it whole. And at most DJINN_REQUEST_THREADS requests run
their synchronous code at once (one thread each); more wait for a thread, up to
DJINN_REQUEST_QUEUE_TIMEOUT_S, then answer 503. A streamed response gives its thread back as soon as its
headers are made: it is sent from the event loop and holds no thread, nor a database connection, while it
streams.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import connections
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix

from config.errors import RETRY_AFTER_S, TOO_LARGE, error_body

logger = logging.getLogger(__name__)

BUSY = "Djinn is too busy to take this request right now. Please try again in a few seconds."


class BodyTooLarge(Exception):
    """The request body passed DJINN_MAX_REQUEST_BYTES."""


class DjinnASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        # Not ASGIHandler.__init__, which loads the chain in async mode.
        self.load_middleware(is_async=False)
        self.max_body = settings.DJINN_MAX_REQUEST_BYTES
        # Single-thread executors of finished requests, and a bound on those in use. Only the event loop's
        # thread touches these.
        self._idle_executors: list[ThreadPoolExecutor] = []
        self._threads_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self.queue_timeout_s = settings.DJINN_REQUEST_QUEUE_TIMEOUT_S

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        if self._declared_length(scope) > self.max_body:
            await _answer(send, scope["path"], 413, TOO_LARGE, "request_too_large")
            return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        except BodyTooLarge:
            await _answer(send, scope["path"], 413, TOO_LARGE, "request_too_large")
            return
        threads = self._threads()
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await threads.acquire()
        except TimeoutError:
            body_file.close()
            logger.warning("No request thread free for %s: answered 503", scope["path"])
            await _answer(send, scope["path"], 503, BUSY, "server_busy", retry_after=True)
            return
        executor = self._idle_executors.pop() if self._idle_executors else self._new_executor()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._idle_executors.append(executor)
                threads.release()

        try:
            # handle() ends with a call into this executor that waits for whatever the request still runs
            # there (a view whose client left), so the executor is idle when it returns; a streamed response
            # hands it back earlier, once its headers are made (release).
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, body_file, send, receive, release)
        finally:
            release()

    def _threads(self) -> asyncio.Semaphore:
        """The running loop's bound on request threads (a semaphore belongs to one loop)."""
        loop = asyncio.get_running_loop()
        threads = self._threads_by_loop.get(loop)
        if threads is None:
            threads = self._threads_by_loop[loop] = asyncio.Semaphore(settings.DJINN_REQUEST_THREADS)
        return threads

    @staticmethod
    def _declared_length(scope: dict[str, Any]) -> int:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0  # Django answers a malformed header itself
        return 0

    async def read_body(self, receive: Any) -> IO[bytes]:
        """Django's read_body, stopping at DJINN_MAX_REQUEST_BYTES (BodyTooLarge) for a body sent in chunks."""
        body_file = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")  # noqa: SIM115 (returned open, as Django's)
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            if "body" in message:
                size += len(message["body"])
                if size > self.max_body:
                    body_file.close()
                    raise BodyTooLarge
                body_file.write(message["body"])
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file  # type: ignore[return-value]

    async def handle(  # type: ignore[override]
        self, scope: dict[str, Any], body_file: IO[bytes], send: Any, receive: Any, release: Any
    ) -> None:
        """Django's ASGIHandler.handle, with the work in the thread done in one call (see the module docstring)."""
        set_script_prefix(get_script_prefix(scope))
        responded: list[HttpResponseBase] = []

        async def process_request() -> HttpResponseBase:
            response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file, responded)
            if response.streaming:
                release()  # the view is done with its thread: the stream is sent from the loop
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client left while the response was being sent
            return response

        # As in Django: watch for the client leaving while the response is made and sent; if it leaves, cancel.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if responded and responded[0].streaming:
            await _close_async_iterator(responded[0])
            # Its thread went back with its headers: close it (request_finished) in a thread of the loop's pool.
            await sync_to_async(self._finish, thread_sensitive=False)(responded)
        elif tasks[1].cancelled() or not responded:
            await sync_to_async(self._finish, thread_sensitive=True)(responded)
        body_file.close()

    def _respond(
        self, scope: dict[str, Any], body_file: IO[bytes], responded: list[HttpResponseBase]
    ) -> HttpResponseBase:
        """In the request's thread: request_started, the response, and close() unless it streams."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
        response._handler_class = self.__class__  # the sender of request_finished
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size  # the ASGI server chunks it further
        if response.streaming and not response.is_async:
            # A synchronous iterator (a file WhiteNoise serves): Django's send_response would read it whole
            # with sync_to_async(list), warning each time; read it here, in the request's thread, instead.
            response.streaming_content = _replay(list(response.streaming_content))
        if not response.streaming:
            # Its content is all in memory, so it can be closed (request_finished, which hands the database
            # connection back to the pool) before it is sent.
            response.close()
        else:
            # A stream (SSE) may stay open for minutes: it must not hold the connection its view used (for
            # authentication, say), or a few dozen streams drain the pool. What it reads later, it borrows.
            connections.close_all()
        responded.append(response)
        return response

    def _finish(self, responded: list[HttpResponseBase]) -> None:
        """In the request's thread, after whatever it still runs (a view whose client left): close a streamed
        response (request_finished), or when the client left before there was a response, send
        request_finished as Django does. A response made in full was closed by _respond."""
        if not responded:
            signals.request_finished.send(sender=self.__class__)
        elif responded[0].streaming:
            responded[0].close()

    @staticmethod
    def _new_executor() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="django-request")


async def _replay(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _close_async_iterator(response: HttpResponseBase) -> None:
    """Close the async iterator a view streamed (an SSE generator), so that its ``finally`` runs now.

    When the client leaves while a chunk is being sent, Django's send_response closes only its own wrapper
    around the view's iterator; the view's generator would be closed when the response is garbage
    collected, which can be much later (Django's handler made garbage enough for that to come soon).
    A generator that already ended is left as it is. ``_iterator`` is where StreamingHttpResponse keeps it.
    """
    iterator = getattr(response, "_iterator", None)
    if getattr(response, "is_async", False) and hasattr(iterator, "aclose"):
        await iterator.aclose()


async def _answer(send: Any, path: str, status: int, message: str, code: str, *, retry_after: bool = False) -> None:
    """An error answer sent straight to the ASGI server, before Django sees the request."""
    body, content_type = await sync_to_async(error_body, thread_sensitive=False)(path, status, message, code)
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
