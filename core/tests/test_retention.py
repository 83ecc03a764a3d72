"""Retention: the `retention` store option and `purge`."""

from __future__ import annotations

from pathlib import Path

import pytest

import outlast
from outlast import ConfigurationError, RunStart, RunStatus
from outlast.retention import RetainingStore, parse_duration, take_retention

pytestmark = pytest.mark.asyncio


async def seed(store: outlast.CheckpointerFactory) -> None:
    done = await store.begin(RunStart("done", "k", None, owner="w", lease=30))
    await done.complete(1)
    failed = await store.begin(RunStart("failed", "k", None, owner="w", lease=30))
    await failed.fail("boom")
    await store.begin(RunStart("running", "k", None, owner="w", lease=30))


async def ids(store: outlast.CheckpointerFactory) -> list[str]:
    return [r.run_id for r in (await store.list()).records]


async def test_the_retention_option_purges_old_terminal_runs_on_recovery(tmp_path: Path) -> None:
    store = outlast.open(f"sqlite:///{tmp_path}/r.db?retention=0s")
    assert isinstance(store, RetainingStore)
    await seed(store)
    assert await store.interrupted() == []  # the running run's lease is live
    assert await ids(store) == ["running"]  # completed and failed are gone, running kept
    await store.close()


async def test_retention_as_a_keyword_option_and_its_rate_limit() -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    inner = outlast.open("memory://")
    store = RetainingStore(inner, 0.0, clock=clock)
    await store.interrupted()
    await seed(store)
    await store.interrupted()  # within the minimum interval: no purge yet
    assert await ids(store) == ["done", "failed", "running"]
    clock.now += 61
    await store.interrupted()
    assert await ids(store) == ["running"]
    stored = await store.load("running")
    assert stored is not None and stored.record.status is RunStatus.RUNNING


async def test_young_terminal_runs_are_kept() -> None:
    store = outlast.open("memory://", retention="7d")
    await seed(store)
    await store.interrupted()
    assert await ids(store) == ["done", "failed", "running"]


async def test_take_retention_leaves_the_other_options() -> None:
    url, seconds = take_retention("sqlite:///x.db?busy_timeout=3&retention=2h", {})
    assert url == "sqlite:///x.db?busy_timeout=3"
    assert seconds == 7200


@pytest.mark.parametrize("bad", ["soon", "-5", "7w"])
async def test_a_bad_retention_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="duration"):
        outlast.open(f"memory://?retention={bad}")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("15m", 900), ("2h", 7200), ("7d", 604800)]
)
async def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
