"""The executor: runs registered agents durably, recovers interrupted runs.

Every exit of a run is finalized, shielded from the run's cancellation:

====================================  =============================
how the run ended                     what the durable record gets
====================================  =============================
it returned                           ``complete(output)``
host shutdown (:meth:`shutdown`,      ``release()``: stays running,
SIGTERM/SIGINT with handle_signals)   recoverable at once
anything else: model error, step      ``fail(error text)``
limit, deadline, critic, build error,
a tool's exception, caller cancel
another worker claimed it             nothing: it is not ours
====================================  =============================

``begin`` failing logs a WARNING and the run goes on without durability
(``strict=True`` raises instead); errors of complete/fail/release are logged
as WARNINGs and never mask the run's own result or error.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from outlast.errors import (
    ConfigurationError,
    CorruptCheckpoint,
    DeadlineExceeded,
    LeaseLost,
    PoisonRun,
    Shutdown,
    is_shutdown,
)
from outlast.events import Event, EventKind
from outlast.loop import run_loop, run_plan
from outlast.messages import JSON, Message, PhaseOutput
from outlast.plugins import emit
from outlast.ports import (
    DEFAULT_NAMESPACE,
    Checkpointer,
    CheckpointerFactory,
    CheckpointState,
    ResumeState,
    RunRecord,
    RunStart,
    validate_lease,
)
from outlast.runs import Agent, Builder, Plan, RunDefinition, RunResult
from outlast.throttle import ThrottledCheckpointer

log = logging.getLogger("outlast.executor")

T = TypeVar("T")


@dataclass(slots=True)
class RecoveryReport:
    """What :meth:`Executor.recover` did with each interrupted run it found."""

    results: list[RunResult] = field(default_factory=list)
    errors: dict[str, BaseException] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


RecoveryProgress = Callable[[RunRecord, str], None]
"""Called by recover() with each candidate and what happened to it
("recovered", "failed", "skipped", "released")."""


def default_owner() -> str:
    """``host:pid:random``: unique per process, readable in ``outlast runs``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Executor:
    """Runs agents durably on a store and recovers the ones a crash left behind.

    ``lease`` is how long a run stays owned without a heartbeat; the executor
    renews it every ``renew_interval`` seconds (default a third of the lease).
    ``max_attempts`` bounds recoveries: a run recovered more often is failed
    as a poison run. ``save_interval`` > 0 throttles saves with
    :class:`~outlast.throttle.ThrottledCheckpointer`.
    """

    def __init__(
        self,
        store: CheckpointerFactory | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        owner: str | None = None,
        lease: float = 30.0,
        max_attempts: int = 3,
        strict: bool = False,
        renew_interval: float | None = None,
        save_interval: float = 0.0,
    ) -> None:
        validate_lease(lease)
        if max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0, got {max_attempts!r}")
        self.store = store
        self.namespace = namespace
        self.owner = owner or default_owner()
        self.lease = lease
        self.max_attempts = max_attempts
        self.strict = strict
        self.renew_interval = renew_interval if renew_interval is not None else lease / 3
        self.save_interval = save_interval
        self._kinds: dict[str, RunDefinition | Builder] = {}
        self._running: set[asyncio.Task[Any]] = set()
        self._shutting_down = False

    def __repr__(self) -> str:
        return f"Executor(store={self.store!r}, namespace={self.namespace!r}, owner={self.owner!r})"

    # -- registry ----------------------------------------------------------

    def register(self, kind: str, definition: RunDefinition | Builder) -> None:
        """Register a run definition (or a builder of one from the input) as ``kind``."""
        if not kind:
            raise ValueError("kind must be a non-empty name")
        if kind in self._kinds:
            raise ValueError(f"run kind {kind!r} is already registered")
        self._kinds[kind] = definition

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    # -- shutdown ----------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shutdown(self) -> None:
        """Stop every running run with Shutdown; each is released for recovery.

        Safe to call from a signal handler installed by :meth:`handle_signals`
        or from inside a run (a tool). New runs are refused afterwards.
        """
        self._shutting_down = True
        for task in list(self._running):
            task.cancel("outlast: host shutdown")

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

    # -- running -------------------------------------------------------------

    async def run(
        self,
        kind: str,
        input: JSON = None,
        *,
        run_id: str | None = None,
        resume: ResumeState | None = None,
        checkpointer: Checkpointer | None = None,
    ) -> RunResult:
        """Run ``kind`` on ``input`` to its end and return its result.

        A fresh run begins a durable record (``run_id`` defaults to a new
        uuid). A recovered run passes the claim's ``checkpointer`` and
        ``resume`` state: it continues on the SAME record instead.
        Raises the run's error after finalizing; Shutdown when it was released.
        """
        if self._shutting_down:
            if checkpointer is not None:  # a claimed run: hand it back at once
                await uninterrupted(self._finalize(checkpointer, None, Shutdown()))
            raise Shutdown("the executor is shutting down; no new runs start")
        if checkpointer is None and kind not in self._kinds:
            raise ConfigurationError(
                f"no run kind {kind!r} is registered; registered: {', '.join(self.kinds) or 'none'}"
            )
        run_id = checkpointer.run_id if checkpointer is not None else run_id or uuid.uuid4().hex
        cp = (
            checkpointer
            if checkpointer is not None
            else await self._begin_shielded(kind, input, run_id)
        )
        if cp is not None and self.save_interval > 0:
            cp = ThrottledCheckpointer(cp, self.save_interval)
        body = asyncio.create_task(
            self._body(kind, input, resume, cp), name=f"outlast run {run_id}"
        )
        self._running.add(body)
        if self.shutting_down:  # shutdown() came while begin was in flight
            body.cancel("outlast: host shutdown")
        lost: list[LeaseLost] = []
        renewer = asyncio.create_task(self._renew(cp, body, lost)) if cp is not None else None
        error: BaseException | None = None
        output: tuple[JSON, list[Message], tuple[PhaseOutput, ...]] | None = None
        try:
            output = await body
        except asyncio.CancelledError as exc:
            error = self._cancel_reason(exc, body, lost)
        except BaseException as exc:  # noqa: BLE001 - every exit is finalized, then re-raised
            error = exc
        finally:
            self._running.discard(body)
            if renewer is not None:
                renewer.cancel()
        if cp is not None:
            await uninterrupted(self._finalize(cp, output[0] if output else None, error))
        if error is not None:
            raise error
        assert output is not None
        value, transcript, phases = output
        return RunResult(
            run_id=run_id,
            kind=kind,
            output=value,
            transcript=tuple(transcript),
            phases=phases,
            epoch=cp.epoch if cp is not None else 0,
            durable=cp is not None,
            resumed=checkpointer is not None,
            skipped_phases=len(resume.completed_phases) if resume else 0,
        )

    def _cancel_reason(
        self, exc: asyncio.CancelledError, body: asyncio.Task[Any], lost: list[LeaseLost]
    ) -> BaseException:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            body.cancel()
            return exc  # the caller cancelled us: fail the run, re-raise CancelledError
        if lost:
            return lost[0]
        if self._shutting_down:
            return Shutdown("the run was interrupted by host shutdown and released for recovery")
        return exc

    async def _body(
        self,
        kind: str,
        input: JSON,
        resume: ResumeState | None,
        cp: Checkpointer | None,
    ) -> tuple[JSON, list[Message], tuple[PhaseOutput, ...]]:
        definition = await self._build(kind, input)

        async def checkpoint(state: CheckpointState) -> None:
            if cp is not None:
                await uninterrupted(self._observed(EventKind.SAVE, cp, cp.save(state)))

        async def run() -> tuple[JSON, list[Message], tuple[PhaseOutput, ...]]:
            if isinstance(definition, Plan):
                phases, transcript = await run_plan(
                    plan=definition, input=input, resume=resume, checkpoint=checkpoint
                )
                return phases[-1].output, transcript, phases
            transcript = (
                list(resume.history) if resume and resume.history else definition.opening(input)
            )

            async def save(history: Any) -> None:
                await checkpoint(CheckpointState(tuple(history), ()))

            final = await run_loop(
                model=definition.model,
                tools=definition.tools,
                transcript=transcript,
                max_steps=definition.max_steps,
                critic=definition.critic,
                checkpoint=save,
            )
            return final.text, transcript, ()

        if definition.deadline is None:
            return await run()
        try:
            async with asyncio.timeout(definition.deadline):
                return await run()
        except TimeoutError as exc:
            raise DeadlineExceeded(f"the run's deadline of {definition.deadline}s passed") from exc

    async def _build(self, kind: str, input: JSON) -> RunDefinition:
        source = self._kinds.get(kind)
        if source is None:
            raise ConfigurationError(f"no run kind {kind!r} is registered in this worker")
        if isinstance(source, Agent | Plan):
            return source
        built = source(input)
        definition = await built if inspect.isawaitable(built) else built
        if not isinstance(definition, Agent | Plan):
            raise ConfigurationError(
                f"the builder of {kind!r} returned {type(definition).__name__}, "
                "not an Agent or Plan"
            )
        return definition

    async def _begin_shielded(self, kind: str, input: JSON, run_id: str) -> Checkpointer | None:
        """Begin, and if the caller cancels meanwhile, still fail the begun record."""
        begun = asyncio.ensure_future(self._begin(kind, input, run_id))
        try:
            return await asyncio.shield(begun)
        except asyncio.CancelledError as cancelled:
            cp = await uninterrupted(begun)
            if cp is not None:
                await uninterrupted(self._finalize(cp, None, cancelled))
            raise

    async def _begin(self, kind: str, input: JSON, run_id: str) -> Checkpointer | None:
        if self.store is None:
            return None
        start = RunStart(run_id, kind, input, self.namespace, self.owner, self.lease)
        try:
            return await self._observed_begin(start)
        except Exception as exc:
            if self.strict:
                raise
            log.warning(
                "outlast: begin of run %s failed (%s: %s); the run continues WITHOUT durability",
                run_id,
                type(exc).__name__,
                exc,
            )
            return None

    async def _observed_begin(self, start: RunStart) -> Checkpointer:
        assert self.store is not None
        started = time.monotonic()
        try:
            cp = await self.store.begin(start)
        except Exception as exc:
            emit(
                Event(
                    EventKind.BEGIN,
                    start.run_id,
                    start.namespace,
                    0,
                    time.monotonic() - started,
                    str(exc),
                )
            )
            raise
        emit(
            Event(
                EventKind.BEGIN, start.run_id, start.namespace, cp.epoch, time.monotonic() - started
            )
        )
        return cp

    async def _observed(self, kind: EventKind, cp: Checkpointer, op: Awaitable[T]) -> T:
        started = time.monotonic()
        try:
            result = await op
        except LeaseLost as exc:
            emit(
                Event(
                    EventKind.LEASE_LOST,
                    cp.run_id,
                    cp.namespace,
                    cp.epoch,
                    time.monotonic() - started,
                    str(exc),
                )
            )
            raise
        except Exception as exc:
            emit(
                Event(kind, cp.run_id, cp.namespace, cp.epoch, time.monotonic() - started, str(exc))
            )
            raise
        emit(Event(kind, cp.run_id, cp.namespace, cp.epoch, time.monotonic() - started))
        return result

    async def _renew(
        self, cp: Checkpointer, body: asyncio.Task[Any], lost: list[LeaseLost]
    ) -> None:
        while True:
            await asyncio.sleep(self.renew_interval)
            try:
                await cp.renew()
            except LeaseLost as exc:
                log.warning("outlast: run %s lost its lease (%s); stopping it", cp.run_id, exc)
                lost.append(exc)
                body.cancel("outlast: lease lost")
                return
            except Exception as exc:  # noqa: BLE001 - a heartbeat blip must not kill the run
                log.warning("outlast: lease renewal of run %s failed: %s", cp.run_id, exc)

    async def _finalize(self, cp: Checkpointer, output: JSON, error: BaseException | None) -> None:
        if isinstance(error, LeaseLost):
            if isinstance(cp, ThrottledCheckpointer):
                cp.discard()
            log.warning(
                "outlast: run %s was claimed by another worker; leaving its record alone", cp.run_id
            )
            return
        try:
            if error is None:
                await self._observed(EventKind.COMPLETE, cp, cp.complete(output))
            elif is_shutdown(error):
                await self._observed(EventKind.RELEASE, cp, cp.release())
            else:
                await self._observed(EventKind.FAIL, cp, cp.fail(describe(error)))
        except Exception as exc:  # noqa: BLE001 - finalize errors never mask the run's outcome
            log.warning(
                "outlast: finalizing run %s failed (%s: %s)", cp.run_id, type(exc).__name__, exc
            )

    # -- recovery ----------------------------------------------------------

    async def recover(
        self, *, limit: int = 100, progress: RecoveryProgress | None = None
    ) -> RecoveryReport:
        """Claim and continue the interrupted runs of this namespace, one by one.

        Runs of kinds not registered here are left for a worker that knows
        them; corrupt records are skipped (logged); a run recovered more than
        ``max_attempts`` times is failed as a PoisonRun. Stops claiming once
        the executor is shutting down.
        """
        if self.store is None:
            raise ConfigurationError("recover() needs an executor with a store")
        report = RecoveryReport()
        for record in await self.store.interrupted(self.namespace, limit):
            if self._shutting_down:
                break
            outcome = await self._recover_one(record, report)
            if progress is not None:
                progress(record, outcome)
        return report

    async def _recover_one(self, record: RunRecord, report: RecoveryReport) -> str:
        run_id = record.run_id
        if record.kind not in self._kinds:
            report.skipped[run_id] = f"kind {record.kind!r} is not registered in this worker"
            return "skipped"
        assert self.store is not None
        started = time.monotonic()
        try:
            claim = await self.store.claim(
                run_id, owner=self.owner, lease=self.lease, namespace=self.namespace
            )
        except CorruptCheckpoint as exc:
            log.error("outlast: skipping run %s: %s", run_id, exc)
            report.skipped[run_id] = str(exc)
            return "skipped"
        if claim is None:
            report.skipped[run_id] = "another worker claimed it first"
            return "skipped"
        cp = claim.checkpointer
        emit(Event(EventKind.CLAIM, run_id, self.namespace, cp.epoch, time.monotonic() - started))
        recoveries = claim.record.attempts - 1
        if recoveries > self.max_attempts:
            poison = PoisonRun(
                f"run {run_id} was recovered {recoveries} times "
                f"(max_attempts={self.max_attempts}); it is failed instead of retried forever"
            )
            await uninterrupted(self._finalize(cp, None, poison))
            report.errors[run_id] = poison
            return "failed"
        try:
            result = await self.run(
                claim.record.kind, claim.record.input, resume=claim.resume, checkpointer=cp
            )
        except Shutdown as exc:
            report.errors[run_id] = exc
            return "released"
        except Exception as exc:  # noqa: BLE001 - one run's failure must not stop recovery
            report.errors[run_id] = exc
            return "failed"
        report.results.append(result)
        return "recovered"


def describe(error: BaseException) -> str:
    """The text a failed record keeps: the error's type and message."""
    if isinstance(error, asyncio.CancelledError):
        return "cancelled by the caller"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def uninterrupted(operation: Awaitable[T]) -> T:
    """Await ``operation`` to its end even if the awaiting task is cancelled.

    Used for saves and finalization, so a cancelled run still records its
    state. The cancellation is re-raised once the operation is done.
    """
    task = asyncio.ensure_future(operation)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
