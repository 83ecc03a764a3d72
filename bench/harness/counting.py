"""Counting round trips and statements, outside the timed phases.

:class:`RoundTripProxy` is a loopback TCP proxy in front of a server. A
*round trip* is a flight of bytes from a client that follows the server's
answer to its previous flight on the same connection (or opens it): what the
client had to wait for. Pipelined statements sent together are one round
trip; a script (Redis EVALSHA) is one. The proxy adds latency, so only the
counting phase goes through it, never a timed one.

:func:`statements` reads ``pg_stat_statements`` (updated as each statement
ends, BEGIN and COMMIT included) per database.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg

CHUNK = 1 << 16


class RoundTripProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.round_trips = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):  # the pumps see the end of their streams
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((client_w, server_w))
        answered = [True]  # the server spoke since the client's last flight (or none yet)

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, from_client: bool
        ) -> None:
            try:
                while data := await source.read(CHUNK):
                    if from_client:
                        if answered[0]:
                            self.round_trips += 1
                            answered[0] = False
                    else:
                        answered[0] = True
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(ConnectionError, OSError):
                    sink.close()

        tasks = [
            asyncio.ensure_future(pump(client_r, server_w, True)),
            asyncio.ensure_future(pump(server_r, client_w, False)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks)
        finally:
            self._tasks.difference_update(tasks)
            self._writers.difference_update((client_w, server_w))


def statements(admin_url: str) -> dict[str, int]:
    """Statements executed so far, per database name (pg_stat_statements)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT d.datname, sum(s.calls)::bigint FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid GROUP BY d.datname"
        ).fetchall()
    return {str(name): int(calls) for name, calls in rows}
