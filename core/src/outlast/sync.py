"""A synchronous facade over the executor, for hosts that are not async.

Scripts, Django or Flask views and Celery tasks call :class:`SyncExecutor`
like any blocking library::

    from outlast import SyncExecutor

    with SyncExecutor("sqlite:///./runs.db") as executor:
        executor.register("report", agent)
        result = executor.run("report", {"topic": "durability"})
        run_id = executor.submit("report", {"topic": "fleets"})  # for the workers
        print(executor.result(run_id, timeout=600).output)

It owns one event loop in a background thread, and every method runs the
:class:`~outlast.Executor` method of the same name there and blocks until it
returns: the store's connections live on that loop, whichever thread calls.
It is thread-safe: a web server's request threads may share one. Ctrl-C (or
any exception in the calling thread) during a blocking call shuts the
executor down, so the runs it was running are released for recovery, before
the exception goes on. From async code, use :class:`~outlast.Executor`
itself: a blocking call would stall your event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from outlast.executor import Executor
from outlast.messages import JSON
from outlast.plugins import open as open_store
from outlast.ports import CheckpointerFactory, RunPage, RunRecord, RunStatus, StoredRun
from outlast.recovery import RecoveryReport
from outlast.runs import Builder, RunDefinition, RunResult

T = TypeVar("T")

RELEASE_TIMEOUT = 30.0
"""Seconds an interrupted blocking call waits for its runs to be released."""


class SyncExecutor:
    """An :class:`~outlast.Executor` with blocking methods (see the module docstring).

    ``store`` is a URL (opened here, closed by :meth:`close`), a store from
    :func:`outlast.open`, or None to run without durability. ``options`` are
    the Executor's keywords (``namespace``, ``lease``, ``max_crashes``...).
    """

    def __init__(self, store: str | CheckpointerFactory | None, **options: Any) -> None:
        self._owns_store = isinstance(store, str)
        opened = open_store(store) if isinstance(store, str) else store
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="outlast-sync", daemon=True
        )
        self._thread.start()
        self._closed = False
        self.executor: Executor = self._call(_make(opened, options))

    def __repr__(self) -> str:
        return f"SyncExecutor({self.executor!r})"

    @property
    def store(self) -> CheckpointerFactory | None:
        return self.executor.store

    def register(self, kind: str, definition: RunDefinition | Builder) -> None:
        """Register a run definition (or a builder of one) as ``kind``."""
        self.executor.register(kind, definition)

    def run(self, kind: str, input: JSON = None, *, run_id: str | None = None) -> RunResult:
        """Run ``kind`` to its end in this process (see :meth:`Executor.run`)."""
        return self._call(self.executor.run(kind, input, run_id=run_id))

    def submit(self, kind: str, input: JSON = None, *, run_id: str | None = None) -> str:
        """Record a run for the fleet's workers; returns its id at once."""
        return self._call(self.executor.submit(kind, input, run_id=run_id))

    def result(self, run_id: str, *, timeout: float | None = None) -> RunResult:
        """Block until the run is terminal; its result (RunFailed if it failed)."""
        return self._call(self.executor.result(run_id, timeout=timeout))

    def send(self, run_id: str, payload: JSON) -> RunRecord:
        """Deliver outside input to a run waiting for it, once."""
        return self._call(self.executor.send(run_id, payload))

    def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run, wherever it runs."""
        return self._call(self.executor.cancel(run_id))

    def recover(self, *, limit: int = 100) -> RecoveryReport:
        """Claim and continue claimable runs of the registered kinds, one by one."""
        return self._call(self.executor.recover(limit=limit))

    def load(self, run_id: str) -> StoredRun | None:
        """The run's record and saved progress, or None."""
        return self._call(self._store().load(run_id, self.executor.namespace))

    def list(
        self, status: RunStatus | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> RunPage:
        """A page of the namespace's runs (optionally of one status)."""
        return self._call(self._store().list(self.executor.namespace, status, limit, cursor))

    def delete(self, run_id: str) -> bool:
        """Delete a run and everything stored for it."""
        return self._call(self._store().delete(run_id, self.executor.namespace))

    def shutdown(self) -> None:
        """Release every run this executor is running (from any thread)."""
        if not self._closed:
            self._loop.call_soon_threadsafe(self.executor.shutdown)

    def close(self) -> None:
        """Shut down, close a store this facade opened, stop its thread. Idempotent."""
        if self._closed:
            return
        self.shutdown()
        try:
            if self._owns_store and self.executor.store is not None:
                self._call(self.executor.store.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=RELEASE_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> SyncExecutor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _store(self) -> CheckpointerFactory:
        store = self.executor.store
        if store is None:
            raise ValueError("this SyncExecutor has no store (it was made with store=None)")
        return store

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this SyncExecutor is closed; make a new one")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():  # interrupted here (Ctrl-C): release, then go on
                self._loop.call_soon_threadsafe(self.executor.shutdown)
                # The run's Shutdown (or its own error) is dropped: the interruption wins.
                with contextlib.suppress(Exception, concurrent.futures.CancelledError):
                    future.result(timeout=RELEASE_TIMEOUT)
            raise


async def _make(store: CheckpointerFactory | None, options: dict[str, Any]) -> Executor:
    """The Executor, made on the facade's loop (it creates loop-bound state)."""
    return Executor(store, **options)
