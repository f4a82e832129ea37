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
  (request_finished) after the last byte, in the request's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix


class DjinnASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        # Not ASGIHandler.__init__, which loads the chain in async mode.
        self.load_middleware(is_async=False)
        # Single-thread executors of finished requests. Only the event loop's thread touches this list.
        self._idle_executors: list[ThreadPoolExecutor] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._idle_executors.pop() if self._idle_executors else self._new_executor()
        try:
            # handle() ends with a call into this executor that waits for whatever the request still runs
            # there (a view whose client left), so the executor is idle when it returns.
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self._idle_executors.append(executor)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's ASGIHandler.handle, with the work in the thread done in one call (see the module docstring)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        responded: list[HttpResponseBase] = []

        async def process_request() -> HttpResponseBase:
            response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file, responded)
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
        if tasks[1].cancelled() or not responded or responded[0].streaming:
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
