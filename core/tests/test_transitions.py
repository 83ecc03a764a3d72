"""The state machine, written once: outlast.transitions as pure functions."""

from __future__ import annotations

import pytest

from outlast.adapter import (
    LeaseLost,
    RunExists,
    RunFinished,
    RunNotFound,
    RunRecord,
    RunStart,
    RunStatus,
    transitions,
)

START = RunStart("r1", "k", owner="w1", lease=10)


def begun(now: float = 100.0) -> RunRecord:
    return transitions.begin(START, {"x": 1}, now, incarnation="inc-1")


def test_begin_makes_a_running_record_at_epoch_one() -> None:
    record = begun()
    assert (record.status, record.epoch, record.attempts, record.crashes) == (
        RunStatus.RUNNING,
        1,
        1,
        0,
    )
    assert (record.lease, record.lease_expires_at, record.created_at) == (10, 110, 100)
    assert record.incarnation == "inc-1"
    assert (
        transitions.begin(START, None, 0).incarnation
        != transitions.begin(START, None, 0).incarnation
    )
    with pytest.raises(RunExists):
        transitions.begin(START, None, 0, exists=True)


def test_a_claim_after_expiry_is_a_crash_and_after_release_is_not() -> None:
    record = begun()
    assert transitions.claim(record, owner="w2", lease=5, now=109) is None  # live
    crashed = transitions.claim(record, owner="w2", lease=5, now=110)
    assert crashed is not None
    assert (crashed.epoch, crashed.attempts, crashed.crashes, crashed.owner) == (2, 2, 1, "w2")
    assert (crashed.lease, crashed.lease_expires_at) == (5, 115)
    released = transitions.release(crashed, 2, "inc-1", 111)
    again = transitions.claim(released, owner="w3", lease=5, now=111)
    assert again is not None and (again.attempts, again.crashes) == (3, 1)


def test_owned_says_why_a_write_is_refused() -> None:
    record = begun()
    with pytest.raises(LeaseLost, match="deleted"):
        transitions.save(None, 1, "inc-1", 101, "r1")
    with pytest.raises(LeaseLost, match="deleted and begun again"):
        transitions.save(record, 1, "inc-other", 101)
    with pytest.raises(LeaseLost, match="epoch 1 owns it"):
        transitions.save(record, 2, "inc-1", 101)
    done = transitions.complete(record, 1, "inc-1", "ok", 102)
    with pytest.raises(LeaseLost, match="completed"):
        transitions.renew(done, 1, "inc-1", 103)
    assert (done.status, done.result, done.lease_expires_at) == (RunStatus.COMPLETED, "ok", None)


def test_renew_and_release_and_save_move_updated_at() -> None:
    record = begun()
    saved = transitions.save(record, 1, "inc-1", 101)
    renewed = transitions.renew(saved, 1, "inc-1", 105)
    released = transitions.release(renewed, 1, "inc-1", 106)
    assert (saved.updated_at, renewed.updated_at, released.updated_at) == (101, 105, 106)
    assert renewed.lease_expires_at == 115
    assert released.lease_expires_at is None and released.interrupted_since == 106


def test_quarantine_fails_only_an_interrupted_run_and_moves_its_epoch() -> None:
    record = begun()
    assert transitions.quarantine(record, "CorruptCheckpoint: x", 105) is None  # live lease
    failed = transitions.quarantine(record, "CorruptCheckpoint: x", 110)
    assert failed is not None
    assert (failed.status, failed.error, failed.epoch, failed.lease_expires_at) == (
        RunStatus.FAILED,
        "CorruptCheckpoint: x",
        2,
        None,
    )
    assert transitions.quarantine(failed, "again", 120) is None
    stub = transitions.quarantined_stub("r9", "ns", "CorruptCheckpoint: y", 5)
    assert (stub.status, stub.error, stub.kind) == (RunStatus.FAILED, "CorruptCheckpoint: y", "")


def test_interrupted_order_is_oldest_first_by_expiry_or_release() -> None:
    expired = begun(now=0)  # expires at 10
    released = transitions.release(begun(now=1), 1, "inc-1", 5)  # since 5
    later = transitions.begin(RunStart("a", "k", lease=10), None, 2)  # expires at 12
    order = sorted([later, expired, released], key=transitions.interrupted_order)
    assert [r.lease_expires_at or r.updated_at for r in order] == [5, 10, 12]


def test_purgeable_means_terminal_and_older_than() -> None:
    done = transitions.complete(begun(), 1, "inc-1", None, 100)
    assert transitions.purgeable(done, 10, 111)
    assert not transitions.purgeable(done, 10, 110)
    assert not transitions.purgeable(begun(), 0, 10_000)


def test_submit_queues_a_run_whose_first_claim_is_a_start() -> None:
    queued = transitions.submit(START, None, 100)
    assert (queued.epoch, queued.attempts, queued.owner, queued.lease_expires_at) == (
        0,
        0,
        "",
        None,
    )
    assert queued.queued and queued.interrupted_since == 100
    started = transitions.claim(queued, owner="w", lease=5, now=101)
    assert started is not None
    assert (started.epoch, started.attempts, started.crashes, started.queued) == (1, 1, 0, False)


def test_cancel_fails_an_unowned_run_and_flags_an_owned_one() -> None:
    queued = transitions.submit(START, None, 100)
    cancelled = transitions.cancel(queued, 101)
    assert (cancelled.status, cancelled.error, cancelled.epoch) == (
        RunStatus.FAILED,
        transitions.CANCELLED,
        1,
    )
    owned = begun()
    flagged = transitions.cancel(owned, 105)
    assert (flagged.status, flagged.cancel_requested, flagged.epoch) == (RunStatus.RUNNING, True, 1)
    assert transitions.save(flagged, 1, "inc-1", 106).cancel_requested
    with pytest.raises(RunFinished, match="failed"):
        transitions.cancel(cancelled, 107)
    with pytest.raises(RunNotFound):
        transitions.cancel(None, 107, "gone", "ns")
