"""Throttling and 5xx are retried; missing bucket, denied access, an unreachable
endpoint and missing credentials become clear outlast errors."""

from __future__ import annotations

import socket
import uuid

import pytest
from s3_testing import BUCKET, REGION, Fault, FaultProxy, s3_store

import outlast
from outlast.adapter import (
    CheckpointState,
    ConfigurationError,
    Message,
    RunStart,
    StoreUnavailable,
)


def _start() -> RunStart:
    return RunStart(run_id=f"run-{uuid.uuid4().hex[:8]}", kind="k", owner="w")


@pytest.mark.asyncio
async def test_throttled_segment_write_is_retried_and_lands(
    proxied_url: str, fault_proxy: FaultProxy
) -> None:
    store = s3_store(outlast.open(proxied_url))
    try:
        checkpointer = await store.begin(_start())
        slow_down = fault_proxy.inject(Fault("PUT", "/seg/", 503, "SlowDown", times=2))
        before = store.requests
        await checkpointer.save(CheckpointState((Message.user("hello"),)))
        loaded = await store.load(checkpointer.run_id)
    finally:
        await store.close()
    assert loaded is not None
    assert loaded.state.history == (Message.user("hello"),)
    assert slow_down.hits == 3  # two throttled attempts, then the one that landed
    # botocore retried below the adapter: the save stayed one request (the load
    # is three: the state object, the segment listing, the one segment).
    assert store.requests - before == 1 + 3


@pytest.mark.asyncio
async def test_server_errors_are_retried_for_state_writes(
    proxied_url: str, fault_proxy: FaultProxy
) -> None:
    store = outlast.open(proxied_url)
    try:
        checkpointer = await store.begin(_start())
        broken = fault_proxy.inject(Fault("PUT", "/state.json", 500, "InternalError", times=2))
        await checkpointer.renew()
    finally:
        await store.close()
    assert broken.hits == 3


@pytest.mark.asyncio
async def test_a_write_that_landed_but_whose_reply_was_lost_is_not_a_conflict(
    proxied_url: str, fault_proxy: FaultProxy
) -> None:
    # The segment PUT reaches S3, the reply is a 500, botocore retries, and the
    # retry's If-None-Match fails on our own object: still a successful save.
    store = outlast.open(proxied_url)
    try:
        checkpointer = await store.begin(_start())
        lost = fault_proxy.inject(
            Fault("PUT", "/seg/", 500, "InternalError", times=1, forward=True)
        )
        await checkpointer.save(CheckpointState((Message.user("once"),)))
        await checkpointer.save(CheckpointState((Message.user("once"), Message.user("twice"))))
        loaded = await store.load(checkpointer.run_id)
    finally:
        await store.close()
    assert lost.injected == 1
    assert loaded is not None
    assert [m.text for m in loaded.state.history] == ["once", "twice"]


@pytest.mark.asyncio
async def test_lasting_throttling_is_store_unavailable(
    proxied_url: str, fault_proxy: FaultProxy
) -> None:
    store = outlast.open(proxied_url)
    fault_proxy.inject(Fault("PUT", "/", 503, "SlowDown", times=100))
    try:
        with pytest.raises(StoreUnavailable, match="SlowDown") as caught:
            await store.begin(_start())
    finally:
        await store.close()
    assert BUCKET in str(caught.value)
    assert "try again later" in str(caught.value)


@pytest.mark.asyncio
async def test_access_denied_names_the_bucket_and_the_permissions(
    proxied_url: str, fault_proxy: FaultProxy
) -> None:
    store = outlast.open(proxied_url)
    fault_proxy.inject(Fault("GET", "/", 403, "AccessDenied", times=100))
    try:
        with pytest.raises(StoreUnavailable, match="access denied") as caught:
            await store.load("some-run")
    finally:
        await store.close()
    message = str(caught.value)
    assert repr(BUCKET) in message
    assert "s3:GetObject" in message
    assert "s3:ListBucket" in message


@pytest.mark.asyncio
async def test_missing_bucket_says_to_create_it(s3_endpoint: str) -> None:
    store = outlast.open(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/p", endpoint_url=s3_endpoint)
    try:
        with pytest.raises(StoreUnavailable, match=r"does not exist.*create the bucket"):
            await store.begin(_start())
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_unreachable_endpoint_is_store_unavailable(s3_endpoint: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens once the socket closes
    store = outlast.open(
        f"s3://{BUCKET}/p", endpoint_url=f"http://127.0.0.1:{closed_port}", region=REGION
    )
    try:
        with pytest.raises(StoreUnavailable, match=r"cannot reach.*check endpoint_url"):
            await store.list()
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_missing_credentials_is_a_configuration_error(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", f"{tmp_path}/none")
    monkeypatch.setenv("AWS_CONFIG_FILE", f"{tmp_path}/none")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = outlast.open(f"s3://{BUCKET}/p", endpoint_url=s3_endpoint, region=REGION)
    try:
        with pytest.raises(ConfigurationError, match="no AWS credentials"):
            await store.load("r")
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_store_ignoring_conditional_writes_is_refused_before_any_write(
    proxied_url: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.ignore_conditions = True
    store = outlast.open(proxied_url)
    try:
        with pytest.raises(ConfigurationError, match="ignored If-None-Match"):
            await store.begin(_start())
        listing = await store.list()
    finally:
        await store.close()
    assert listing.records == ()
