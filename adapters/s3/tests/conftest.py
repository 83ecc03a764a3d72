"""S3 test fixtures: moto as a real HTTP server on loopback, boto3 over the wire.

``OUTLAST_TEST_S3_ENDPOINT`` points the tests at an S3-compatible endpoint you
run yourself (its credentials from the usual AWS environment); otherwise a moto
server is started for the session with fake credentials. Nothing here ever
uses real AWS credentials.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from s3_testing import (
    BUCKET,
    ENDPOINT_ENV,
    FAKE_CREDENTIALS,
    REGION,
    FaultProxy,
    MotoServer,
    create_bucket,
)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL every test talks to, with the bucket created."""
    with pytest.MonkeyPatch.context() as patch:
        external = os.environ.get(ENDPOINT_ENV)
        if external:
            if not os.environ.get("AWS_ACCESS_KEY_ID"):
                for name, value in FAKE_CREDENTIALS.items():
                    patch.setenv(name, value)
            create_bucket(external)
            yield external
            return
        for name, value in FAKE_CREDENTIALS.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        with MotoServer() as server:
            create_bucket(server.endpoint)
            yield server.endpoint


@pytest.fixture
def s3_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_url(s3_endpoint: str, s3_prefix: str) -> str:
    return f"s3://{BUCKET}/{s3_prefix}?endpoint_url={s3_endpoint}&region={REGION}"


@pytest.fixture
def fault_proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(s3_endpoint) as proxy:
        yield proxy


@pytest.fixture
def proxied_url(fault_proxy: FaultProxy, s3_prefix: str) -> str:
    return f"s3://{BUCKET}/{s3_prefix}?endpoint_url={fault_proxy.endpoint}&region={REGION}"
