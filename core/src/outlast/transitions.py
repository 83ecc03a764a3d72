"""The run record's state machine, written once.

Each function takes the stored record (None when there is none) and the
store's clock, and returns the record the write must store, or says why the
write is refused. They are pure: no I/O, no clock of their own. A store applies
one atomically: a document store (memory, jsondir, S3, a third party's) reads
the record, calls the function and writes the result under its lock or
compare-and-swap; PostgreSQL's SQL and Redis' Lua mirror them, and the
conformance suite checks that every store agrees with this module.

::

      begin                       claim (lease released or expired;
        │                          an expired one counts a crash)
        ▼                        ┌──────────────┐
    ┌─────────┐ save / renew     │              │
    │ running │◀─────────────────┘              │
    │  owned  │──── release ───▶ running, lease None ─┘
    └─────────┘──── lease expires ─▶ running, lease past ─┘
      │     │
      │     └─ fail ──────────▶ failed      (quarantine of an interrupted run
      └─ complete ────────────▶ completed     that does not parse: failed too)

A fleet adds two writes: ``submit`` records a run nobody owns yet (running,
epoch 0, no lease: claimable at once, its first claim no crash), and
``cancel`` fails a run nobody owns at once, or marks an owned one
``cancel_requested`` for its owner to fail.

Waiting for outside input adds two more::

    running, owned ── wait ──▶ waiting (no lease; lease_expires_at = when
                                  │      the wait times out, or None)
          ▲                       ├── send ──▶ running, lease None (released)
          └──── claim ────────────┴── timeout passes: claimable as it is

A waiting run holds no process; ``send`` delivers the input once (a second
send finds the run running and is refused); ``cancel`` fails a waiting run at
once, as it does any run nobody owns.

Refusals: a write of a checkpointer raises LeaseLost when the run is gone (or
is another incarnation: deleted and begun again), holds another epoch, or is
no longer running (:func:`owned`); ``claim`` and
``quarantine`` return None when the run is not interrupted; ``begin`` raises
RunExists when the run id exists.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from outlast.errors import LeaseLost, NotWaiting, RunExists, RunFinished, RunNotFound
from outlast.messages import JSON
from outlast.ports import RunRecord, RunStart, RunStatus


def new_incarnation() -> str:
    """A fresh incarnation token (random: two begins of one id never share one)."""
    return uuid.uuid4().hex


def begin(
    start: RunStart,
    input: JSON,
    now: float,
    *,
    exists: bool = False,
    incarnation: str | None = None,
) -> RunRecord:
    """A new run: ``running``, epoch 1, attempts 1, no crash, leased until
    ``now + start.lease``, a new incarnation. ``input`` is the stored copy of
    the input.

    Raises RunExists when a record of that id ``exists``, whatever its
    status, even one too damaged to read.
    """
    if exists:
        raise RunExists(start.run_id, start.namespace)
    return RunRecord(
        run_id=start.run_id,
        namespace=start.namespace,
        kind=start.kind,
        input=input,
        status=RunStatus.RUNNING,
        epoch=1,
        attempts=1,
        crashes=0,
        owner=start.owner,
        lease=start.lease,
        lease_expires_at=now + start.lease,
        created_at=now,
        updated_at=now,
        incarnation=incarnation or new_incarnation(),
    )


def submit(
    start: RunStart,
    input: JSON,
    now: float,
    *,
    exists: bool = False,
    incarnation: str | None = None,
) -> RunRecord:
    """A run handed to the fleet: ``running`` but unowned (epoch 0, attempts 0,
    no owner, no lease), so it is claimable at once. Its first claim makes it
    epoch 1, attempts 1, and counts no crash: a start, not a recovery.

    Raises RunExists when a record of that id ``exists``.
    """
    begun = begin(start, input, now, exists=exists, incarnation=incarnation)
    return replace(begun, epoch=0, attempts=0, owner="", lease_expires_at=None)


CANCELLED = "Cancelled: cancelled by request"
"""The error text of a run failed by a cancel."""


def cancel(
    record: RunRecord | None, now: float, run_id: str = "", namespace: str = ""
) -> RunRecord:
    """A cancel request. A run nobody owns (queued, released, its lease
    expired) is failed at once (epoch+1 fences a late writer); a run a worker
    owns keeps running with ``cancel_requested`` set, and its owner fails it
    when its next save or renewal reports the request.

    Raises RunNotFound when there is no record, RunFinished when the run
    already completed or failed. A waiting run is failed at once.
    """
    if record is None:
        raise RunNotFound(run_id, namespace)
    if record.status.terminal:
        raise RunFinished(record.run_id, record.namespace, record.status.value)
    if record.status is RunStatus.WAITING or is_interrupted(record, now):
        return replace(
            record,
            status=RunStatus.FAILED,
            error=CANCELLED,
            epoch=record.epoch + 1,
            lease_expires_at=None,
            cancel_requested=True,
            updated_at=now,
        )
    return replace(record, cancel_requested=True, updated_at=now)


def is_interrupted(record: RunRecord, now: float) -> bool:
    """Claimable: running with its lease released (None) or expired (at or
    before ``now``), or waiting with a wait that timed out (at or before ``now``)."""
    expires = record.lease_expires_at
    if record.status is RunStatus.WAITING:
        return expires is not None and expires <= now
    return record.status is RunStatus.RUNNING and (expires is None or expires <= now)


def claim(record: RunRecord | None, *, owner: str, lease: float, now: float) -> RunRecord | None:
    """Take over an interrupted run: ``running``, epoch+1, attempts+1, the
    new owner and lease; crashes+1 when the lease expired rather than being
    released. A waiting run whose wait timed out is claimed the same way (no
    crash: nobody died), its ``wait`` kept and ``delivery`` None.

    None when there is no record or it is not interrupted (finished, its
    lease is live, or it still waits): the claim is refused and nothing changes.
    """
    if record is None or not is_interrupted(record, now):
        return None
    crashed = record.status is RunStatus.RUNNING and record.lease_expires_at is not None
    return replace(
        record,
        status=RunStatus.RUNNING,
        epoch=record.epoch + 1,
        attempts=record.attempts + 1,
        crashes=record.crashes + (1 if crashed else 0),
        owner=owner,
        lease=lease,
        lease_expires_at=now + lease,
        updated_at=now,
    )


def owned(record: RunRecord | None, epoch: int, incarnation: str, run_id: str = "") -> RunRecord:
    """``record`` if a checkpointer at (``epoch``, ``incarnation``) may write
    it; else LeaseLost.

    It may while the run exists, is the incarnation the checkpointer began or
    claimed, holds ``epoch`` and is ``running``; the LeaseLost says which of
    those failed. ``run_id`` names the run when the record is gone.
    """
    if record is None:
        raise LeaseLost(run_id, epoch, "the run was deleted")
    same_run = record.incarnation == incarnation
    if not same_run and record.status is RunStatus.RUNNING:
        raise LeaseLost(record.run_id, epoch, "the run was deleted and begun again")
    if same_run and record.epoch != epoch:
        raise LeaseLost(record.run_id, epoch, f"epoch {record.epoch} owns it now")
    if record.status is not RunStatus.RUNNING:  # also a quarantined stub (no incarnation)
        raise LeaseLost(record.run_id, epoch, f"the run is {record.status.value}")
    return record


def save(
    record: RunRecord | None, epoch: int, incarnation: str, now: float, run_id: str = ""
) -> RunRecord:
    """A save (even of nothing new) by the checkpointer at ``epoch``: the
    record only moves ``updated_at``; the store appends the delta beside it."""
    return replace(owned(record, epoch, incarnation, run_id), updated_at=now)


def complete(
    record: RunRecord | None,
    epoch: int,
    incarnation: str,
    result: JSON,
    now: float,
    run_id: str = "",
    usage: JSON = None,
) -> RunRecord:
    """Terminal success: ``completed`` with ``result`` and ``usage``, lease
    dropped. The store clears the run's transcript and phases in the same step."""
    return replace(
        owned(record, epoch, incarnation, run_id),
        status=RunStatus.COMPLETED,
        result=result,
        usage=usage,
        lease_expires_at=None,
        updated_at=now,
    )


