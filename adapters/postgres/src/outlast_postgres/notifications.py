"""Change notifications: LISTEN/NOTIFY on one channel per schema.

Every statement that makes a run claimable (submit, release, send) or finished
(complete, fail, quarantine, a cancel that fails the run) also calls
``pg_notify(channel, namespace)`` in the same statement: no extra round trip.
PostgreSQL delivers a notification only when its transaction commits, so a
waiter never wakes for a write that was rolled back. Nothing notifies a lease
that simply expires: that is what the waiters' polling is for.

Each store has one listening connection of its own (not from the pool: it
stays in LISTEN for the store's life), opened by the first
:meth:`Listener.wait`. Waiters say which namespace they wait for; a
notification wakes the waiters of its payload's namespace only. When the
connection fails every waiter is woken (a change may have been missed) and
the next wait connects again; while it cannot connect, a wait is a plain
sleep (a poll), so an outage of notifications never fails a caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from outlast.adapter import StoreError
from outlast_postgres.config import PostgresConfig

log = logging.getLogger("outlast_postgres")

_CHANNEL_PREFIX = "outlast:"
_MAX_IDENTIFIER_BYTES = 63
"""A channel name is an identifier: PostgreSQL keeps at most 63 bytes of it."""


def channel_for(schema: str) -> str:
    """The notification channel of the runs in ``schema``: ``outlast:<schema>``.

    A schema name too long for that to fit in 63 bytes keeps its first 46
    characters and gains 8 hex digits of its hash (``outlast:<prefix>:<hash>``),
    so the name is never silently truncated and two long schemas sharing a
    prefix still get channels of their own. Schema names are ASCII (see
    :mod:`outlast_postgres.config`), so characters are bytes.
    """
    channel = _CHANNEL_PREFIX + schema
    if len(channel.encode()) <= _MAX_IDENTIFIER_BYTES:
        return channel
    digest = hashlib.sha256(schema.encode()).hexdigest()[:8]
    keep = _MAX_IDENTIFIER_BYTES - len(_CHANNEL_PREFIX) - len(digest) - 1
    return f"{_CHANNEL_PREFIX}{schema[:keep]}:{digest}"


class Listener:
    """A store's LISTEN connection and the tasks waiting on it."""

    def __init__(self, config: PostgresConfig, channel: str) -> None:
        self.config = config
        self.channel = channel
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._listening: asyncio.Future[bool] | None = None
        self._down = False
        self._closed = False

    def __repr__(self) -> str:
        return f"Listener({self.config.redacted_url!r}, channel={self.channel!r})"

    async def wait(self, namespace: str, timeout: float) -> bool:
        """True as soon as a change of ``namespace`` is notified (or the
        connection failed, so one may have been missed); False after
        ``timeout`` seconds."""
        if self._closed:
            raise StoreError(
                f"the store at {self.config.redacted_url} was closed; open a new store"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        woken: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters.setdefault(namespace, set())
        waiters.add(woken)
        try:
            async with asyncio.timeout_at(deadline):
                if await self._listen():
                    await woken
                    return True
        except TimeoutError:
            return False
        finally:
            waiters.discard(woken)
            if not waiters and self._waiters.get(namespace) is waiters:
                del self._waiters[namespace]
        # No connection to listen on: this wait is a poll.
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        return False

    async def close(self) -> None:
        """Stop listening and close the connection; waiters wake. Idempotent."""
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait([reader])  # raises only if close() itself is cancelled

    async def _listen(self) -> bool:
        """Whether the connection is listening, connecting first if it is not.

        Concurrent waiters share one attempt; a waiter that gives up (its
        timeout) does not cancel it for the others.
        """
        if self._reader is None or self._reader.done():
            listening = asyncio.get_running_loop().create_future()
            self._listening = listening
            self._reader = asyncio.create_task(self._read(listening), name=repr(self))
        assert self._listening is not None
        return await asyncio.shield(self._listening)

    async def _read(self, listening: asyncio.Future[bool]) -> None:
        """Connect, LISTEN, then hand every notification to its namespace's waiters."""
        conn: AsyncConnection[TupleRow] | None = None
        try:
            try:
                conn = await AsyncConnection.connect(
                    self.config.conninfo, **self.config.connect_kwargs()
                )
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            except (psycopg.Error, OSError) as exc:
                self._report_down(exc)
                return
            listening.set_result(True)
            if self._down:
                self._down = False
                log.info("listening for changes on %s again", self.config.redacted_url)
            try:
                async for notify in conn.notifies():
                    self._wake(self._waiters.get(notify.payload, ()))
            except (psycopg.Error, OSError) as exc:
                self._report_down(exc)
        finally:
            if not listening.done():
                listening.set_result(False)
            # Lost or closed: a change may have been missed, so everyone looks.
            self._wake([w for waiters in self._waiters.values() for w in waiters])
            if conn is not None:
                await conn.close()

    def _report_down(self, exc: BaseException) -> None:
        if not self._down:  # once per outage, not once per wait
            self._down = True
            log.warning(
                "cannot listen for changes on %s (%s); workers and result() waiters poll "
                "until it is back",
                self.config.redacted_url,
                self.config.scrub(" ".join(str(exc).split())),
            )

    @staticmethod
    def _wake(waiters: Iterable[asyncio.Future[None]]) -> None:
        for woken in list(waiters):
            if not woken.done():
                woken.set_result(None)
