"""Helpers the PostgreSQL tests share (a module name no other test folder uses)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

T = TypeVar("T")


def with_options(url: str, **options: object) -> str:
    """``url`` with ``options`` added to (or replacing those of) its query."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({key: str(value) for key, value in options.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


WAIT_LIMIT = 10.0
"""Seconds a test waits for a condition before failing."""


async def wait_until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``condition`` until it holds; fail the test if it does not within WAIT_LIMIT."""
    deadline = asyncio.get_running_loop().time() + WAIT_LIMIT
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition still false after {WAIT_LIMIT}s")
        await asyncio.sleep(0.01)


def unused_port() -> int:
    """A loopback TCP port nothing listens on (bound once by the OS, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RoundTripProxy:
    """A loopback TCP proxy in front of PostgreSQL that counts network round trips.

    A round trip starts whenever the client sends after the server last spoke
    (or first, on a new connection). The server only answers at a Sync or
    Flush, so a pipelined batch of statements is one round trip and a
    statement with a 10 MB parameter is one round trip too: this counts what
    the network sees, whatever the driver does internally.
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.round_trips = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._connections: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RoundTripProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        # Every pump ends at the EOF its closed socket gives: nothing is left running.
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.append(task)
        server_in, server_out = await asyncio.open_connection(*self._target)
        self._writers += [client_out, server_out]
        last_sender = ["server"]

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, sender: str
        ) -> None:
            try:
                while data := await source.read(1 << 16):
                    if sender == "client" and last_sender[0] != "client":
                        self.round_trips += 1
                    # Recorded before forwarding, so the answer is always seen after it.
                    last_sender[0] = sender
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(
            pump(client_in, server_out, "client"), pump(server_in, client_out, "server")
        )

    async def count(self, operation: Awaitable[T]) -> tuple[T, int]:
        """Run ``operation``; return its result and the round trips it took."""
        before = self.round_trips
        result = await operation
        return result, self.round_trips - before
