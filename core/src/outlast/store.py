"""The store :func:`outlast.open` returns: core's front of any backend.

:class:`Store` is a CheckpointerFactory that stands before the backend's own
and keeps, in one place, the rules no backend should have to repeat:

* run ids, namespaces, owners, leases and page sizes are checked
  (:mod:`outlast.ids`) before the backend sees them: a bad one raises
  ValueError saying which rule it breaks;
* ``retention`` (:mod:`outlast.retention`) purges old terminal runs as the
  recovery work list is read;
* after ``close()`` every call raises StoreError instead of reaching a
  closed connection.

The backend's own object (``PostgresStore``, ``SqliteStore``...) is
``store.backend``, for what only it offers (``migrate()``, say).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from outlast import ids
from outlast.errors import StoreError
from outlast.messages import JSON
from outlast.ports import (
    DEFAULT_NAMESPACE,
    ChangeNotifier,
    Checkpointer,
    CheckpointerFactory,
    Claim,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    StoredRun,
)
from outlast.retention import RetentionSchedule


class Store:
    """A CheckpointerFactory checking every call before ``backend`` gets it."""

    def __init__(
        self, backend: CheckpointerFactory, *, retention: RetentionSchedule | None = None
    ) -> None:
        if isinstance(backend, Store):
            backend = backend.backend
        self._backend = backend
        self._retention = retention
        self._closed = False

    def __repr__(self) -> str:
        kept = f", retention={self._retention.retention:g}s" if self._retention else ""
        return f"outlast.Store({self._backend!r}{kept})"

    @property
    def backend(self) -> CheckpointerFactory:
        """The backend's own factory (``PostgresStore``, ``SqliteStore``...)."""
        return self._backend

    @property
    def retention(self) -> float | None:
        """The ``retention`` option in seconds, or None."""
        return None if self._retention is None else self._retention.retention

    def _open(self) -> CheckpointerFactory:
        if self._closed:
            raise StoreError(
                f"{self!r} is closed; open a new one with outlast.open(url) to use the store again"
            )
        return self._backend

    async def begin(self, start: RunStart) -> Checkpointer:
        # RunStart checked its names and lease when it was built.
        return await self._open().begin(start)

    async def submit(self, start: RunStart) -> None:
        await self._open().submit(start)

    async def claim_next(
        self,
        kinds: Sequence[str],
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        backend = self._open()
        chosen = [ids.check_kind(kind) for kind in kinds]
        if not chosen:
            return None  # a worker that knows no kind claims nothing
        ids.check_owner(owner)
        ids.check_namespace(namespace)
        if self._retention is not None:  # a fleet's workers only ever claim_next
            await self._retention.purge(backend, namespace)
        return await backend.claim_next(
            chosen, owner=owner, lease=ids.check_lease(lease), namespace=namespace
        )

    async def send(
        self, run_id: str, delivery: JSON, namespace: str = DEFAULT_NAMESPACE
    ) -> RunRecord:
        backend = self._open()
        ids.check_run_id(run_id)
        ids.check_namespace(namespace)
        return await backend.send(run_id, delivery, namespace)

    async def cancel(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> RunRecord:
        backend = self._open()
        ids.check_run_id(run_id)
        ids.check_namespace(namespace)
        return await backend.cancel(run_id, namespace)

    async def wait_for_change(self, namespace: str, timeout: float) -> bool:
        """The backend's notification (see :class:`~outlast.ports.ChangeNotifier`),
        or, for a store without one, ``timeout`` seconds of waiting: False."""
        backend = self._open()
        ids.check_namespace(namespace)
        if isinstance(backend, ChangeNotifier):
            return await backend.wait_for_change(namespace, timeout)
        await asyncio.sleep(timeout)
        return False

    @property
    def notifies(self) -> bool:
        """Whether the backend notifies changes (else waits are polls)."""
        return isinstance(self._backend, ChangeNotifier)

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        backend = self._open()
        ids.check_namespace(namespace)
        ids.check_limit(limit)
        if self._retention is not None:
            await self._retention.purge(backend, namespace)
        return await backend.interrupted(namespace, limit)

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        backend = self._open()
        ids.check_run_id(run_id)
        ids.check_owner(owner)
        ids.check_namespace(namespace)
        return await backend.claim(
            run_id, owner=owner, lease=ids.check_lease(lease), namespace=namespace
        )

    async def quarantine(
        self, run_id: str, reason: str, namespace: str = DEFAULT_NAMESPACE
    ) -> bool:
        backend = self._open()
        ids.check_run_id(run_id)
        ids.check_namespace(namespace)
        return await backend.quarantine(run_id, ids.printable(reason), namespace)

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        backend = self._open()
        ids.check_run_id(run_id)
        ids.check_namespace(namespace)
        return await backend.load(run_id, namespace)

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        backend = self._open()
        ids.check_namespace(namespace)
        ids.check_limit(limit)
        if cursor is not None:
            ids.check_run_id(cursor)  # a cursor is the last run id of a page
        return await backend.list(
            namespace, None if status is None else RunStatus(status), limit, cursor
        )

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        backend = self._open()
        ids.check_run_id(run_id)
        ids.check_namespace(namespace)
        return await backend.delete(run_id, namespace)

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        backend = self._open()
        ids.check_namespace(namespace)
        if (
            isinstance(older_than, bool)
            or not isinstance(older_than, int | float)
            or not (math.isfinite(older_than) and older_than >= 0)
        ):
            raise ValueError(f"older_than must be a number of seconds >= 0, got {older_than!r}")
        return await backend.purge(older_than, namespace)

    async def close(self) -> None:
        """Close the backend; every later call raises StoreError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._backend.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
