"""The fault suite's clients, plain asyncio on loopback, each recording everything it was sent:

* a browser tab on the chat WebSocket (a session cookie, the page's Origin), which resumes a reply after a
  dropped connection by watching it again after the last seq it has, as the page does;
* a REST client following a reply as server-sent events, resuming with Last-Event-ID, as an EventSource does;
* an API client streaming ``/v1/chat/completions``.

Every event a client receives is kept with the generation it names, so the suite can check that each one was
its own user's, that seqs came in order with no gap and no duplicate, and that the text adds up.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from benchmarks.serving_clients import _body_chunks, _read_head

REQUEST_TIMEOUT_S = 120


@dataclass
class Followed:
    """What one client received for one generation."""

    kind: str  # "ws", "sse" or "v1"
    owner: int  # the user's index
    generation_id: str | None = None
    seqs: list[int] = field(default_factory=list)
    text: str = ""
    terminal: dict[str, Any] | None = None
    foreign: list[Any] = field(default_factory=list)  # events naming a generation that is not this one
    duplicates: int = 0
    gaps: int = 0
    left: bool = False  # the client went away on purpose before the end
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    first_at: float | None = None
    sent_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None

    def take(self, seq: int, text: str = "") -> None:
        last = self.seqs[-1] if self.seqs else 0
        if seq <= last:
            self.duplicates += 1
            return
        if self.seqs and seq != last + 1:
            self.gaps += 1
        self.seqs.append(seq)
        if text and self.first_at is None:
            self.first_at = time.monotonic()
        self.text += text


# -- HTTP --------------------------------------------------------------------------------------------


async def http(
    port: int, method: str, path: str, *, headers: dict[str, str] | None = None, body: Any = None, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own; (status, headers, body)."""
    return await asyncio.wait_for(_http(port, method, path, headers or {}, body), timeout)


async def _http(
    port: int, method: str, path: str, headers: dict[str, str], body: Any
) -> tuple[int, dict[str, str], bytes]:
    payload = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_head(method, path, {**headers, "Content-Length": str(len(payload))}, json_body=body is not None))
        writer.write(payload)
        status, response_headers = await _read_head(reader)
        data = b"".join(
            [
                chunk
                async for chunk in _body_chunks(
                    reader, chunked="chunked" in response_headers.get("transfer-encoding", "")
                )
            ]
        )
        return status, response_headers, data
    finally:
        writer.close()


def _head(method: str, path: str, headers: dict[str, str], *, json_body: bool) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if json_body:
        lines.append("Content-Type: application/json")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def sse_events(reader: asyncio.StreamReader, headers: dict[str, str]):  # -> AsyncIterator[dict[str, str]]
    """The events of a server-sent event stream, each as its fields (comments and retry-only blocks skipped)."""
    buffer = b""
    async for chunk in _body_chunks(reader, chunked="chunked" in headers.get("transfer-encoding", "")):
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.decode().splitlines():
                if line and not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
            if "data" in fields:
                yield fields


# -- the chat WebSocket ------------------------------------------------------------------------------


async def ws_chat(
    port: int, cookie: str, owner: int, content: str, params: dict[str, Any], *, leave_after: int | None = None
) -> Followed:
    """Send a message from a fresh tab and follow its reply to the end, resuming after a dropped connection;
    ``leave_after``: close the tab after that many deltas instead."""
    followed = Followed("ws", owner)
    return await _run(followed, _ws_chat(port, cookie, content, params, followed, leave_after))


async def _run(followed: Followed, chat: Any) -> Followed:
    """Run one client's chat to its end or REQUEST_TIMEOUT_S; what went wrong is kept in ``followed.errors``."""
    try:
        await asyncio.wait_for(chat, REQUEST_TIMEOUT_S)
    except (TimeoutError, OSError, ConnectionClosed, InvalidStatus, asyncio.IncompleteReadError) as exc:
        followed.errors.append(f"{type(exc).__name__}: {exc}")
    followed.ended_at = time.monotonic()
    return followed


async def _ws_chat(
    port: int, cookie: str, content: str, params: dict[str, Any], followed: Followed, leave_after: int | None
) -> None:
    sent = False
    while followed.terminal is None:
        try:
            async with _tab(port, cookie) as tab:
                if not sent:
                    await tab.send(json.dumps({"type": "message.send", "content": content, "params": params}))
                    sent = True
                elif followed.generation_id is not None:
                    after = followed.seqs[-1] if followed.seqs else 0
                    await tab.send(
                        json.dumps({"type": "generation.watch", "id": followed.generation_id, "after": after})
                    )
                async for raw in tab:
                    frame = json.loads(raw)
                    if _ws_frame(frame, followed):
                        return
                    if leave_after is not None and len(followed.seqs) >= leave_after:
                        followed.left = True
                        return
        except (ConnectionClosed, OSError) as exc:
            if followed.generation_id is None:
                # Dropped before the turn was made: as the page does, give the text back (unsent).
                followed.errors.append(f"unsent: {type(exc).__name__}: {exc}")
                return
            followed.reconnects += 1
            followed.errors.append(f"reconnect: {type(exc).__name__}")
            await asyncio.sleep(0.5 + random.random())


