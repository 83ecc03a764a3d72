"""One attempt at a run: its body, heartbeat, durable saves and finalization.

Why an attempt stopped is recorded where it happens, as a :class:`Stop`, and
the outcome is decided from that record alone, never by reading exception
chains:

====================  ========================================  ===============
stop                  recorded by                               the record gets
====================  ========================================  ===============
none, it returned     —                                         ``complete``
none, it raised       —: the run's own error (model, tool,      ``fail``
                      step limit, deadline, critic, build,
                      not JSON)
``SHUTDOWN``          ``Executor.shutdown()``                   ``release``
``CANCELLED``         the caller cancelling ``Executor.run``    ``fail``
``CANCEL_REQUESTED``  a save or renewal reporting a cancel      ``fail``
                      request (``Executor.cancel``)             (``Cancelled``)
``LEASE_LOST``        a save or the heartbeat meeting           nothing
                      LeaseLost
``STORE_DOWN``        a save that could not reach the store     nothing: left
                      while the lease lasted                    ``running``
none, it parked       a tool asking for outside input           ``wait``
                      (:mod:`outlast.waiting`)
====================  ========================================  ===============

Before a tool starts, :meth:`RunAttempt.ensure_owned` checks that the lease
this worker last renewed is still live by its own clock; a paused worker
whose lease ran out renews first, and stops (LeaseLost) when another worker
took the run meanwhile: it never starts a tool of a run it lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from outlast import ids, transitions
from outlast.bodies import Output
from outlast.errors import (
    Cancelled,
    LeaseLost,
    RunError,
    RunWaiting,
    Shutdown,
    StoreError,
    StoreUnavailable,
)
from outlast.events import EventKind
from outlast.messages import JSON
from outlast.observing import observed
from outlast.ports import Checkpointer, CheckpointState
from outlast.throttle import ThrottledCheckpointer
from outlast.waiting import Parked

log = logging.getLogger("outlast.executor")

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (StoreUnavailable, OSError)
"""Store errors worth retrying: the store could not be reached (OSError covers
the drivers' connection and timeout errors an adapter did not translate)."""

FIRST_RETRY = 0.05
LAST_RETRY = 2.0
"""Backoff of a save's retries, in seconds: doubling from the first to the last."""


class StopReason(enum.Enum):
    SHUTDOWN = "host shutdown"
    CANCELLED = "cancelled by the caller"
    CANCEL_REQUESTED = "cancelled by request"
    LEASE_LOST = "lease lost"
    STORE_DOWN = "store unreachable"


@dataclass(frozen=True, slots=True)
class Stop:
    """Why an attempt stopped before its end, and the error that said so."""

    reason: StopReason
    error: BaseException | None = None


class RunAttempt:
    """Runs one body on one checkpointer (None: not durable) and finalizes it.

    ``lease`` is the lease length: a failing save is retried while the lease
    the last successful renewal (or the begin or claim) bought lasts.
    ``renew_interval`` paces the heartbeat. ``number`` is the run's attempt
    (for events); ``owned_since`` is ``time.monotonic()`` taken just before
    the begin or claim was asked for.
    """

    def __init__(
        self,
        checkpointer: Checkpointer | None,
        *,
        lease: float,
        renew_interval: float,
        number: int = 0,
        owned_since: float | None = None,
    ) -> None:
        self.checkpointer = checkpointer
        self.number = number
        self._run_id = checkpointer.run_id if checkpointer is not None else "(not durable)"
        self.lease = lease
        self.renew_interval = renew_interval
        self.stop: Stop | None = None
        self._stopping = asyncio.Event()
        self._beating = True
        self._body: asyncio.Task[Output] | None = None
        # The lease the begin or claim bought runs from no earlier than when it
        # was asked for: counting from then keeps this worker's view on the safe side.
        since = time.monotonic() if owned_since is None else owned_since
        self._owned_until = since + lease

    def request_stop(self, reason: StopReason, error: BaseException | None = None) -> None:
        """Stop the body; the first reason recorded decides the outcome."""
        if self.stop is None:
            self.stop = Stop(reason, error)
        self._stopping.set()
        if self._body is not None and not self._body.done():
            self._body.cancel(f"outlast: {reason.value}")

    # -- the body ------------------------------------------------------------

    async def run(self, body: Coroutine[Any, Any, Output]) -> Output:
        """Run ``body`` to its end, finalize the record, return or raise the outcome."""
        self._body = asyncio.create_task(body)
        if self.stop is not None:  # stopped before the body started
            self._body.cancel(f"outlast: {self.stop.reason.value}")
        heartbeat = (
            asyncio.create_task(self._heartbeat()) if self.checkpointer is not None else None
        )
        output: Output | None = None
        error: BaseException | None = None
        try:
            output = await self._body
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                self.request_stop(StopReason.CANCELLED, exc)
            error = await self._wound_down(exc)
        except BaseException as exc:  # noqa: BLE001 - every exit is finalized, then re-raised
            error = exc
        finally:
            if heartbeat is not None:
                await self._stop_heartbeat(heartbeat)
        done = error is None and (
            self.stop is None or self.stop.reason is not StopReason.LEASE_LOST
        )
        if isinstance(error, Parked) and self.checkpointer is None:
            error = RunError(
                "a tool asked for outside input, but this run has no store to wait in; "
                "give the Executor a store (outlast.open(url))"
            )
        ended = output if output and done else None
        counts: dict[str, JSON] = dict(ended[3]) if ended else {}
        await uninterrupted(
            self._finalize(ended[0] if ended else None, done, error, counts or None)
        )
        return self._outcome(output, done, error)

    async def _stop_heartbeat(self, heartbeat: asyncio.Task[None]) -> None:
        """Stop the heartbeat for good before the record is finalized.

        A flag, then a cancel, then a wait for its end: a cancel alone can be
        swallowed by a driver (asyncio.wait_for on Python 3.11 drops one that
        lands as a send completes), and a heartbeat that outlives its attempt
        would renew a run nobody runs forever, so nobody could recover it.
        """
        self._beating = False
        heartbeat.cancel()
        with contextlib.suppress(BaseException):
            await uninterrupted(asyncio.wait({heartbeat}))

    async def _wound_down(self, cancelled: asyncio.CancelledError) -> BaseException:
        """After a cancellation: wait for the body to stop (its save in flight
        finishes first) and return how it ended."""
        assert self._body is not None
        with contextlib.suppress(BaseException):
            await uninterrupted(asyncio.wait({self._body}))
        if self._body.cancelled() or not self._body.done():
            return cancelled
        return self._body.exception() or cancelled

    def _outcome(self, output: Output | None, done: bool, error: BaseException | None) -> Output:
        stop = self.stop
        if done and (stop is None or stop.reason is not StopReason.CANCELLED):
            assert output is not None
            return output
        if stop is None:
            assert error is not None
            if isinstance(error, Parked):
                raise RunWaiting(self._run_id, error.request.get("request"))
            raise error
        if stop.reason is StopReason.SHUTDOWN:
            raise Shutdown("the run was interrupted by host shutdown and released for recovery")
        if stop.reason is StopReason.CANCELLED:
            raise asyncio.CancelledError
        if stop.reason is StopReason.CANCEL_REQUESTED:
            raise Cancelled(f"run {self._run_id} was cancelled by request")
        assert stop.error is not None
        raise stop.error

    # -- saves and the heartbeat --------------------------------------------------

    async def save(
        self, state: CheckpointState | Callable[[], CheckpointState], *, now: bool = False
    ) -> None:
        """Make ``state`` durable (the loop's checkpoint callback); a function
        building the state is called only when there is a store to write to.

        Shielded from the body's cancellation: a save is written whole or not
        at all. A store that cannot be reached is retried with backoff while
        the lease lasts; a stop request ends the retries at once. ``now``
        writes through a throttled checkpointer at once (a ``retry=False``
        call's start must be durable before the call).
        """
        if self.checkpointer is not None:
            built = state() if callable(state) else state
            await uninterrupted(self._save_retrying(self.checkpointer, built, now))

    async def _save_retrying(self, cp: Checkpointer, state: CheckpointState, now: bool) -> None:
        delay = FIRST_RETRY
        while True:
            try:
                cancel_requested = await observed(
                    EventKind.SAVE,
                    cp.run_id,
                    cp.namespace,
                    cp.epoch,
                    _write(cp, state, now),
                    attempt=self.number,
                )
            except LeaseLost as exc:
                self.request_stop(StopReason.LEASE_LOST, exc)
                raise
            except TRANSIENT as exc:
                left = self._owned_until - time.monotonic()
                if left <= delay:
                    log.error(
                        "outlast: run %s could not save for the whole lease (%s); it stops "
                        "here and stays running for recovery",
                        cp.run_id,
                        exc,
                    )
                    self.request_stop(StopReason.STORE_DOWN, exc)
                    raise
                log.warning(
                    "outlast: saving run %s failed (%s); retrying in %.2fs (lease left: %.1fs)",
                    cp.run_id,
                    exc,
                    delay,
                    left,
                )
                with contextlib.suppress(TimeoutError):
                    # Jitter, so workers cut off together do not retry in step (not security).
                    jitter = random.uniform(0.8, 1.2)  # noqa: S311
                    await asyncio.wait_for(self._stopping.wait(), delay * jitter)
                if self.stop is not None:  # stopped while waiting: no more retries
                    raise
                delay = min(delay * 2, LAST_RETRY)
            except StoreError as exc:  # the store refuses for good: not the run's fault
                log.error(
                    "outlast: saving run %s failed (%s: %s); it stops here and stays running",
                    cp.run_id,
                    type(exc).__name__,
                    exc,
                )
                self.request_stop(StopReason.STORE_DOWN, exc)
                raise
            else:
                # A save does not extend the lease (only a renewal does): the
                # retry budget stays the lease the last renewal bought.
                if cancel_requested:  # the step is saved; the run stops here
                    self.request_stop(StopReason.CANCEL_REQUESTED)
                return

    async def _heartbeat(self) -> None:
        cp = self.checkpointer
        assert cp is not None
        while True:
            await asyncio.sleep(self.renew_interval)
            if not self._beating:  # the attempt ended (its cancel may have been swallowed)
                return
            sent = time.monotonic()  # the store's lease runs from after this moment
            try:
                cancel_requested = await self._renew(cp)
            except LeaseLost as exc:
                log.warning("outlast: run %s lost its lease (%s); stopping it", cp.run_id, exc)
                self.request_stop(StopReason.LEASE_LOST, exc)
                return
            except Exception as exc:  # noqa: BLE001 - a heartbeat blip must not kill the run
                log.warning("outlast: lease renewal of run %s failed: %s", cp.run_id, exc)
            else:
                self._owned_until = sent + self.lease
                if cancel_requested:
                    log.info("outlast: run %s was cancelled by request; stopping it", cp.run_id)
                    self.request_stop(StopReason.CANCEL_REQUESTED)
                    return

    async def _renew(self, cp: Checkpointer) -> bool:
        """One renewal, reported (a refused one as ``lease_lost``)."""
        return await observed(
            EventKind.RENEW, cp.run_id, cp.namespace, cp.epoch, cp.renew(), attempt=self.number
        )

    async def ensure_owned(self) -> None:
        """Raise unless this worker still owns the run (called before a tool starts).

        Owned while the lease the last successful renewal (or the begin or
        claim) bought is live by this process's clock. Past it (a paused or
        starved worker), renew now: LeaseLost (another worker took the run)
        stops the attempt, as does a store that cannot be reached (the tool
        must not start unowned); a renewal reporting a cancel request stops
        it as cancelled.
        """
        cp = self.checkpointer
        if cp is None or time.monotonic() < self._owned_until:
            return
        sent = time.monotonic()
        try:
            cancel_requested = await uninterrupted(self._renew(cp))
        except LeaseLost as exc:
            log.warning(
                "outlast: run %s was taken over while this worker was not renewing (%s); "
                "no tool is started",
                cp.run_id,
                exc,
            )
            self.request_stop(StopReason.LEASE_LOST, exc)
            raise
        except Exception as exc:
            self.request_stop(StopReason.STORE_DOWN, exc)
            raise
        self._owned_until = sent + self.lease
        if cancel_requested:
            self.request_stop(StopReason.CANCEL_REQUESTED)
            raise Cancelled(f"run {cp.run_id} was cancelled by request")

    # -- finalization -----------------------------------------------------------

    async def _finalize(
        self, output: JSON, done: bool, error: BaseException | None, usage: JSON
    ) -> None:
        cp = self.checkpointer
        if cp is None:
            return
        stop = self.stop
        if stop is not None and stop.reason is StopReason.LEASE_LOST:
            if isinstance(cp, ThrottledCheckpointer):
                cp.discard()
            log.warning(
                "outlast: run %s was claimed by another worker; leaving its record alone",
                cp.run_id,
            )
            return
        if stop is not None and stop.reason is StopReason.STORE_DOWN:
            return  # the store is unreachable: the run stays running for recovery
        await finish(cp, output, done, error, stop, usage, attempt=self.number)


async def finish(
    cp: Checkpointer,
    output: JSON,
    done: bool,
    error: BaseException | None,
    stop: Stop | None,
    usage: JSON = None,
    *,
    attempt: int = 0,
) -> None:
    """Write the record's end: complete, release, park (wait) or fail. A store
    error here is logged and never masks the run's own result or error."""
    kind: EventKind
    if done:
        kind, write = EventKind.COMPLETE, cp.complete(output, usage)
    elif stop is None and isinstance(error, Parked):
        kind, write = EventKind.WAIT, cp.wait(error.request, error.timeout)
    elif stop is not None and stop.reason is StopReason.SHUTDOWN:
        kind, write = EventKind.RELEASE, cp.release()
    else:
        kind, write = EventKind.FAIL, cp.fail(failure(error, stop))
    try:
        await observed(kind, cp.run_id, cp.namespace, cp.epoch, write, attempt=attempt)
    except Exception as exc:  # noqa: BLE001 - finalize errors never mask the run's outcome
        log.warning(
            "outlast: finalizing run %s failed (%s: %s)", cp.run_id, type(exc).__name__, exc
        )


async def _write(cp: Checkpointer, state: CheckpointState, now: bool) -> bool:
    cancel_requested = await cp.save(state)
    if now and isinstance(cp, ThrottledCheckpointer):
        await cp.flush()
        return await cp.save(state)  # nothing new: reports the flush's cancel flag
    return cancel_requested


def failure(error: BaseException | None, stop: Stop | None) -> str:
    """The error text of a failed record: a cancel request's, or the error's."""
    if stop is not None and stop.reason is StopReason.CANCEL_REQUESTED:
        return transitions.CANCELLED
    return StopReason.CANCELLED.value if error is None else describe(error)


def describe(error: BaseException) -> str:
    """The text a failed record keeps: the error's type and message."""
    if isinstance(error, asyncio.CancelledError):
        return StopReason.CANCELLED.value
    text = str(error)
    return ids.printable(f"{type(error).__name__}: {text}" if text else type(error).__name__)


async def uninterrupted(operation: Awaitable[T]) -> T:
    """Await ``operation`` to its end even if the awaiting task is cancelled.

    Used for saves and finalization, so a cancelled run still records its
    state. If the awaiting task was cancelled meanwhile, CancelledError is
    raised once the operation is done, whether it succeeded or failed.
    """
    task = asyncio.ensure_future(operation)
    while not task.done():
        # Our own cancellation, or the operation's error: either way, wait for its end.
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation wins
        raise asyncio.CancelledError
    return task.result()
