"""The throttling wrapper: min interval, latest state only, flush before the end."""

from __future__ import annotations

import pytest

from outlast import Message, RunStatus, ThrottledCheckpointer
from outlast.adapter import CheckpointerFactory, CheckpointState, RunStart

pytestmark = pytest.mark.asyncio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(n: int) -> CheckpointState:
    return CheckpointState(tuple(Message.user(f"m{i}") for i in range(n)))


async def throttled(store: CheckpointerFactory, clock: Clock) -> ThrottledCheckpointer:
    cp = await store.begin(RunStart("r1", "k", None, owner="w", lease=30))
    return ThrottledCheckpointer(cp, 60.0, clock=clock)


async def test_saves_within_the_interval_are_coalesced(store: CheckpointerFactory) -> None:
    clock = Clock()
    cp = await throttled(store, clock)
    for n in range(1, 6):
        await cp.save(state(n))
    stored = await store.load("r1")
    assert stored is not None and len(stored.state.history) == 1  # only the first was written
    assert cp.writes == 1
    clock.now += 61
    await cp.save(state(7))
    stored = await store.load("r1")
    assert stored is not None and len(stored.state.history) == 7  # latest state, whole delta
    assert cp.writes == 2
    cp.discard()


async def test_release_flushes_the_latest_state_first(store: CheckpointerFactory) -> None:
    cp = await throttled(store, Clock())
    await cp.save(state(1))
    await cp.save(state(4))
    await cp.release()
    stored = await store.load("r1")
    assert stored is not None and len(stored.state.history) == 4
    assert stored.record.lease_expires_at is None


async def test_fail_flushes_the_latest_state_first(store: CheckpointerFactory) -> None:
    cp = await throttled(store, Clock())
    await cp.save(state(1))
    await cp.save(state(3))
    await cp.fail("boom")
    stored = await store.load("r1")
    assert stored is not None and stored.record.status is RunStatus.FAILED
    assert len(stored.state.history) == 3


async def test_complete_flushes_then_completes(store: CheckpointerFactory) -> None:
    cp = await throttled(store, Clock())
    await cp.save(state(1))
    await cp.save(state(2))
    await cp.complete({"answer": 42})
    assert cp.writes == 2
    stored = await store.load("r1")
    assert stored is not None and stored.record.result == {"answer": 42}


async def test_the_timer_writes_the_pending_state_once_the_interval_passed(
    store: CheckpointerFactory,
) -> None:
    cp = await store.begin(RunStart("r1", "k", None, owner="w", lease=30))
    wrapper = ThrottledCheckpointer(cp, 0.01)
    await wrapper.save(state(1))
    await wrapper.save(state(2))
    assert wrapper._timer is not None
    await wrapper._timer
    stored = await store.load("r1")
    assert stored is not None and len(stored.state.history) == 2


async def test_negative_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        ThrottledCheckpointer(object(), -1)  # type: ignore[arg-type]
