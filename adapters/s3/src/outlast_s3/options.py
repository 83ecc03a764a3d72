"""``s3://bucket/prefix`` URLs and their options.

Options come from the URL's query string or from keyword options of
``outlast.open`` (keywords win). Credentials never come from here: boto3's
normal chain (environment, shared config/credentials files, SSO, instance or
task roles) supplies them, so a URL can be logged and shared safely. A
``user:password@`` in the store URL or in ``endpoint_url`` is refused: S3
requests are signed with AWS credentials, so botocore would never use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from outlast.adapter import ConfigurationError, merge_options, redact

SCHEME = "s3"

SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
ADDRESSING_STYLES = ("auto", "path", "virtual")

KNOWN_OPTIONS = {
    "region",
    "endpoint_url",
    "sse",
    "sse_kms_key_id",
    "max_workers",
    "compact_after",
    "addressing_style",
}

DEFAULT_MAX_WORKERS = 16
DEFAULT_COMPACT_AFTER = 64


@dataclass(frozen=True, slots=True, repr=False)
class S3Options:
    """Where and how to store runs.

    ``prefix`` is the key prefix under the bucket ("" for the bucket root);
    ``compact_after`` is how many segment objects a run may collect before its
    owner folds them into one compacted object.
    """

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    max_workers: int = DEFAULT_MAX_WORKERS
    compact_after: int = DEFAULT_COMPACT_AFTER
    addressing_style: str = "auto"

    @property
    def url(self) -> str:
        """The store's URL without options (safe to log: it holds no secret)."""
        return f"{SCHEME}://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def where(self) -> str:
        """The bucket, and the endpoint when not AWS's, for messages (redacted)."""
        where = f"S3 bucket {self.bucket!r}"
        if self.endpoint_url:
            where += f" at {redact(self.endpoint_url)}"
        return where

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return redact(f"S3Options({shown})")


def parse_url(url: str, options: Mapping[str, Any]) -> S3Options:
    """Validate ``url`` and ``options``; ConfigurationError names what is wrong."""
    if url.partition("://")[0].lower() != SCHEME:
        raise ConfigurationError(f"{redact(url)!r} is not an s3:// URL")
    merged = merge_options(url, options, KNOWN_OPTIONS)
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ConfigurationError(
            f"{redact(url)!r}: credentials in an s3:// URL are not accepted; remove them "
            "and let boto3 find credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, or an instance/task role)"
        )
    bucket = parts.hostname or ""
    if not bucket or ":" in parts.netloc:
        raise ConfigurationError(
            f"{redact(url)!r}: expected s3://BUCKET/PREFIX, for example s3://my-bucket/outlast"
        )
    sse = _text(merged, "sse")
    if sse is not None and sse not in SSE_MODES:
        raise ConfigurationError(f"sse must be one of {', '.join(SSE_MODES)}, got {sse!r}")
    kms_key = _text(merged, "sse_kms_key_id")
    if kms_key is not None and sse not in ("aws:kms", "aws:kms:dsse"):
        raise ConfigurationError("sse_kms_key_id needs sse=aws:kms (or aws:kms:dsse)")
    style = _text(merged, "addressing_style") or "auto"
    if style not in ADDRESSING_STYLES:
        raise ConfigurationError(
            f"addressing_style must be one of {', '.join(ADDRESSING_STYLES)}, got {style!r}"
        )
    endpoint = _endpoint(_text(merged, "endpoint_url"))
    return S3Options(
        bucket=bucket,
        prefix=parts.path.strip("/"),
        region=_text(merged, "region"),
        endpoint_url=endpoint,
        sse=sse,
        sse_kms_key_id=kms_key,
        max_workers=_positive_int(merged, "max_workers", DEFAULT_MAX_WORKERS, minimum=1),
        compact_after=_positive_int(merged, "compact_after", DEFAULT_COMPACT_AFTER, minimum=2),
        addressing_style=style,
    )


def _endpoint(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"endpoint_url must be an http:// or https:// URL, got {redact(endpoint)!r}"
        )
    # Any '@': a password holding '#', '?' or '/' would hide it from urlsplit's netloc.
    if "@" in endpoint:
        raise ConfigurationError(
            f"endpoint_url {redact(endpoint)!r} holds credentials; remove them: S3 requests "
            "are signed with the AWS credentials boto3 finds (AWS_PROFILE, "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ...), never with a user and password"
        )
    return endpoint


def _text(options: Mapping[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"option {name} must be text, got {type(value).__name__}")
    return value


def _positive_int(options: Mapping[str, Any], name: str, default: int, *, minimum: int) -> int:
    value = options.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"option {name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or number < minimum or str(number) != str(value).strip():
        raise ConfigurationError(f"option {name} must be an integer >= {minimum}, got {value!r}")
    return number
