"""Durability (the README's section): the warning, once per store, that a
server persists nothing (given for appendonly no without RDB save points; not
for AOF, RDB snapshots, or a server that will not say), and writes refused
for want of replicas reported as temporary."""

from __future__ import annotations

import logging
import uuid

import pytest
import redis

from outlast.adapter import RunStart, StoreUnavailable
from outlast_redis import open_redis

WARNED = "persists nothing"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and WARNED in r.getMessage()
    ]


async def use(url: str, times: int = 3) -> None:
    """A store's first calls, ``times`` over: begin a run, load it."""
    store = open_redis(url, prefix=f"outlast-test-{uuid.uuid4().hex[:12]}")
    try:
        for _ in range(times):
            checkpointer = await store.begin(RunStart(f"r-{uuid.uuid4().hex}", "test"))
            await store.load(checkpointer.run_id)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_server_without_persistence_is_warned_about_once_per_store(
    scratch_server_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    # redis_testing starts every throwaway server with save "" and appendonly no.
    url = f"redis://127.0.0.1:{scratch_server_port}/0"
    caplog.set_level(logging.DEBUG, logger="outlast.redis")
    await use(url)
    [message] = warnings(caplog)
    assert f"Redis at redis://127.0.0.1:{scratch_server_port} persists nothing" in message
    assert "appendonly yes" in message
    await use(url)  # another store: its own warning
    assert len(warnings(caplog)) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("server", ["aof_server_port", "rdb_server_port", "secretive_server_port"])
async def test_no_warning_for_a_server_that_persists_or_will_not_say(
    server: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    port = request.getfixturevalue(server)
    caplog.set_level(logging.DEBUG, logger="outlast.redis")
    await use(f"redis://127.0.0.1:{port}/0")
    assert warnings(caplog) == []


@pytest.mark.asyncio
async def test_a_user_forbidden_info_is_served_and_not_judged(
    scratch_server_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"no-info-{uuid.uuid4().hex[:8]}"
    with redis.Redis(port=scratch_server_port) as admin:
        admin.acl_setuser(
            user, enabled=True, nopass=True, keys="*", channels="*",
            commands=["+@all", "-info", "-config"],
        )  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="outlast.redis")
    await use(f"redis://{user}@127.0.0.1:{scratch_server_port}/0")
    assert warnings(caplog) == []
    assert any("cannot tell whether" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_cluster_without_persistence_is_warned_about_naming_a_node(
    cluster_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="outlast.redis")
    await use(cluster_url + "?cluster=1")
    [message] = warnings(caplog)
    assert "(node 127.0.0.1:" in message


@pytest.mark.asyncio
async def test_a_server_short_of_replicas_refuses_writes_as_unavailable(
    min_replicas_server_port: int,
) -> None:
    # min-replicas-to-write bounds what a failover can roll back (see "Durability");
    # its refusal is temporary, so it must be StoreUnavailable (saves are retried).
    store = open_redis(f"redis://127.0.0.1:{min_replicas_server_port}/0")
    try:
        with pytest.raises(StoreUnavailable, match=r"NOREPLICAS.*temporary"):
            await store.begin(RunStart(f"r-{uuid.uuid4().hex}", "test"))
    finally:
        await store.close()
