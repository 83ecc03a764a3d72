"""Passwords never shown: the shared hostile-URL table, endpoint_url credentials
refused, and a store built with them anyway redacting its repr and errors."""

from __future__ import annotations

import socket

import pytest
from s3_testing import BUCKET, REGION

from outlast.adapter import ConfigurationError, StoreUnavailable
from outlast_conformance.hostile_urls import (
    PASSWORDS,
    HostileUrl,
    assert_no_secret,
    exercise,
    hostile_urls,
)
from outlast_s3 import S3Options, S3Store, parse_url

BASE = f"s3://{BUCKET}/p?endpoint_url=http://127.0.0.1:1&region={REGION}"


@pytest.mark.asyncio
@pytest.mark.parametrize("hostile", hostile_urls(BASE, bad_value="max_workers=many"), ids=str)
async def test_no_secret_is_shown(hostile: HostileUrl) -> None:
    assert_no_secret(await exercise(hostile.url), hostile.secret)


@pytest.mark.parametrize("password", PASSWORDS.values())
def test_credentials_in_endpoint_url_are_refused_without_the_secret(password: str) -> None:
    # botocore never uses them (requests are signed), and its errors would quote them.
    with pytest.raises(ConfigurationError, match="endpoint_url") as caught:
        parse_url(f"s3://{BUCKET}/p", {"endpoint_url": f"http://ak:{password}@127.0.0.1:9000"})
    assert_no_secret(str(caught.value), password)


def test_the_options_repr_hides_a_password_in_endpoint_url() -> None:
    password = PASSWORDS["hash"]
    options = S3Options(bucket=BUCKET, endpoint_url=f"http://ak:{password}@minio:9000")
    assert_no_secret([repr(options), options.where], password)
    assert "http://ak:***@minio:9000" in repr(options)


@pytest.mark.asyncio
async def test_a_store_built_with_endpoint_credentials_redacts_its_errors(
    s3_endpoint: str,
) -> None:
    password = PASSWORDS["plain"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens once the socket closes
    endpoint = f"http://ak:{password}@127.0.0.1:{closed_port}"
    store = S3Store(S3Options(bucket=BUCKET, endpoint_url=endpoint, region=REGION))
    try:
        with pytest.raises(StoreUnavailable, match="cannot reach") as caught:
            await store.load("r")
    finally:
        await store.close()
    assert_no_secret([str(caught.value), repr(store), repr(store.options)], password)
    assert "ak:***@127.0.0.1" in str(caught.value)
