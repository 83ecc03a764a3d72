"""Store URLs: parsing helpers, password redaction and backend descriptions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from outlast.errors import ConfigurationError

DEFAULT_URL = "sqlite:///./.outlast/runs.db"
URL_ENV = "OUTLAST_URL"

KNOWN_PACKAGES: Mapping[str, str] = {
    "postgresql": "outlast-postgres",
    "postgres": "outlast-postgres",
    "redis": "outlast-redis",
    "rediss": "outlast-redis",
    "unix": "outlast-redis",
    "s3": "outlast-s3",
}
"""Which package serves the schemes of the first-party adapters."""


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What ``outlast_backends`` returns for one backend."""

    name: str
    schemes: tuple[str, ...]
    package: str
    version: str
    capabilities: tuple[str, ...] = field(default=())


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased; ConfigurationError when it has none."""
    scheme = urlsplit(url).scheme.lower()
    if not scheme or "://" not in url:
        raise ConfigurationError(
            f"{redact(url)!r} is not a store URL; expected scheme://..., for example {DEFAULT_URL}"
        )
    return scheme


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None and "password=" not in parts.query.lower():
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}"
    query = "&".join(
        f"{key}=***" if key.lower() in {"password", "pass", "secret"} else f"{key}={value}"
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))


def query_options(url: str) -> dict[str, str]:
    """The URL's query string as a dict (last value wins)."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def merge_options(url: str, options: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """URL query options overridden by keyword ``options``; unknown names rejected.

    Adapters use this so every backend reports a misspelled option the same way.
    """
    merged: dict[str, Any] = {**query_options(url), **options}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} for {redact(url)!r}; "
            f"known options: {', '.join(sorted(known)) or 'none'}"
        )
    return merged
