"""The few S3 operations the store needs, awaited off the event loop.

boto3 is synchronous, so every call runs in a bounded thread pool owned by the
store; one boto3 client (thread-safe) serves the whole pool. botocore's
standard retry mode retries throttling (503 SlowDown) and 5xx responses with
backoff. Driver exceptions are translated here, at the boundary, into
outlast's errors; a failed precondition is :class:`PreconditionFailed`, which
callers turn into LeaseLost, RunExists or a lost claim.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.exceptions
from botocore.config import Config

from outlast.adapter import ConfigurationError, StoreError, StoreUnavailable, redact
from outlast_s3.options import S3Options

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

T = TypeVar("T")

log = logging.getLogger("outlast_s3")

_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys per request
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_CONFLICT = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
    }
)
_PERMISSIONS = (
    "s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket"
    " (plus kms:GenerateDataKey/kms:Decrypt with sse=aws:kms)"
)


class PreconditionFailed(Exception):
    """A conditional write lost: the object changed (412), appeared (412 on
    If-None-Match), vanished (404 on If-Match), or a concurrent conditional
    write was in flight (409 ConditionalRequestConflict)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    body: bytes
    etag: str


class ObjectClient:
    """Async access to one bucket through a bounded pool of threads."""

    def __init__(self, options: S3Options) -> None:
        self._options = options
        self._pool = ThreadPoolExecutor(
            max_workers=options.max_workers, thread_name_prefix="outlast-s3"
        )
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()
        self._closed = False
        self.requests = 0
        """How many S3 requests this client sent (retries by botocore excluded)."""

    @property
    def bucket(self) -> str:
        return self._options.bucket

    async def get(self, key: str) -> StoredObject | None:
        """The object's body and ETag, or None when absent."""

        def call(client: S3Client) -> StoredObject | None:
            try:
                response = client.get_object(Bucket=self.bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
            return StoredObject(response["Body"].read(), response["ETag"])

        return await self._run(call, f"read {key!r}")

    async def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Write ``body``, conditionally; returns the new ETag.

        Raises PreconditionFailed when the condition does not hold.
        """
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": "application/json",
        }
        if if_match is not None:
            args["IfMatch"] = if_match
        if if_none_match:
            args["IfNoneMatch"] = "*"
        if self._options.sse is not None:
            args["ServerSideEncryption"] = self._options.sse
        if self._options.sse_kms_key_id is not None:
            args["SSEKMSKeyId"] = self._options.sse_kms_key_id

        def call(client: S3Client) -> str:
            try:
                return client.put_object(**args)["ETag"]
            except botocore.exceptions.ClientError as exc:
                code = _code(exc)
                if code in _CONFLICT or (if_match is not None and code in _MISSING):
                    raise PreconditionFailed(code) from exc
                raise

        return await self._run(call, f"write {key!r}")

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, in S3's (UTF-8 binary) order."""

        def call(client: S3Client) -> list[str]:
            keys: list[str] = []
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", ()))
            return keys

        return await self._run(call, f"list {prefix!r}")

    async def list_folders(self, prefix: str) -> list[str]:
        """The "folders" directly under ``prefix`` (common prefixes at ``/``)."""

        def call(client: S3Client) -> list[str]:
            folders: list[str] = []
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                folders.extend(item["Prefix"] for item in page.get("CommonPrefixes", ()))
            return folders

        return await self._run(call, f"list {prefix!r}")

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys`` (absent ones are fine), in batches of 1000."""
        if not keys:
            return

        def call(client: S3Client) -> None:
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = keys[start : start + _DELETE_BATCH]
                if len(batch) == 1:
                    client.delete_object(Bucket=self.bucket, Key=batch[0])
                    continue
                response = client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
                errors = response.get("Errors", ())
                if errors:
                    first = errors[0]
                    raise StoreError(
                        f"S3 bucket {self.bucket!r}: could not delete {len(errors)} object(s), "
                        f"first {first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
                    )

        await self._run(call, f"delete {len(keys)} object(s)")

    async def delete_if_match(self, key: str, etag: str) -> None:
        """Delete ``key`` only while its ETag is ``etag`` (a conditional
        DeleteObject, which S3 general purpose buckets honour since September
        2025). Raises PreconditionFailed when it changed or is gone."""

        def call(client: S3Client) -> None:
            try:
                client.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
            except botocore.exceptions.ClientError as exc:
                code = _code(exc)
                if code in _CONFLICT or code in _MISSING:
                    raise PreconditionFailed(code) from exc
                raise

        await self._run(call, f"delete {key!r}")

    async def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _run(self, call: Callable[[S3Client], T], what: str) -> T:
        if self._closed:
            raise StoreError(f"the S3 store {self._options.url!r} is closed")
        self.requests += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self._call, call, what))

    def _call(self, call: Callable[[S3Client], T], what: str) -> T:
        try:
            return call(self._ensure_client())
        except (PreconditionFailed, StoreError):
            raise
        except Exception as exc:  # every driver error is translated at this boundary
            raise self._translate(exc, what) from exc

    def _ensure_client(self) -> S3Client:
        # Created lazily in a pool thread: opening a store never blocks or connects.
        with self._client_lock:
            if self._client is None:
                self._client = _make_client(self._options)
            return self._client

    def _translate(self, exc: Exception, what: str) -> Exception:
        where = self._options.where
        if isinstance(exc, botocore.exceptions.ClientError):
            code = _code(exc)
            if code == "NoSuchBucket":
                return StoreUnavailable(
                    f"{where} does not exist (could not {what}); create the bucket, or fix "
                    "the bucket name, region or endpoint_url in the store URL"
                )
            if code in _DENIED:
                return StoreUnavailable(
                    f"{where}: access denied ({code}) when trying to {what}; check the "
                    f"credentials boto3 found and that they allow {_PERMISSIONS} on the "
                    "bucket and prefix"
                )
            if code in ("PermanentRedirect", "301", "AuthorizationHeaderMalformed"):
                return ConfigurationError(
                    f"{where} is in another region ({code}); set the region option "
                    "(s3://bucket/prefix?region=...)"
                )
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
                return StoreUnavailable(
                    f"{where} kept failing ({code}) after retries when trying to {what}; "
                    "S3 is throttling or unavailable, try again later"
                )
            message = redact(str(exc.response.get("Error", {}).get("Message", "")))
            return StoreError(f"{where}: could not {what}: {code} {message}".rstrip())
        if isinstance(
            exc,
            botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError,
        ):
            return ConfigurationError(
                f"{where}: boto3 found no AWS credentials; set AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an instance/task role"
            )
        if isinstance(
            exc,
            botocore.exceptions.EndpointConnectionError
            | botocore.exceptions.ConnectTimeoutError
            | botocore.exceptions.ReadTimeoutError
            | botocore.exceptions.ConnectionClosedError,
        ):
            return StoreUnavailable(
                f"cannot reach {where} when trying to {what} ({redact(str(exc))}); check "
                "endpoint_url, region and the network"
            )
        if isinstance(exc, ValueError):
            return ConfigurationError(f"{where}: invalid S3 configuration: {redact(str(exc))}")
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return StoreUnavailable(f"{where}: could not {what}: {redact(str(exc))}")
        return StoreError(f"{where}: could not {what}: {type(exc).__name__}: {redact(str(exc))}")


async def best_effort(cleanup: Awaitable[None], what: str) -> None:
    """Await a cleanup whose failure is harmless (what it leaves behind is
    never read): log the failure instead of raising it."""
    try:
        await cleanup
    except StoreError as exc:
        log.warning(
            "outlast-s3: could not %s (harmless: what is left is never read): %s", what, exc
        )


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _make_client(options: S3Options) -> S3Client:
    # Bounded timeouts: a hung request must not outlive a run's lease unnoticed.
    config = Config(
        retries={"mode": "standard"},
        connect_timeout=10,
        read_timeout=30,
        max_pool_connections=options.max_workers,
        s3={"addressing_style": options.addressing_style},  # type: ignore[arg-type]
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        region_name=options.region,
        endpoint_url=options.endpoint_url,
        config=config,
    )
