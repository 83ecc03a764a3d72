"""Helpers the PostgreSQL tests share (a module name no other test folder uses).

The damage the conformance suite asks for (a record or a message that no
longer parses) is done here, the way a third party would do it: with SQL on
the store's tables, over a connection of its own.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

import outlast
from outlast.adapter import CheckpointerFactory
from outlast_postgres import PostgresStore

T = TypeVar("T")

NOT_JSON = "{not json"
"""What damaged stored JSON is replaced with."""


def with_options(url: str, **options: object) -> str:
    """``url`` with ``options`` added to (or replacing those of) its query.

    The other query parameters are kept byte for byte (re-encoding them could
    turn ``%20`` into ``+``, which libpq reads literally).
    """
    parts = urlsplit(url)
    kept = [
        item
        for item in parts.query.split("&")
        if item and unquote(item.partition("=")[0]) not in options
    ]
    added = urlencode({key: str(value) for key, value in options.items()})
    return urlunsplit(parts._replace(query="&".join([*kept, added] if added else kept)))


def postgres_store(factory: CheckpointerFactory) -> PostgresStore:
    """The PostgresStore behind ``factory`` (an ``outlast.open`` front, or itself)."""
    backend = factory.backend if isinstance(factory, outlast.Store) else factory
    assert isinstance(backend, PostgresStore), f"not a PostgreSQL store: {factory!r}"
    return backend


def url_of(store: PostgresStore) -> str:
    """The URL another process passes to ``outlast.open`` to reach ``store``'s runs:
    the same server and database (libpq parameters included) and the same schema."""
    return with_options(store.config.conninfo, schema=store.schema)


async def damage(store: PostgresStore, statement: sql.Composed, params: dict[str, Any]) -> None:
    """Run ``statement`` on ``store``'s database; it must change exactly one row."""
    config = store.config
    async with await psycopg.AsyncConnection.connect(
        config.conninfo, **config.connect_kwargs()
    ) as conn:
        cursor = await conn.execute(statement, params)
        assert cursor.rowcount == 1, f"damaging a run changed {cursor.rowcount} rows, not 1"


async def corrupt_record(store: PostgresStore, run_id: str, namespace: str) -> None:
    """Make the run's record unparsable: its input is no longer JSON."""
    statement = sql.SQL(
        "UPDATE {} SET input = %(bad)s WHERE namespace = %(namespace)s AND run_id = %(run_id)s"
    ).format(sql.Identifier(store.schema, "runs"))
    await damage(store, statement, {"bad": NOT_JSON, "namespace": namespace, "run_id": run_id})


async def corrupt_message(store: PostgresStore, run_id: str, namespace: str) -> None:
    """Overwrite, in place, the first message of the run's current segment
    (the segment is the number of completed phases)."""
    statement = sql.SQL(
        "UPDATE {messages} SET body = %(bad)s"
        " WHERE namespace = %(namespace)s AND run_id = %(run_id)s AND seq = 0"
        " AND segment = (SELECT count(*) FROM {phases}"
        "                WHERE namespace = %(namespace)s AND run_id = %(run_id)s)"
    ).format(
        messages=sql.Identifier(store.schema, "messages"),
        phases=sql.Identifier(store.schema, "phases"),
    )
    await damage(store, statement, {"bad": NOT_JSON, "namespace": namespace, "run_id": run_id})


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
