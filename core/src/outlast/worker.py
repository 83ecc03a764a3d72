"""A long-running worker: claims runs continuously and runs up to N at once.

``Executor.serve(concurrency=N)`` (``outlast worker module:object``) loops:

* when a slot is free it asks the store's ``claim_next`` for the oldest
  claimable run of a kind this executor registered (queued, released, or its
  lease expired) and continues it (:mod:`outlast.claimed`) in a task of its
  own; the attempt renews the lease in the background;
* when nothing is claimable it waits for the store's notification of a change
  (PostgreSQL, Redis) or, at the latest, ``poll_interval`` seconds (with
  jitter, so a fleet does not poll in step);
* when the store cannot be reached it backs off (doubling to 30 seconds) and
  says what it waits for; an outage never ends the worker;
* on ``Executor.shutdown()`` (SIGTERM/SIGINT in the CLI) it stops claiming,
  its running runs are released (other workers take them at once), and it
  returns once they are, or after ``drain_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outlast.attempt import TRANSIENT
from outlast.claimed import Ended, Outcome, continue_claimed
from outlast.errors import StoreError
from outlast.ports import ChangeNotifier, CheckpointerFactory, Claim

if TYPE_CHECKING:
    from outlast.executor import Executor

log = logging.getLogger("outlast.worker")

FIRST_BACKOFF = 0.5
LAST_BACKOFF = 30.0
"""Seconds between claims while the store cannot be reached: doubling."""


_UNREACHABLE: tuple[type[BaseException], ...] = (*TRANSIENT, StoreError)
"""What a claim raises while the store cannot be reached (or refuses): wait, retry."""


@dataclass(slots=True)
class WorkerStats:
    """What a worker did, by outcome (``Outcome`` value -> count)."""

    claimed: int = 0
    ended: dict[str, int] = field(default_factory=dict)


async def serve(
    executor: Executor,
    store: CheckpointerFactory,
    *,
    concurrency: int,
    poll_interval: float,
    drain_timeout: float,
) -> WorkerStats:
    """Claim and run until ``executor`` shuts down; see the module docstring."""
    stats = WorkerStats()
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()
    stopping = executor.stopping
    backoff = FIRST_BACKOFF
    log.info(
        "outlast worker %s serves kinds %s of namespace %r, %d at a time",
        executor.owner,
        ", ".join(executor.kinds) or "(none)",
        executor.namespace,
        concurrency,
    )
    while not executor.shutting_down:
        if not await _acquire(slots, stopping):
            break
        started = time.monotonic()
        # Listen before looking: a change announced while claim_next finds
        # nothing then wakes the wait below instead of being missed.
        change = _listen(store, executor.namespace, poll_interval * _jitter())
        try:
            claim = await store.claim_next(
                executor.kinds,
                owner=executor.owner,
                lease=executor.lease,
                namespace=executor.namespace,
            )
        except _UNREACHABLE as exc:
            await _dismiss(change)
            slots.release()
            log.warning(
                "outlast worker: cannot claim from the store (%s: %s); waiting %.1fs for it",
                type(exc).__name__,
                exc,
                backoff,
            )
            await _wait(stopping, backoff * _jitter())
            backoff = min(backoff * 2, LAST_BACKOFF)
            continue
        backoff = FIRST_BACKOFF
        if claim is None:
            slots.release()
            await _idle(change, stopping)
            continue
        await _dismiss(change)
        stats.claimed += 1
        task = asyncio.create_task(_run(executor, claim, started, stats))
        running.add(task)
        task.add_done_callback(running.discard)
        task.add_done_callback(lambda _: slots.release())
    if running:
        log.info("outlast worker: draining %d running run(s)", len(running))
        _, pending = await asyncio.wait(running, timeout=drain_timeout)
        if pending:
            log.warning(
                "outlast worker: %d run(s) did not stop within %.0fs; leaving them to their leases",
                len(pending),
                drain_timeout,
            )
    return stats


async def _run(executor: Executor, claim: Claim, started: float, stats: WorkerStats) -> None:
    ended: Ended = await continue_claimed(executor, claim, started)
    stats.ended[ended.outcome.value] = stats.ended.get(ended.outcome.value, 0) + 1
    run_id = claim.record.run_id
    if ended.outcome is Outcome.FAILED:
        log.warning("outlast worker: run %s failed: %s", run_id, ended.error)
    else:
        log.info("outlast worker: run %s %s", run_id, ended.outcome.value)


async def _acquire(slots: asyncio.Semaphore, stopping: asyncio.Event) -> bool:
    """Take a slot; False when the worker is stopping first."""
    take = asyncio.ensure_future(slots.acquire())
    stop = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({take, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if take.done() and not take.cancelled():
        if stopping.is_set():
            slots.release()
            return False
        return True
    take.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await take
    if take.done() and not take.cancelled():  # acquired while being cancelled
        slots.release()
    return False


def _listen(store: CheckpointerFactory, namespace: str, timeout: float) -> asyncio.Future[Any]:
    """Start waiting for a change of ``namespace`` (at most ``timeout`` seconds):
    the store's notification, or a plain timer for a store without one."""
    if isinstance(store, ChangeNotifier):
        return asyncio.ensure_future(store.wait_for_change(namespace, timeout))
    return asyncio.ensure_future(asyncio.sleep(timeout))


async def _idle(change: asyncio.Future[Any], stopping: asyncio.Event) -> None:
    """Wait for ``change`` (or the worker stopping), nothing being claimable."""
    stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
    await asyncio.wait([change, stop], return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    await _dismiss(change)


async def _dismiss(change: asyncio.Future[Any]) -> None:
    change.cancel()
    with contextlib.suppress(BaseException):
        await change  # a store error here is the next claim's to report


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


def _jitter() -> float:
    """0.5..1.5: spreads a fleet's polls and retries (not security)."""
    return random.uniform(0.5, 1.5)  # noqa: S311
