"""The three clients of benchmarks/serving_bench.py, each timing the same things the same way:

* the engine alone, in this process (``submit`` then ``stream``, one thread per request);
* a browser tab: the chat WebSocket, ``message.send`` then the ``generation.*`` frames of its reply;
* an API client: ``POST /v1/chat/completions`` with ``stream: true``, read as server-sent events.

Time to first token (TTFT) runs from just before the request leaves (``submit``, the frame sent, the request
written) to the first piece of reply text received. A concurrent run's aggregate rate is the tokens made by
all its requests over the time from the first request sent to the last one finished.

The WebSocket and SSE clients are plain asyncio in one event loop (raw sockets for HTTP), so they take little
of the CPU they share with the server.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from benchmarks.serving_stack import StackError
from inference.engine import Engine, SamplingParams

REQUEST_TIMEOUT_S = 120  # one reply, however slow the machine; the whole run has its own deadline


class BenchError(StackError):
    """A request got an error instead of a reply (the benchmark stops, and shows the servers' logs)."""


@dataclass
class Sample:
    sent: float  # time.perf_counter()
    first: float | None = None  # first reply text received
    done: float = 0.0
    tokens: int = 0  # completion tokens (usage), or counted token ids for the engine
    reply_id: str | None = None  # the chat reply's message id (WebSocket)
    # Adds to a perf_counter() reading to give Unix time, to compare with the times the servers record.
    wall_offset: float = field(default_factory=lambda: time.time() - time.perf_counter())

    @property
    def ttft_s(self) -> float:
        if self.first is None:
            raise BenchError("The reply ended without any text.")
        return self.first - self.sent


@dataclass
class Aggregate:
    tokens: int
    seconds: float
    per_request: list[int]

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds


def aggregate(samples: list[Sample]) -> Aggregate:
    seconds = max(s.done for s in samples) - min(s.sent for s in samples)
    return Aggregate(sum(s.tokens for s in samples), seconds, [s.tokens for s in samples])


def p50_ms(values_s: list[float]) -> float:
    return statistics.median(values_s) * 1000


# The engine alone -----------------------------------------------------------------------------------


def engine_one(engine: Engine, content: str, params: SamplingParams) -> Sample:
    sample = Sample(sent=time.perf_counter())
    request_id = engine.submit([{"role": "user", "content": content}], params)
    _engine_read(engine, request_id, sample)
    if not sample.done:
        raise BenchError("The engine failed the request.")
    return sample


def engine_concurrent(engine: Engine, contents: list[str], params: SamplingParams) -> list[Sample]:
    """All requests submitted at once, each read on its own thread as a concurrent client would."""
    samples, threads = [], []
    for content in contents:
        sample = Sample(sent=time.perf_counter())
        request_id = engine.submit([{"role": "user", "content": content}], params)
        samples.append(sample)
        threads.append(threading.Thread(target=_engine_read, args=(engine, request_id, sample), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT_S)
    unfinished = [s for s in samples if not s.done]
    if unfinished:
        raise BenchError(f"{len(unfinished)} of {len(samples)} engine requests did not finish.")
    return samples


def _engine_read(engine: Engine, request_id: str, sample: Sample) -> None:
    """Read the request to its end; ``sample.done`` stays 0 if the engine failed it."""
    for delta in engine.stream(request_id):
        if delta.error:
            return
        if delta.text and sample.first is None:
            sample.first = time.perf_counter()
        sample.tokens += len(delta.token_ids)
    sample.done = time.perf_counter()


# The chat WebSocket ---------------------------------------------------------------------------------


class ChatTab:
    """One signed-in browser tab: the session cookie on the handshake, the page's Origin."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    @classmethod
    async def open(cls, port: int, cookie: str) -> ChatTab:
        connection = await connect(
            f"ws://127.0.0.1:{port}/ws/chat/",
            origin=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie},
            compression=None,  # as cheap for the client as it can be; the frames are small
            max_size=2**22,
            open_timeout=30,
        )
        return cls(connection)

    async def chat(self, conversation: str, content: str, params: dict[str, Any]) -> Sample:
        """Send ``content`` in ``conversation`` and read its reply to the end."""
        frame = {"type": "message.send", "conversation": conversation, "content": content, "params": params}
        try:
            return await asyncio.wait_for(self._chat(frame), REQUEST_TIMEOUT_S)
        except ConnectionClosed as exc:
            raise BenchError(f"The server closed the WebSocket: {exc}") from exc

    async def _chat(self, frame: dict[str, Any]) -> Sample:
        sample = Sample(sent=time.perf_counter())
        await self.connection.send(json.dumps(frame))
        reply_id = None
        async for raw in self.connection:
            event = json.loads(raw)
            kind = event["type"]
            if kind == "turn.created":
                reply_id = sample.reply_id = event["assistant_message"]["id"]
            elif kind == "generation.delta" and event["id"] == reply_id:
                if sample.first is None:
                    sample.first = time.perf_counter()
            elif kind == "generation.done" and event["id"] == reply_id:
                sample.done = time.perf_counter()
                sample.tokens = event["usage"]["completion_tokens"]
                return sample
            elif kind in ("error", "generation.error"):
                raise BenchError(f"WebSocket {kind}: {event.get('code')}: {event.get('message')}")
        raise BenchError("The WebSocket closed before the reply ended.")

    async def close(self) -> None:
        await self.connection.close()


# The OpenAI-compatible API, streamed ----------------------------------------------------------------


async def sse_completion(port: int, key: str, body: dict[str, Any]) -> Sample:
    return await asyncio.wait_for(_sse_completion(port, key, body), REQUEST_TIMEOUT_S)


async def _sse_completion(port: int, key: str, body: dict[str, Any]) -> Sample:
    payload = json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sample = Sample(sent=time.perf_counter())
        writer.write(
            (
                "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + payload
        )
        status, headers = await _read_head(reader)
        if status != 200:
            raise BenchError(f"/v1/chat/completions answered {status}: {(await reader.read())[:500]!r}")
        buffer = b""
        async for chunk in _body_chunks(reader, chunked="chunked" in headers.get("transfer-encoding", "")):
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if _sse_event(event, sample):
                    sample.done = time.perf_counter()
                    return sample
        raise BenchError("The event stream ended without [DONE].")
    finally:
        writer.close()


def _sse_event(event: bytes, sample: Sample) -> bool:
    """Take in one server-sent event; True at ``[DONE]``."""
    for line in event.decode().splitlines():
        if not line.startswith("data:"):
            continue  # a keep-alive comment
        data = line[5:].strip()
        if data == "[DONE]":
            return True
        chunk = json.loads(data)
        if "error" in chunk:
            raise BenchError(f"SSE error: {chunk['error']}")
        for choice in chunk.get("choices") or []:
            if choice["delta"].get("content") and sample.first is None:
                sample.first = time.perf_counter()
        if chunk.get("usage"):
            sample.tokens = chunk["usage"]["completion_tokens"]
    return False


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    return int(head[0].split()[1]), headers


async def _body_chunks(reader: asyncio.StreamReader, *, chunked: bool):  # -> AsyncIterator[bytes]
    if not chunked:
        while data := await reader.read(65536):
            yield data
        return
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return
        yield data[:-2]
