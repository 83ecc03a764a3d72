"""One-shot recovery: claim what is claimable now and run it, one run at a time.

The same machinery as a worker (:mod:`outlast.worker`), run once: the store's
``claim_next`` hands out the oldest claimable run of a kind this executor has
registered (queued, released, or its lease expired), and
:func:`outlast.claimed.continue_claimed` applies the poison limit and a
pending cancel before continuing it on the same record. A run whose record
or progress does not parse is quarantined by the store (failed with
``CorruptCheckpoint: ...``, what is stored kept for forensics). Recovery
stops claiming once the executor is shutting down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from outlast.claimed import Outcome, continue_claimed
from outlast.ports import CheckpointerFactory, RunRecord
from outlast.runs import RunResult

if TYPE_CHECKING:
    from outlast.executor import Executor


@dataclass(slots=True)
class RecoveryReport:
    """What :meth:`Executor.recover` did.

    ``results``: runs recovered to completion. ``errors``: runs that failed
    (their own error, PoisonRun, Cancelled). ``released``: runs a shutdown
    handed back mid-recovery (recoverable at once). ``left``: runs that
    stopped because the store became unreachable or another worker took them
    over (still running). ``skipped``: claimable runs left for a worker that
    registers their kind, with why. ``waiting``: runs that now wait for
    outside input (a tool asked for it; ``Executor.send`` continues them).
    """

    results: list[RunResult] = field(default_factory=list)
    errors: dict[str, BaseException] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    left: dict[str, BaseException] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)


RecoveryProgress = Callable[[RunRecord, str], None]
"""Called by recover() with each claimed run's record and how it ended:
"recovered", "failed", "released" or "left"."""


async def recover(
    executor: Executor,
    store: CheckpointerFactory,
    *,
    limit: int,
    progress: RecoveryProgress | None,
) -> RecoveryReport:
    """Claim and continue up to ``limit`` claimable runs of ``executor``'s namespace."""
    report = RecoveryReport()
    for _ in range(limit):
        if executor.shutting_down:
            break
        started = time.monotonic()
        claim = await store.claim_next(
            executor.kinds, owner=executor.owner, lease=executor.lease, namespace=executor.namespace
        )
        if claim is None:
            break
        run_id = claim.record.run_id
        ended = await continue_claimed(executor, claim, started)
        if ended.outcome is Outcome.COMPLETED:
            assert ended.result is not None
            report.results.append(ended.result)
        elif ended.outcome is Outcome.RELEASED:
            report.released.append(run_id)
        elif ended.outcome is Outcome.WAITING:
            report.waiting.append(run_id)
        elif ended.outcome is Outcome.LEFT:
            assert ended.error is not None
            report.left[run_id] = ended.error
        else:
            assert ended.error is not None
            report.errors[run_id] = ended.error
        if progress is not None:
            done = ended.outcome is Outcome.COMPLETED
            progress(claim.record, "recovered" if done else ended.outcome.value)
    for record in await store.interrupted(executor.namespace, limit):
        if record.kind not in executor.registry:
            report.skipped[record.run_id] = f"kind {record.kind!r} is not registered here"
    return report
