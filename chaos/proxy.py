"""A TCP proxy on loopback that can delay, cut and refuse connections: the network between Djinn and its
PostgreSQL or Redis, made unreliable on purpose (the fault suite and the tests that need a real fault).

    proxy = FaultyProxy(("127.0.0.1", 6379)).start()   # listens on 127.0.0.1:<proxy.port>
    proxy.delay(0.05, jitter=0.05)  # every chunk waits 50-100 ms each way
    proxy.cut()                     # every open connection is reset now (new ones are accepted)
    proxy.refuse(True)              # new connections are refused and open ones cut: the server is away
    proxy.lose(replies_only=True)   # the open connections' bytes vanish (to the client only, or both ways),
                                    # and nothing closes: a connection dead without a word; new ones work
    proxy.lose(matching=b"GET /ws/")  # only the connections whose first bytes from the client hold that
    proxy.refuse(False)
    proxy.stop()

It runs its own event loop in a daemon thread, so it serves while the caller blocks. Only loopback targets:
a (host, port) on loopback, or the path of a unix socket (an embedded PostgreSQL listens on one only).
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from typing import Any

CHUNK = 65536


class FaultyProxy:
    def __init__(self, target: tuple[str, int] | str, *, port: int = 0) -> None:
        if not isinstance(target, str) and target[0] not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError(f"The proxy only forwards to loopback, not {target[0]}.")
        self.target = target
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faulty-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._delay = (0.0, 0.0)
        self._refusing = False
        self._lost: set[asyncio.StreamWriter] = set()  # what is written to these vanishes
        self._opening: dict[asyncio.StreamWriter, bytes] = {}  # a connection's first bytes from its client
        self._silenced: set[asyncio.StreamWriter] = set()  # lost clients whose server has closed: they never hear
        self.cuts = 0  # connections cut so far
        self.accepted = 0

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> FaultyProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def delay(self, seconds: float, *, jitter: float = 0.0) -> None:
        """Hold every chunk, each way, ``seconds`` plus up to ``jitter`` more (0 turns it off)."""
        self._delay = (seconds, jitter)

    def cut(self) -> int:
        """Reset every open connection now; returns how many."""
        return self._call(self._cut())

    def lose(self, *, replies_only: bool = False, matching: bytes | None = None) -> int:
        """From now on, what the open connections carry vanishes: what the target sends back only, or both ways.
        Nothing is closed or reset. ``matching``: only the connections whose client's first bytes hold it.
        Returns how many connections."""
        return self._call(self._lose(replies_only, matching))

    async def _lose(self, replies_only: bool, matching: bytes | None) -> int:
        lost = 0
        for client, upstream in self._connections:
            if client in self._lost or (matching is not None and matching not in self._opening.get(upstream, b"")):
                continue
            self._lost.add(client)
            if not replies_only:
                self._lost.add(upstream)
            lost += 1
        return lost

    def refuse(self, refusing: bool) -> None:
        """Stop listening (new connections are refused, open ones cut), or listen again on the same port."""
        self._refusing = refusing
        self._call(self._close(cut=True) if refusing else self._listen())

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def _close(self, *, cut: bool) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if cut:
            await self._cut()

    async def _shutdown(self) -> None:
        await self._close(cut=True)
        for writer in self._silenced:
            writer.transport.abort()
        self._silenced.clear()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _cut(self) -> int:
        cut = 0
        for client, upstream in list(self._connections):
            for writer in (client, upstream):
                transport = writer.transport
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    # A reset, as a crashed server or a dropped route looks to the client: SO_LINGER 0.
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    except OSError:
                        pass
                transport.abort()
            cut += 1
        self._connections.clear()
        self.cuts += cut
        return cut

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            client_writer.transport.abort()
            return
        try:
            if isinstance(self.target, str):
                upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.target)
            else:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self.accepted += 1
        pair = (client_writer, upstream_writer)
        self._connections.add(pair)
        try:
            await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))
        finally:
            self._connections.discard(pair)
            for writer in pair:
                self._opening.pop(writer, None)
                if writer is client_writer and writer in self._lost:
                    self._silenced.add(writer)  # a dead route: the client hears nothing, not even the end
                    continue
                self._lost.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                seconds, jitter = self._delay
                if seconds or jitter:
                    await asyncio.sleep(seconds + random.random() * jitter)
                self._opening.setdefault(writer, data[:4096])
                if writer in self._lost:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if writer not in self._lost:
                writer.transport.abort()
