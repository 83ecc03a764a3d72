"""S3 test support: a moto server on loopback, a fault-injecting proxy, the
damage the conformance suite asks for, constants.

Test modules import these by this module's own name (conftest.py is not
importable reliably when several packages' tests run in one pytest session).
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import boto3
import botocore.exceptions
from botocore.config import Config
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

import outlast
from outlast.adapter import CheckpointerFactory, redact
from outlast_conformance.services import unavailable
from outlast_s3 import S3Store
from outlast_s3.documents import decode_state
from outlast_s3.progress import ProgressReader

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

DAMAGE = "{not json"
"""What the damage helpers write where JSON was."""


def s3_store(store: CheckpointerFactory) -> S3Store:
    """The S3Store behind what ``outlast.open`` returned."""
    backend = store.backend if isinstance(store, outlast.Store) else store
    assert isinstance(backend, S3Store), f"not an S3 store: {backend!r}"
    return backend


def url_of(store: S3Store) -> str:
    """The URL, with every option, that opens ``store``'s bucket and prefix
    elsewhere (another process: credentials come from its environment)."""
    options = store.options
    query = {
        "region": options.region,
        "endpoint_url": options.endpoint_url,
        "sse": options.sse,
        "sse_kms_key_id": options.sse_kms_key_id,
        "max_workers": str(options.max_workers),
        "compact_after": str(options.compact_after),
        "addressing_style": options.addressing_style,
    }
    present = {name: value for name, value in query.items() if value is not None}
    return f"s3://{options.bucket}/{options.prefix}?{urlencode(present)}"


async def corrupt_record(store: S3Store, run_id: str, namespace: str) -> None:
    """Overwrite the run's state object with bytes that are not JSON."""
    key = store.layout.state(namespace, run_id)
    assert await store.objects.get(key) is not None, f"no run {run_id!r} to damage"
    await store.objects.put(key, DAMAGE.encode())


async def corrupt_message(store: S3Store, run_id: str, namespace: str) -> None:
    """Rewrite, in place, the object holding the first message of the run's
    current transcript (a segment, or the compacted object) so that message
    no longer parses; the rest of the object stays as it was."""
    got = await store.objects.get(store.layout.state(namespace, run_id))
    assert got is not None, f"no run {run_id!r} to damage"
    run = decode_state(got.body, run_id)
    progress = await ProgressReader(store.objects, store.layout).read(run, got.etag)
    current = len(progress.state.phases)
    keys = [run.compaction.key] if run.compaction is not None else []
    for key in [*keys, *progress.data_keys]:
        stored = await store.objects.get(key)
        assert stored is not None, f"{key} vanished"
        doc = json.loads(stored.body)
        if doc["type"] == "cancel-request":
            continue  # holds a sequence number, no messages
        first = doc.get("first_message", 0)  # a compacted object starts at message 0
        if doc["segment"] == current and first == 0 and doc["messages"]:
            doc["messages"][0] = DAMAGE
            await store.objects.put(key, json.dumps(doc).encode())
            return
    raise AssertionError(f"run {run_id!r} has no saved message in its current transcript")


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


def admin_client(endpoint: str) -> Any:
    """A plain boto3 client for test setup and inspection (no retries)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def stored_objects(endpoint: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix``: key -> body, read outside the store."""
    client = admin_client(endpoint)
    try:
        found = {}
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                key = item["Key"]
                found[key] = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return found
    finally:
        client.close()


def create_bucket(endpoint: str) -> None:
    client = admin_client(endpoint)
    try:
        client.create_bucket(Bucket=BUCKET)
    except botocore.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    except botocore.exceptions.BotoCoreError as exc:
        unavailable(redact(f"S3 endpoint {endpoint} ({ENDPOINT_ENV}) cannot be reached: {exc}"))
    finally:
        client.close()


class Fault:
    """Answer the next ``times`` requests matching ``method`` and ``path_part``
    with ``status``/``code`` (after passing them on when ``forward`` is set, as
    when a write lands but its response is lost). ``hits`` counts them all."""

    def __init__(
        self,
        method: str,
        path_part: str,
        status: int,
        code: str,
        times: int,
        *,
        forward: bool = False,
    ) -> None:
        self.method = method
        self.path_part = path_part
        self.status = status
        self.code = code
        self.times = times
        self.forward = forward
        self.hits = 0
        self.injected = 0

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and self.path_part in path


class FaultProxy:
    """A loopback HTTP proxy in front of the S3 endpoint that injects faults."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.faults: list[Fault] = []
        self.ignore_conditions = False
        """Drop If-Match / If-None-Match, like a store without conditional writes."""
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_request(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._fault_for(self.command, self.path)
                if fault is None or fault.forward:
                    status, headers, payload = proxy._forward(
                        self.command, self.path, self.headers.items(), body
                    )
                if fault is not None:
                    status, headers, payload = _error(fault.status, fault.code)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)
                self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_request

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
                """Quiet: the tests assert on the proxy's counters instead."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    if fault.injected < fault.times:
                        fault.injected += 1
                        return fault
        return None

    def _forward(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            dropped = {"connection", "expect"}
            if self.ignore_conditions:
                dropped |= {"if-match", "if-none-match"}
            sent = {k: v for k, v in headers if k.lower() not in dropped}
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            payload = response.read() if method != "HEAD" else b""
            return response.status, response.getheaders(), payload
        finally:
            connection.close()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _error(status: int, code: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected by the test proxy</Message></Error>"
    ).encode()
    return status, [("Content-Type", "application/xml")], body
