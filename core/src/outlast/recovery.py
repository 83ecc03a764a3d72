"""Recovery: claim the runs a crash or a shutdown left behind and continue them.

For each run of the namespace's work list (``interrupted``):

* a kind this worker has not registered is skipped, for a worker that has;
* a run another worker claims first is skipped;
* a run whose record or progress does not parse is quarantined: failed with
  ``CorruptCheckpoint: ...``, keeping what is stored (the store quarantines
  an unreadable record as it lists the work; a transcript that does not
  parse is found by the claim and quarantined here);
* a run that crashed its workers more than ``max_crashes`` times is failed as
  a PoisonRun without running it (a release by a shutdown is no crash);
* anything else continues on the same record, at the claim's new epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from outlast.attempt import TRANSIENT, describe, finish
from outlast.errors import (
    CorruptCheckpoint,
    LeaseLost,
    PoisonRun,
    Shutdown,
    StoreError,
    UnknownFormat,
)
from outlast.events import Event, EventKind
from outlast.plugins import emit
from outlast.ports import CheckpointerFactory, RunRecord
from outlast.runs import RunResult

if TYPE_CHECKING:
    from outlast.executor import Executor

log = logging.getLogger("outlast.executor")


@dataclass(slots=True)
class RecoveryReport:
    """What :meth:`Executor.recover` did with each interrupted run it found.

    ``results``: runs recovered to completion. ``errors``: runs that failed
    (their own error, or PoisonRun). ``released``: runs a shutdown handed back
    mid-recovery (recoverable at once). ``left``: runs that stopped because
    the store became unreachable or another worker took them over.
    ``skipped``: runs not for this worker, with why. ``quarantined``: runs
    failed because what is stored for them does not parse.
    """

    results: list[RunResult] = field(default_factory=list)
    errors: dict[str, BaseException] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    left: dict[str, BaseException] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    quarantined: dict[str, str] = field(default_factory=dict)


_LEFT_RUNNING: tuple[type[BaseException], ...] = (LeaseLost, StoreError, *TRANSIENT)
"""How a recovered run ends when it stopped and stays for recovery: another
worker took it over, or the store became unreachable."""

RecoveryProgress = Callable[[RunRecord, str], None]
"""Called by recover() with each candidate and what happened to it:
"recovered", "failed", "released", "left", "skipped" or "quarantined"."""


async def recover(
    executor: Executor,
    store: CheckpointerFactory,
    *,
    limit: int,
    progress: RecoveryProgress | None,
) -> RecoveryReport:
    """Claim and continue the interrupted runs of ``executor``'s namespace, one by one."""
    report = RecoveryReport()
    for record in await store.interrupted(executor.namespace, limit):
        if executor.shutting_down:
            break
        outcome = await _recover_one(executor, store, record, report)
        if progress is not None:
            progress(record, outcome)
    return report


async def _recover_one(
    executor: Executor, store: CheckpointerFactory, record: RunRecord, report: RecoveryReport
) -> str:
    run_id = record.run_id
    if record.kind not in executor.registry:
        report.skipped[run_id] = f"kind {record.kind!r} is not registered in this worker"
        return "skipped"
    started = time.monotonic()
    try:
        claim = await store.claim(
            run_id, owner=executor.owner, lease=executor.lease, namespace=executor.namespace
        )
    except UnknownFormat as exc:
        report.skipped[run_id] = f"written by a newer outlast: {exc.detail}"
        return "skipped"
    except CorruptCheckpoint as exc:
        reason = describe(exc)
        if await store.quarantine(run_id, reason, executor.namespace):
            log.error("outlast: quarantined run %s: %s", run_id, reason)
            report.quarantined[run_id] = reason
            return "quarantined"
        report.skipped[run_id] = f"corrupt, and no longer interrupted: {exc.detail}"
        return "skipped"
    if claim is None:
        report.skipped[run_id] = "another worker claimed it first"
        return "skipped"
    cp = claim.checkpointer
    emit(Event(EventKind.CLAIM, run_id, executor.namespace, cp.epoch, time.monotonic() - started))
    if claim.record.crashes > executor.max_crashes:
        poison = PoisonRun(
            f"run {run_id} crashed its workers {claim.record.crashes} times "
            f"(max_crashes={executor.max_crashes}); it is failed instead of retried forever"
        )
        await finish(cp, None, False, poison, None)
        report.errors[run_id] = poison
        return "failed"
    try:
        result = await executor.run(
            claim.record.kind, claim.record.input, resume=claim.resume, checkpointer=cp
        )
    except Shutdown:
        report.released.append(run_id)
        return "released"
    except _LEFT_RUNNING as exc:
        report.left[run_id] = exc
        return "left"
    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop recovery
        report.errors[run_id] = exc
        return "failed"
    report.results.append(result)
    return "recovered"
