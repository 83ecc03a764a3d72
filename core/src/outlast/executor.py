"""The executor: runs registered agents durably, recovers interrupted runs.

A small facade. Beginning a fresh run's record is :mod:`outlast.beginning`;
one attempt at a run (body, heartbeat, durable saves, finalize) is
:mod:`outlast.attempt`; what running an existing run id means is
:mod:`outlast.idempotency`; continuing a claimed run is
:mod:`outlast.claimed`, done once by :mod:`outlast.recovery` and
continuously by :mod:`outlast.worker`; submitting, waiting for and
cancelling runs of a fleet is :mod:`outlast.submission`; the run kinds are
:mod:`outlast.registry`.

====================================  =============================
how the run ended                     what the durable record gets
====================================  =============================
it returned                           ``complete(output)``
host shutdown (:meth:`shutdown`,      ``release()``: stays running,
SIGTERM/SIGINT with handle_signals)   recoverable at once
the run's own error: model, tool,     ``fail(error text)``
step limit, deadline, critic, build,
state that is not JSON; caller cancel
another worker claimed it             nothing: it is not ours
the store stayed unreachable for the  nothing: left running, for
whole lease                           recovery
====================================  =============================

Only a store that cannot be reached at ``begin`` makes a run non-durable (a
WARNING; ``strict=True`` raises instead). Errors of complete/fail/release are
logged as WARNINGs and never mask the run's own result or error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator

from outlast import beginning, ids, submission, worker
from outlast.attempt import RunAttempt, Stop, StopReason, finish, uninterrupted
from outlast.attempt_events import attempt_ended, attempt_started
from outlast.bodies import run_body
from outlast.errors import ConfigurationError, Shutdown
from outlast.messages import JSON
from outlast.ports import (
    DEFAULT_NAMESPACE,
    Checkpointer,
    CheckpointerFactory,
    ResumeState,
    RunRecord,
    RunStart,
)
from outlast.recovery import RecoveryProgress, RecoveryReport, recover
from outlast.registry import Registry
from outlast.runs import Builder, RunDefinition, RunResult
from outlast.steps import RunScope
from outlast.throttle import ThrottledCheckpointer
from outlast.worker import WorkerStats

log = logging.getLogger("outlast.executor")

_SHUTDOWN = Stop(StopReason.SHUTDOWN)


def default_owner() -> str:
    """``host:pid:random``: unique per process, readable in ``outlast runs``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Executor:
    """Runs agents durably on a store and recovers the ones a crash left behind.

    ``lease`` is how long a run stays owned without a heartbeat; the executor
    renews it every ``renew_interval`` seconds (default a third of the lease).
    ``max_crashes`` bounds recoveries after crashes: a run whose workers died
    more often (leases that expired without a release) is failed as a poison
    run; releases by a shutdown never count. ``save_interval`` > 0 throttles
    saves with :class:`~outlast.throttle.ThrottledCheckpointer`.
    """

    def __init__(
        self,
        store: CheckpointerFactory | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        owner: str | None = None,
        lease: float = 30.0,
        max_crashes: int = 3,
        strict: bool = False,
        renew_interval: float | None = None,
        save_interval: float = 0.0,
    ) -> None:
        if isinstance(max_crashes, bool) or not isinstance(max_crashes, int) or max_crashes < 0:
            raise ValueError(f"max_crashes must be an integer >= 0, got {max_crashes!r}")
        self.store = store
        self.namespace = ids.check_namespace(namespace)
        self.owner = ids.check_owner(owner or default_owner())
        self.lease = ids.check_lease(lease)
        self.max_crashes = max_crashes
        self.strict = strict
        self.renew_interval = renew_interval if renew_interval is not None else lease / 3
        self.save_interval = save_interval
        self.registry = Registry()
        self._attempts: set[RunAttempt] = set()
        self._shutting_down = False
        self._stopping = asyncio.Event()

    def __repr__(self) -> str:
        return f"Executor(store={self.store!r}, namespace={self.namespace!r}, owner={self.owner!r})"

    def register(self, kind: str, definition: RunDefinition | Builder) -> None:
        """Register a run definition (or a builder of one from the input) as ``kind``."""
        self.registry.register(kind, definition)

    @property
    def kinds(self) -> list[str]:
        return self.registry.kinds

    # -- shutdown ----------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shutdown(self) -> None:
        """Stop every running run with Shutdown; each is released for recovery.

        Safe to call from a signal handler installed by :meth:`handle_signals`
        or from inside a run (a tool). New runs are refused afterwards.
        """
        self._shutting_down = True
        self._stopping.set()
        for attempt in list(self._attempts):
            attempt.request_stop(StopReason.SHUTDOWN)

    @property
    def stopping(self) -> asyncio.Event:
        """Set by :meth:`shutdown`: what a worker loop waits on."""
        return self._stopping

    @contextlib.contextmanager
    def handle_signals(self, *signals: signal.Signals) -> Iterator[None]:
        """Within the block, SIGTERM and SIGINT (or ``signals``) call :meth:`shutdown`."""
        loop = asyncio.get_running_loop()
        chosen = signals or (signal.SIGTERM, signal.SIGINT)
        for sig in chosen:
            loop.add_signal_handler(sig, self.shutdown)
        try:
            yield
        finally:
            for sig in chosen:
                loop.remove_signal_handler(sig)

    # -- running -----------------------------------------------------------------

    async def run(
        self,
        kind: str,
        input: JSON = None,
        *,
        run_id: str | None = None,
        resume: ResumeState | None = None,
        checkpointer: Checkpointer | None = None,
        claimed: RunRecord | None = None,
        claimed_at: float | None = None,
    ) -> RunResult:
        """Run ``kind`` on ``input`` to its end and return its result.

        A fresh run begins a durable record (``run_id`` defaults to a new
        uuid). A run id is an idempotency key: an id that exists never runs
        again (see :mod:`outlast.idempotency`). A recovered run passes the
        claim's ``checkpointer``, ``resume`` state and ``claimed`` record: it
        continues on the SAME record; ``claimed_at`` is ``time.monotonic()``
        taken just before the claim was asked for (the lease runs from no
        earlier; default: now). Raises the run's error after
        finalizing; Shutdown when it was released; RunWaiting when a tool
        asked for outside input and the run now waits for it.
        """
        if self._shutting_down:
            if checkpointer is not None:  # a claimed run: hand it back at once
                await uninterrupted(finish(checkpointer, None, False, None, _SHUTDOWN))
            raise Shutdown("the executor is shutting down; no new runs start")
        owned_since = time.monotonic() if claimed_at is None else claimed_at
        if checkpointer is None:
            self.registry.require(kind)
            run_id = uuid.uuid4().hex if run_id is None else ids.check_run_id(run_id)
            start = RunStart(run_id, kind, input, self.namespace, self.owner, self.lease)
            owned_since = time.monotonic()  # the store's lease runs from after this
            begun = await beginning.begin_shielded(self.store, start, self.strict)
            if isinstance(begun, RunResult):
                return begun
            cp = begun
        else:
            cp = checkpointer
            run_id = cp.run_id
        if cp is not None and self.save_interval > 0:
            cp = ThrottledCheckpointer(cp, self.save_interval)
        number = claimed.attempts if claimed is not None else 1
        attempt = RunAttempt(
            cp,
            lease=self.lease,
            renew_interval=self.renew_interval,
            number=number,
            owned_since=owned_since,
        )
        self._attempts.add(attempt)
        if self.shutting_down:  # shutdown() came while begin was in flight
            attempt.request_stop(StopReason.SHUTDOWN)
        scope = RunScope(
            run_id=run_id,
            namespace=cp.namespace if cp is not None else self.namespace,
            kind=kind,
            epoch=cp.epoch if cp is not None else 0,
            attempt=number,
            wait=claimed.wait if claimed is not None else None,
            delivery=claimed.delivery if claimed is not None else None,
            ensure_owned=attempt.ensure_owned if cp is not None else None,
        )
        scope = attempt_started(scope, resume)
        started = time.monotonic()
        outcome: BaseException | None = None
        try:
            output, transcript, phases, usage = await attempt.run(
                run_body(self.registry, kind, input, resume, attempt.save, scope)
            )
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            self._attempts.discard(attempt)
            attempt_ended(scope, time.monotonic() - started, outcome)
        return RunResult(
            run_id=run_id,
            kind=kind,
            output=output,
            transcript=tuple(transcript),
            phases=phases,
            epoch=cp.epoch if cp is not None else 0,
            durable=cp is not None,
            resumed=checkpointer is not None,
            skipped_phases=len(resume.completed_phases) if resume else 0,
            usage=usage,
        )

    # -- a fleet ------------------------------------------------------------------

    async def submit(self, kind: str, input: JSON = None, *, run_id: str | None = None) -> str:
        """Record a run for the fleet's workers to start; returns its run id at once.

        Idempotent by run id: the same id with the same kind is the same run
        (another kind: RunExists). The kind need not be registered here.
        """
        run_id = uuid.uuid4().hex if run_id is None else ids.check_run_id(run_id)
        start = submission.start_of(kind, input, run_id, self.namespace, self.lease)
        return await submission.submit(self._store(), start)

    async def result(self, run_id: str, *, timeout: float | None = None) -> RunResult:
        """Wait until the run is terminal and return its stored result.

        A failed run raises RunFailed with its stored error; no result within
        ``timeout`` seconds raises ResultTimeout (the run goes on); an
        unknown id raises RunNotFound.
        """
        return await submission.result(self._store(), run_id, self.namespace, timeout)

    async def send(self, run_id: str, payload: JSON) -> RunRecord:
        """Deliver outside input to a run waiting for it (a tool raised
        AwaitInput): ``payload`` becomes that tool call's result, and the run
        is claimable at once by any worker. Delivered once: a run that is
        not waiting (a second send included) raises NotWaiting; an unknown
        one RunNotFound. Returns the record after the delivery."""
        return await submission.send(
            self._store(), ids.check_run_id(run_id), self.namespace, payload
        )

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run: failed at once when nobody owns it, else by its owner
        at its next save or lease renewal (``Cancelled``). Returns the record
        after the request; RunFinished for a run that already ended."""
        return await self._store().cancel(ids.check_run_id(run_id), self.namespace)

    async def serve(
        self,
        *,
        concurrency: int = 1,
        poll_interval: float = 1.0,
        drain_timeout: float = 30.0,
    ) -> WorkerStats:
        """Work as a long-running worker until :meth:`shutdown` (see :mod:`outlast.worker`).

        Claims queued and interrupted runs of the registered kinds, runs at
        most ``concurrency`` at once, and on shutdown releases them and
        returns within ``drain_timeout`` seconds.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        for name, value in (("poll_interval", poll_interval), ("drain_timeout", drain_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        return await worker.serve(
            self,
            self._store(),
            concurrency=concurrency,
            poll_interval=poll_interval,
            drain_timeout=drain_timeout,
        )

    def _store(self) -> CheckpointerFactory:
        if self.store is None:
            raise ConfigurationError("this needs an executor with a store (outlast.open(url))")
        return self.store

    # -- recovery ------------------------------------------------------------------

    async def recover(
        self, *, limit: int = 100, progress: RecoveryProgress | None = None
    ) -> RecoveryReport:
        """Claim and continue up to ``limit`` claimable runs (interrupted or
        queued) of this namespace's registered kinds, one by one.

        The same machinery as :meth:`serve`, run once: see
        :mod:`outlast.recovery`. Stops claiming once the executor is shutting
        down.
        """
        return await recover(self, self._store(), limit=ids.check_limit(limit), progress=progress)