def fail(
    record: RunRecord | None,
    epoch: int,
    incarnation: str,
    error: str,
    now: float,
    run_id: str = "",
) -> RunRecord:
    """Terminal failure: ``failed`` with ``error``, lease dropped; the
    transcript and phases stay."""
    return replace(
        owned(record, epoch, incarnation, run_id),
        status=RunStatus.FAILED,
        error=error,
        lease_expires_at=None,
        updated_at=now,
    )


def release(
    record: RunRecord | None, epoch: int, incarnation: str, now: float, run_id: str = ""
) -> RunRecord:
    """Handed back by a shutdown: still ``running``, lease None, so it is
    interrupted at once and its next claim is not a crash."""
    return replace(owned(record, epoch, incarnation, run_id), lease_expires_at=None, updated_at=now)


def renew(
    record: RunRecord | None, epoch: int, incarnation: str, now: float, run_id: str = ""
) -> RunRecord:
    """The heartbeat: leased for its length from ``now`` (after a release
    too: the run is owned again)."""
    current = owned(record, epoch, incarnation, run_id)
    return replace(current, lease_expires_at=now + current.lease, updated_at=now)


def wait(
    record: RunRecord | None,
    epoch: int,
    incarnation: str,
    request: JSON,
    timeout: float | None,
    now: float,
    run_id: str = "",
) -> RunRecord:
    """Park the run for outside input: ``waiting``, ``wait`` = ``request``,
    ``delivery`` cleared, no lease; ``lease_expires_at`` is when the wait
    times out (``now + timeout``), None without a timeout. The epoch stays:
    being no longer ``running`` fences this checkpointer's later writes."""
    return replace(
        owned(record, epoch, incarnation, run_id),
        status=RunStatus.WAITING,
        wait=request,
        delivery=None,
        lease_expires_at=None if timeout is None else now + timeout,
        updated_at=now,
    )


