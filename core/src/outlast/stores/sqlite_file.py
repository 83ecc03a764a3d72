"""One SQLite file's connection, used by one worker thread of its own.

The store and every checkpointer it hands out share one :class:`SqliteFile`:
sqlite3 work never runs on the event loop, and driver errors leave it as
outlast errors that say what to do.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from outlast.errors import StoreError
from outlast.stores.sqlite_schema import connect, translate

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
        return await loop.run_in_executor(self._worker, self._run, job)

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
            return job(self._conn)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.busy_timeout) from exc

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
