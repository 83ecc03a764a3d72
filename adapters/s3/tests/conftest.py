"""S3 test fixtures: moto as a real HTTP server on loopback, boto3 over the wire.

``OUTLAST_TEST_S3_ENDPOINT`` points the tests at an S3-compatible endpoint you
run yourself (its credentials from the usual AWS environment); otherwise a moto
server is started for the session with fake credentials. Nothing here ever
uses real AWS credentials.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from outlast_conformance.services import unavailable

ENDPOINT_ENV = "OUTLAST_TEST_S3_ENDPOINT"
BUCKET = "outlast-test"
REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _serialised(app: WSGIApp) -> WSGIApp:
    """Handle one request at a time.

    moto checks If-Match / If-None-Match and then writes in two steps, so two
    racing conditional PUTs could both pass in a threaded server; real S3 makes
    each conditional write atomic. One request at a time restores that.
    """
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            return list(app(environ, start_response))

    return serve


class MotoServer:
    """moto's S3 over HTTP on a free loopback port (like moto's ThreadedMotoServer,
    with conditional writes made atomic)."""

    def __init__(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, _serialised(app), threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> MotoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL every test talks to, with the bucket created."""
    with pytest.MonkeyPatch.context() as patch:
        external = os.environ.get(ENDPOINT_ENV)
        if external:
            if not os.environ.get("AWS_ACCESS_KEY_ID"):
                for name, value in FAKE_CREDENTIALS.items():
                    patch.setenv(name, value)
            _create_bucket(external)
            yield external
            return
        for name, value in FAKE_CREDENTIALS.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        with MotoServer() as server:
            _create_bucket(server.endpoint)
            yield server.endpoint


def admin_client(endpoint: str) -> Any:
    """A plain boto3 client for test setup and inspection (no retries)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def _create_bucket(endpoint: str) -> None:
    client = admin_client(endpoint)
    try:
        client.create_bucket(Bucket=BUCKET)
    except botocore.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    except botocore.exceptions.BotoCoreError as exc:
        unavailable(f"S3 endpoint {endpoint} ({ENDPOINT_ENV}) cannot be reached: {exc}")
    finally:
        client.close()


@pytest.fixture
def s3_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_url(s3_endpoint: str, s3_prefix: str) -> str:
    return f"s3://{BUCKET}/{s3_prefix}?endpoint_url={s3_endpoint}&region={REGION}"
