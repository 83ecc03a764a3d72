"""Starting a fresh run: begin its durable record, or answer for an existing id.

* The record is begun shielded from the caller's cancellation: a caller that
  gives up while ``begin`` is in flight still leaves a finalized (failed)
  record, never a running one nobody runs.
* A run id that exists is an idempotency key (:mod:`outlast.idempotency`):
  its stored result, RunFailed, or RunExists; a run deleted between the
  ``begin`` and the look is begun again (a few times at most).
* Only a store that cannot be reached makes a run non-durable (a WARNING);
  ``strict`` raises instead. Every other error (bad input) is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from outlast.attempt import TRANSIENT, finish, uninterrupted
from outlast.errors import RunExists
from outlast.events import EventKind
from outlast.idempotency import existing_run
from outlast.observing import observed
from outlast.ports import Checkpointer, CheckpointerFactory, RunStart
from outlast.runs import RunResult

log = logging.getLogger("outlast.executor")

TRIES = 3
"""Begins of a run id that exists but vanishes before it can be read (deleted meanwhile)."""

Begun = Checkpointer | RunResult | None
"""A new record's checkpointer, an existing id's stored result, or None (not durable)."""


async def begin_shielded(store: CheckpointerFactory | None, start: RunStart, strict: bool) -> Begun:
    """Begin ``start``; if the caller cancels meanwhile, still fail the begun record."""
    begun = asyncio.ensure_future(begin(store, start, strict))
    try:
        return await asyncio.shield(begun)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await uninterrupted(asyncio.wait({begun}))
        if not begun.cancelled() and begun.exception() is None:
            cp = begun.result()
            if isinstance(cp, Checkpointer):
                await uninterrupted(finish(cp, None, False, None, None))
        raise


async def begin(store: CheckpointerFactory | None, start: RunStart, strict: bool) -> Begun:
    """The record of a fresh run (see the module docstring)."""
    if store is None:
        return None
    for _ in range(TRIES):
        try:
            return await observed(
                EventKind.BEGIN, start.run_id, start.namespace, 1, store.begin(start)
            )
        except RunExists:
            outcome = await existing_run(store, start)
            if outcome is not None:
                return outcome
        except TRANSIENT as exc:
            if strict:
                raise
            log.warning(
                "outlast: begin of run %s failed (%s: %s); the store cannot be reached, so "
                "the run continues WITHOUT durability",
                start.run_id,
                type(exc).__name__,
                exc,
            )
            return None
    raise RunExists(start.run_id, start.namespace, "it keeps being deleted and begun again")