def send(
    record: RunRecord | None,
    delivery: JSON,
    now: float,
    run_id: str = "",
    namespace: str = "",
) -> RunRecord:
    """Deliver outside input to a waiting run: ``running`` with its lease
    released (claimable at once; its claim is no crash), ``delivery`` stored.

    Raises RunNotFound when there is no record, NotWaiting when the run is
    not waiting (it never waited, the input was sent already, or it ended).
    """
    if record is None:
        raise RunNotFound(run_id, namespace)
    if record.status is not RunStatus.WAITING:
        raise NotWaiting(record.run_id, record.namespace, record.status.value)
    return replace(
        record,
        status=RunStatus.RUNNING,
        delivery=delivery,
        lease_expires_at=None,
        updated_at=now,
    )


def quarantine(record: RunRecord | None, reason: str, now: float) -> RunRecord | None:
    """Fail an interrupted run whose stored progress does not parse.

    ``failed`` with ``reason`` as its error, epoch+1 (so a writer still
    holding the old epoch is fenced), lease dropped; nothing else changes,
    so what is stored stays for forensics. None when the run is not
    interrupted: a live owner keeps it, a finished run stays as it is.
    """
    if record is None or not is_interrupted(record, now):
        return None
    return replace(
        record,
        status=RunStatus.FAILED,
        error=reason,
        epoch=record.epoch + 1,
        lease_expires_at=None,
        updated_at=now,
    )


def quarantined_stub(run_id: str, namespace: str, reason: str, now: float) -> RunRecord:
    """The failed record a store writes in place of one too damaged to read.

    Nothing of the old record is known, so the stub says so: kind and owner
    empty, input None, epoch 0 (no checkpointer holds it; being ``failed``
    fences every writer anyway). The store keeps the damaged bytes beside it.
    """
    return RunRecord(
        run_id=run_id,
        namespace=namespace,
        kind="",
        input=None,
        status=RunStatus.FAILED,
        epoch=0,
        attempts=0,
        crashes=0,
        owner="",
        lease=0.0,
        lease_expires_at=None,
        created_at=now,
        updated_at=now,
        error=reason,
    )


def interrupted_order(record: RunRecord) -> tuple[float, str]:
    """The sort key of ``interrupted``: oldest first by when the run became
    claimable (a lease's expiry, a release's time), ties by run id."""
    since = record.interrupted_since
    return (since if since is not None else float("inf"), record.run_id)


def purgeable(record: RunRecord, older_than: float, now: float) -> bool:
    """Whether retention removes ``record``: terminal, and last updated more
    than ``older_than`` seconds before ``now``. Running and waiting runs never are."""
    return record.status.terminal and record.updated_at < now - older_than