def _tab(port: int, cookie: str) -> Any:
    return connect(
        f"ws://127.0.0.1:{port}/ws/chat/",
        origin=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
        additional_headers={"Cookie": cookie},
        compression=None,
        open_timeout=30,
    )


def _ws_frame(frame: dict[str, Any], followed: Followed) -> bool:
    """Take in one frame; True once the reply has ended."""
    kind = frame.get("type")
    if kind == "turn.created" and followed.generation_id is None:
        followed.generation_id = frame["assistant_message"]["id"]
        return False
    if kind == "error":
        followed.errors.append(f"{frame.get('code')}: {frame.get('message')}")
        return followed.generation_id is None  # a refused message ends the chat
    if not str(kind).startswith("generation."):
        return False
    if frame.get("id") != followed.generation_id:
        followed.foreign.append(frame)
        return False
    if kind == "generation.delta":
        followed.take(frame["seq"], frame["text"])
    elif kind in ("generation.done", "generation.error"):
        followed.terminal = frame
        return True
    return False


# -- REST server-sent events -------------------------------------------------------------------------


async def sse_chat(
    port: int, key: str, owner: int, content: str, params: dict[str, Any], *, leave_after: int | None = None
) -> Followed:
    """POST a conversation with an API key, then follow its reply's events, resuming with Last-Event-ID."""
    followed = Followed("sse", owner)
    try:
        status, _headers, body = await http(
            port, "POST", "/api/v1/conversations", headers=_bearer(key), body={"content": content, "params": params}
        )
        followed.statuses.append(status)
        if status != 201:
            followed.errors.append(f"POST {status}: {body[:200]!r}")
            return followed
        followed.generation_id = json.loads(body)["assistant_message"]["id"]
        await asyncio.wait_for(follow_sse(port, key, followed, leave_after=leave_after), REQUEST_TIMEOUT_S)
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        followed.errors.append(f"{type(exc).__name__}: {exc}")
    followed.ended_at = time.monotonic()
    return followed


async def follow_sse(port: int, key: str, followed: Followed, *, leave_after: int | None = None) -> None:
    path = f"/api/v1/generations/{followed.generation_id}/events"
    while followed.terminal is None:
        headers = _bearer(key) | {"Accept": "text/event-stream"}
        if followed.seqs:
            headers["Last-Event-ID"] = str(followed.seqs[-1])
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            followed.reconnects += 1
            await asyncio.sleep(0.5 + random.random())
            continue
        try:
            writer.write(_head("GET", path, headers, json_body=False))
            status, response_headers = await _read_head(reader)
            followed.statuses.append(status)
            if status != 200:
                followed.errors.append(f"GET events {status}")
                if status < 500:
                    return
            else:
                async for fields in sse_events(reader, response_headers):
                    event = json.loads(fields["data"])
                    if event.get("id") != followed.generation_id:
                        followed.foreign.append(event)
                        continue
                    if event["type"] == "delta":
                        followed.take(event["seq"], event["text"])
                    else:
                        followed.terminal = event
                        return
                    if leave_after is not None and len(followed.seqs) >= leave_after:
                        followed.left = True
                        return
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            followed.errors.append(f"reconnect: {type(exc).__name__}")
        finally:
            writer.close()
        # The stream ended without a terminal event (cut, or the server restarted): resume, as EventSource does.
        followed.reconnects += 1
        await asyncio.sleep(0.5 + random.random())


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- /v1 ---------------------------------------------------------------------------------------------


async def v1_chat(
    port: int, key: str, owner: int, content: str, params: dict[str, Any], *, leave_after: int | None = None
) -> Followed:
    """Stream a completion; ``leave_after``: drop the connection after that many content chunks."""
    followed = Followed("v1", owner)
    return await _run(followed, _v1_chat(port, key, content, params, followed, leave_after))


async def _v1_chat(
    port: int, key: str, content: str, params: dict[str, Any], followed: Followed, leave_after: int | None
) -> None:
    body = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "stream_options": {"include_usage": True},
        **params,
    }
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        headers = _bearer(key) | {"Accept": "text/event-stream", "Content-Length": str(len(payload))}
        writer.write(_head("POST", "/v1/chat/completions", headers, json_body=True) + payload)
        status, response_headers = await _read_head(reader)
        followed.statuses.append(status)
        if status != 200:
            followed.errors.append(f"POST /v1 {status}")
            return
        seq = 0
        async for fields in sse_events(reader, response_headers):
            data = fields["data"]
            if data == "[DONE]":
                return
            chunk = json.loads(data)
            if "error" in chunk:
                followed.terminal = chunk
                return
            chunk_id = chunk["id"].removeprefix("chatcmpl-")
            if followed.generation_id is None:
                followed.generation_id = chunk_id
            elif chunk_id != followed.generation_id:
                followed.foreign.append(chunk)
                continue
            for choice in chunk.get("choices") or []:
                if choice["delta"].get("content"):
                    seq += 1
                    followed.take(seq, choice["delta"]["content"])
                if choice.get("finish_reason"):
                    followed.terminal = chunk
            if chunk.get("usage"):
                followed.terminal = chunk
            if leave_after is not None and seq >= leave_after:
                followed.left = True
                return
    finally:
        writer.close()
