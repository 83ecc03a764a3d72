"""A run id is an idempotency key: what running an id that exists means.

``Executor.run(kind, input, run_id=X)`` never runs the agent again for an X
that exists:

===========================  ===============================================
X is                         the call
===========================  ===============================================
a run of another kind        raises RunExists naming both kinds
completed                    returns its stored result (``RunResult.ran`` is
                             False: nothing ran)
failed                       raises RunFailed carrying the stored error
running (owned or            raises RunExists naming its status
interrupted)
unreadable                   raises RunExists saying its record is corrupt
===========================  ===============================================
"""

from __future__ import annotations

import time

from outlast.errors import CorruptCheckpoint, RunExists, RunFailed
from outlast.ports import CheckpointerFactory, RunRecord, RunStart, RunStatus
from outlast.runs import RunResult
from outlast.submission import usage_of


async def existing_run(store: CheckpointerFactory, start: RunStart) -> RunResult | None:
    """The outcome of running ``start`` whose run id exists; None when it no
    longer does (deleted meanwhile: begin again)."""
    try:
        stored = await store.load(start.run_id, start.namespace)
    except CorruptCheckpoint as exc:
        raise RunExists(
            start.run_id, start.namespace, f"its stored record does not parse ({exc.detail})"
        ) from exc
    if stored is None:
        return None
    record = stored.record
    if record.kind != start.kind:
        raise RunExists(
            start.run_id,
            start.namespace,
            f"it is a run of kind {record.kind!r}, not {start.kind!r}; use another run id",
        )
    if record.status is RunStatus.COMPLETED:
        return RunResult(
            run_id=record.run_id,
            kind=record.kind,
            output=record.result,
            transcript=(),
            epoch=record.epoch,
            durable=True,
            ran=False,
            usage=usage_of(record),
        )
    if record.status is RunStatus.FAILED:
        raise RunFailed(record.run_id, record.error or "(no error text)")
    raise RunExists(start.run_id, start.namespace, status_of(record))


def status_of(record: RunRecord, now: float | None = None) -> str:
    """How a running run stands, in words, for errors and the CLI."""
    now = time.time() if now is None else now
    if record.status is RunStatus.WAITING:
        asked = record.wait.get("request") if isinstance(record.wait, dict) else record.wait
        return (
            f"it is waiting for input ({asked!r:.120}): deliver it with Executor.send or "
            f"`outlast runs send {record.run_id} JSON`"
        )
    if record.queued:
        return "it is queued: submitted, waiting for a worker (Executor.result waits for it)"
    if record.lease_expires_at is None:
        return (
            f"it is running but released (interrupted, epoch {record.epoch}): "
            "a worker's recover() continues it"
        )
    if record.lease_expires_at <= now:
        return (
            f"it is running but its owner {record.owner!r} stopped renewing its lease "
            f"(interrupted, epoch {record.epoch}): a worker's recover() continues it"
        )
    return (
        f"it is running, owned by {record.owner!r} (epoch {record.epoch}, lease for "
        f"{record.lease_expires_at - now:.0f}s more)"
    )
