"""Passwords never shown (the shared hostile-URL table), and the errors that
say how to write a URL: percent-encoding, and rediss:// to a plain server."""

from __future__ import annotations

import uuid

import pytest
import redis

from outlast.adapter import ConfigurationError, RunStart, StoreUnavailable
from outlast_conformance.hostile_urls import (
    PASSWORDS,
    HostileUrl,
    assert_no_secret,
    exercise,
    hostile_urls,
)
from outlast_redis import open_redis

REFUSED = "redis://127.0.0.1:1/0?socket_connect_timeout=2"
"""Nothing listens on port 1: every connection is refused at once."""

TLS_HINT = "the server may not speak TLS, try redis://"


@pytest.mark.asyncio
@pytest.mark.parametrize("hostile", hostile_urls(REFUSED, bad_value="db=x"), ids=str)
async def test_no_secret_is_shown_when_the_server_is_unreachable(hostile: HostileUrl) -> None:
    assert_no_secret(await exercise(hostile.url), hostile.secret)


@pytest.mark.asyncio
async def test_no_secret_is_shown_when_the_server_refuses_the_password(
    password_server_port: int,
) -> None:
    base = f"redis://127.0.0.1:{password_server_port}/0?socket_connect_timeout=5"
    for hostile in hostile_urls(base):
        assert_no_secret(await exercise(hostile.url), hostile.secret, case=hostile.name)


@pytest.mark.asyncio
async def test_a_password_with_a_hash_works_percent_encoded_and_is_refused_raw(
    password_server_port: int,
) -> None:
    user, password = f"hostile-{uuid.uuid4().hex[:8]}", PASSWORDS["hash"]
    with redis.Redis.from_url(f"redis://:s3cret-pw@127.0.0.1:{password_server_port}") as admin:
        admin.acl_setuser(
            user, enabled=True, passwords=[f"+{password}"], keys="*", channels="*",
            commands=["+@all"],
        )  # fmt: skip
    raw = f"redis://{user}:{password}@127.0.0.1:{password_server_port}/0"
    with pytest.raises(ConfigurationError, match="%23") as caught:
        open_redis(raw)
    assert_no_secret(str(caught.value), password)

    store = open_redis(raw.replace("#", "%23"))
    try:
        checkpointer = await store.begin(RunStart(f"r-{uuid.uuid4().hex}", "test"))
        assert checkpointer.epoch == 1
        assert_no_secret(repr(store), password)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_rediss_to_a_server_without_tls_says_tls_may_be_why(
    scratch_server_port: int,
) -> None:
    store = open_redis(
        f"rediss://:{PASSWORDS['plain']}@127.0.0.1:{scratch_server_port}/0",
        socket_connect_timeout=2,
    )
    try:
        with pytest.raises(StoreUnavailable, match=TLS_HINT) as caught:
            await store.load("any")
    finally:
        await store.close()
    assert_no_secret(str(caught.value), PASSWORDS["plain"])


@pytest.mark.asyncio
async def test_a_plain_url_that_fails_says_nothing_of_tls() -> None:
    store = open_redis(REFUSED)
    try:
        with pytest.raises(StoreUnavailable, match="cannot reach Redis") as caught:
            await store.load("any")
    finally:
        await store.close()
    assert "TLS" not in str(caught.value)


@pytest.mark.asyncio
async def test_rediss_that_answered_once_does_not_blame_tls_later(tls_url: str) -> None:
    store = open_redis(tls_url)
    try:
        with pytest.raises(StoreUnavailable, match=TLS_HINT):
            async with store.connection.translated():
                raise redis.TimeoutError("no answer")  # as a first connection would time out
        await store.load("any")  # the server answers over TLS
        with pytest.raises(StoreUnavailable, match="did not answer in time") as caught:
            async with store.connection.translated():
                raise redis.TimeoutError("no answer")
    finally:
        await store.close()
    assert "TLS" not in str(caught.value)
