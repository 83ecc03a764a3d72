"""One SQLite file's connection, used by one worker thread of its own.

The store and every checkpointer it hands out share one :class:`SqliteFile`:
sqlite3 work never runs on the event loop, and driver errors leave it as
outlast errors that say what to do. It also keeps the ``-wal`` file small:
after a write that leaves it past its bound, once the caller pauses, it
checkpoints the log on the worker.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from outlast.errors import StoreError
from outlast.stores.sqlite_schema import checkpoint, connect, translate, wal_over_bound

log = logging.getLogger("outlast.stores.sqlite")

T = TypeVar("T")


class SqliteFile:
    """The connection to ``path``, opened (and the schema migrated) on first use.

    ``create=False``: only an existing outlast database is opened (see
    :func:`~outlast.stores.sqlite_schema.connect`).
    """

    def __init__(
        self, path: Path, busy_timeout: float, *, create: bool = True, synchronous: str = "normal"
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.create = create
        self.synchronous = synchronous
        # One thread owns the one connection: sqlite3 work never runs on the loop.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outlast-sqlite")
        self._conn: sqlite3.Connection | None = None  # touched by the worker only
        self._calls = 0  # calls made so far: tells the loop whether one came since
        self._wal_over = False  # a write left the -wal past its bound, not checkpointed yet
        self._checkpoint_queued = False
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteFile({str(self.path)!r})"

    async def call(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` with the connection on the worker thread."""
        if self._closed:
            raise StoreError(
                f"the SQLite store of {str(self.path)!r} is closed; open a new one with "
                "outlast.open(url)"
            )
        loop = asyncio.get_running_loop()
        self._calls += 1
        result = await loop.run_in_executor(self._worker, self._run, job)
        if self._wal_over:
            loop.call_soon(self._checkpoint_if_idle, self._calls)
        return result

    async def close(self) -> None:
        """Close the connection and stop the worker; later calls raise StoreError."""
        if self._closed:
            return
        self._closed = True  # before awaiting: nothing new is queued behind the close
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._worker, self._disconnect)
        finally:
            self._worker.shutdown(wait=False)

    def _run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                self._conn = connect(
                    self.path, self.busy_timeout, create=self.create, synchronous=self.synchronous
                )
            changes = self._conn.total_changes
            result = job(self._conn)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.busy_timeout) from exc
        if self._conn.total_changes != changes and wal_over_bound(self.path):
            self._wal_over = True
        return result

    def _checkpoint_if_idle(self, calls: int) -> None:
        """On the loop, once the call that found the ``-wal`` file past its
        bound (:func:`~outlast.stores.sqlite_schema.wal_over_bound`) has
        returned: queue a checkpoint, unless another call came meanwhile.

        The checkpoint runs on the worker after the write, never inside it:
        the write was durable at its commit (the checkpoint only moves pages),
        so its caller has the answer first. It starts only if the caller did
        not go straight on to another call (``call_soon`` runs once the
        caller's task yields): an agent's next save comes after a model or
        tool call, by when the checkpoint's three fsyncs are done; saves
        issued back to back would wait for them, so those leave the log to
        SQLite's own auto-checkpoint (1 MiB, inside a commit), as before, and
        the next pause checkpoints it.
        """
        if calls != self._calls or self._checkpoint_queued or self._closed:
            return
        self._checkpoint_queued = True
        self._worker.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        self._checkpoint_queued = False
        self._wal_over = False  # the next write past the bound asks again
        if self._conn is None:  # closed meanwhile: closing the last connection checkpoints
            return
        try:
            checkpoint(self._conn)
        except sqlite3.Error as exc:  # nobody waits on this job: say it, the next write retries
            log.warning(
                "checkpoint of the -wal file of SQLite database %r failed: %s", str(self.path), exc
            )

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
