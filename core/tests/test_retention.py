"""Retention: the `retention` store option and `purge`."""

from __future__ import annotations

from pathlib import Path

import pytest

import outlast
from outlast import ConfigurationError, RunStatus, Store
from outlast.adapter import RunStart
from outlast.retention import RetentionSchedule, parse_duration, take_retention

pytestmark = pytest.mark.asyncio


async def seed(store: Store) -> None:
    done = await store.begin(RunStart("done", "k", None, owner="w", lease=30))
    await done.complete(1)
    failed = await store.begin(RunStart("failed", "k", None, owner="w", lease=30))
    await failed.fail("boom")
    await store.begin(RunStart("running", "k", None, owner="w", lease=30))


async def ids(store: Store) -> list[str]:
    return [r.run_id for r in (await store.list()).records]


async def test_the_retention_option_purges_old_terminal_runs_on_recovery(tmp_path: Path) -> None:
    store = outlast.open(f"sqlite:///{tmp_path}/r.db?retention=0s")
    assert store.retention == 0
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
    store = Store(inner.backend, retention=RetentionSchedule(0.0, clock=clock))
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


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (
            "postgresql://u@h/db?options=-c%20search_path%3Dx&retention=7d&sslmode=require",
            "postgresql://u@h/db?options=-c%20search_path%3Dx&sslmode=require",
        ),
        ("redis://h/0?retention=1h", "redis://h/0"),
        ("s3://b/p?a=1+2&retention=90&b=%2B#frag", "s3://b/p?a=1+2&b=%2B#frag"),
        ("sqlite:///x.db?retention=1d&retention=2d", "sqlite:///x.db"),
        ("memory://?weird=%E2%9C%93&=empty&flag", "memory://?weird=%E2%9C%93&=empty&flag"),
    ],
)
async def test_take_retention_keeps_every_other_option_byte_for_byte(url: str, kept: str) -> None:
    """Only retention pairs are cut out; %20 stays %20 (libpq reads + literally)."""
    assert take_retention(url, {})[0] == kept


async def test_the_backend_never_sees_retention() -> None:
    seen: list[tuple[str, dict[str, object]]] = []

    class Spy:
        @outlast.hookimpl(tryfirst=True)
        def outlast_open(self, url: str, options: dict[str, object]) -> None:
            seen.append((url, dict(options)))

    from outlast.plugins import plugin_manager

    spy = Spy()
    plugin_manager().register(spy)
    try:
        outlast.open("memory://?retention=1h", retention="2h")
    finally:
        plugin_manager().unregister(spy)
    assert seen == [("memory://", {})]


@pytest.mark.parametrize("bad", ["soon", "-5", "7w"])
async def test_a_bad_retention_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="duration"):
        outlast.open(f"memory://?retention={bad}")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("15m", 900), ("2h", 7200), ("7d", 604800)]
)
async def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


async def test_a_workers_claims_apply_retention_too() -> None:
    """A fleet's workers only call claim_next: retention purges there as well."""
    store = outlast.open("memory://", retention="0s")
    await seed(store)
    assert await store.claim_next(["k"], owner="w", lease=30) is None  # "running" is live
    assert await ids(store) == ["running"]
