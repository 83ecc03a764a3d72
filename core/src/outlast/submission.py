"""Handing runs to a fleet and hearing back: submit, wait for a result, cancel.

These never run anything themselves; workers (:mod:`outlast.worker`) do.

* ``submit`` records a run nobody owns yet (queued: running, epoch 0, no
  lease). The run id is an idempotency key: the same id with the same kind
  is the same run; with another kind it is RunExists. The submitter need not
  register the kind: workers do.
* ``result`` waits until the run is terminal: a completed run's stored
  result, a failed run's RunFailed, a timeout's ResultTimeout. Stores that
  notify (PostgreSQL, Redis) wake the wait at once; others are polled, more
  rarely the longer the wait.
* ``cancel`` fails a run nobody owns at once, or asks its owner to (it does
  at its next save or lease renewal).
* ``send`` delivers outside input to a run waiting for it (see
  :mod:`outlast.waiting`), once.
"""

from __future__ import annotations

import asyncio
import time

from outlast import codec, ids
from outlast.errors import ResultTimeout, RunExists, RunFailed, RunNotFound
from outlast.messages import JSON
from outlast.ports import (
    ChangeNotifier,
    CheckpointerFactory,
    RunRecord,
    RunStart,
    RunStatus,
)
from outlast.runs import RunResult

FIRST_POLL = 0.02
LAST_POLL = 1.0
"""Seconds between looks at a run that is not finished: doubling."""


async def submit(store: CheckpointerFactory, start: RunStart) -> str:
    """Record ``start`` as a queued run; its run id (idempotent, see above)."""
    try:
        await store.submit(start)
    except RunExists:
        stored = await store.load(start.run_id, start.namespace)
        if stored is None:  # deleted meanwhile: submit again, once
            await store.submit(start)
        elif stored.record.kind != start.kind:
            raise RunExists(
                start.run_id,
                start.namespace,
                f"it is a run of kind {stored.record.kind!r}, not {start.kind!r}; "
                "use another run id",
            ) from None
    return start.run_id


async def result(
    store: CheckpointerFactory, run_id: str, namespace: str, timeout: float | None
) -> RunResult:
    """Wait until the run is terminal; its result, or RunFailed (see above)."""
    ids.check_run_id(run_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = FIRST_POLL
    while True:
        stored = await store.load(run_id, namespace)
        if stored is None:
            raise RunNotFound(run_id, namespace)
        record = stored.record
        if record.status.terminal:
            return finished(record)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise ResultTimeout(
                f"run {run_id!r} is still {record.status.value} after {timeout:g}s (epoch "
                f"{record.epoch}, owner {record.owner or 'none: queued or interrupted'}); "
                "it goes on"
            )
        wait = pause if left is None else min(pause, left)
        if isinstance(store, ChangeNotifier):
            await store.wait_for_change(namespace, wait)
        else:
            await asyncio.sleep(wait)
        pause = min(pause * 2, LAST_POLL)


def finished(record: RunRecord) -> RunResult:
    """The RunResult of a terminal record (RunFailed for a failed one)."""
    if record.status is RunStatus.FAILED:
        raise RunFailed(record.run_id, record.error or "(no error text)")
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


def usage_of(record: RunRecord) -> dict[str, int]:
    """A completed record's stored usage (empty when it has none)."""
    stored = record.usage
    if not isinstance(stored, dict):
        return {}
    return {k: v for k, v in stored.items() if isinstance(v, int) and not isinstance(v, bool)}


async def send(store: CheckpointerFactory, run_id: str, namespace: str, payload: JSON) -> RunRecord:
    """Deliver ``payload`` to the waiting run ``run_id`` (stored as the
    record's ``delivery``, ``{"payload": payload}``); the record after it."""
    codec.dumps(payload)  # not JSON: ValueError before the store is asked
    return await store.send(run_id, {"payload": payload}, namespace)


def start_of(kind: str, input: JSON, run_id: str, namespace: str, lease: float) -> RunStart:
    """The RunStart of a submission (no owner: nobody runs it yet)."""
    return RunStart(run_id, kind, input, namespace, "", lease)
