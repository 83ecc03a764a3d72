"""``postgresql://`` URLs and options: what the store is told, validated up front.

outlast's own options (see :data:`OPTIONS`) come from the URL's query or from
keyword arguments (keywords win) and are stripped from the connection string
handed to psycopg. Every other option must be a libpq connection parameter
(``sslmode``, ``application_name``, ...); those pass through to psycopg
untouched. Anything else is a :class:`~outlast.errors.ConfigurationError`.

The URL is read as libpq reads it, not as :func:`urllib.parse.urlsplit`
does: the user name and password end at the first ``@``, so a ``#`` or ``?``
in a password is part of it (libpq accepts them unencoded) and the query
starts at the first ``?`` after them.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, unquote

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from outlast.adapter import ConfigurationError, redact

SCHEMES = ("postgresql", "postgres")

DEFAULT_SCHEMA = "outlast"

OPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "schema": f"schema holding outlast's tables (default {DEFAULT_SCHEMA!r})",
        "pool_min_size": "connections the pool keeps open (default 1)",
        "pool_max_size": "most connections the pool opens (default 10)",
        "pool_timeout": "seconds to wait for a free pooled connection (default 30)",
        "connect_timeout": "seconds to wait for the server when connecting (default 10)",
        "prepare_threshold": (
            "executions before psycopg prepares a statement server-side (default 5); "
            "'none' disables it, as PgBouncer in transaction mode may need"
        ),
    }
)
"""outlast-postgres options, each with what it means."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

SECRET_PARAMETERS = ("password", "sslpassword")
"""libpq's parameters that hold a secret (their values are scrubbed from error texts)."""


@functools.cache
def libpq_parameters() -> frozenset[str]:
    """The connection parameters the installed libpq understands."""
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    """A validated store configuration. Its repr never shows the password."""

    redacted_url: str
    schema: str = DEFAULT_SCHEMA
    pool_min_size: int = 1
    pool_max_size: int = 10
    pool_timeout: float = 30.0
    connect_timeout: float = 10.0
    prepare_threshold: int | None = 5
    conninfo: str = field(default="", repr=False)
    """The URL without outlast's options: what psycopg connects with."""
    libpq_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """libpq parameters given as keyword options."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """The password (and sslpassword), only so error texts can be scrubbed of them."""

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AsyncConnection.connect`` (and the pool)."""
        return {
            **self.libpq_options,
            # libpq counts whole seconds, at least 2 (psycopg enforces the same minimum).
            "connect_timeout": max(2, math.ceil(self.connect_timeout)),
            "fallback_application_name": "outlast",
            # Each statement is its own transaction unless a transaction() block says otherwise:
            # one statement, one round trip.
            "autocommit": True,
            "prepare_threshold": self.prepare_threshold,
        }

    def scrub(self, text: str) -> str:
        """``text`` (a driver's message) redacted, and scrubbed of this store's secrets."""
        return redact(text, secrets=self.secrets)


def parse(url: str, options: Mapping[str, Any]) -> PostgresConfig:
    """Validate ``url`` and keyword ``options`` into a :class:`PostgresConfig`.

    Raises ConfigurationError naming the bad option; never connects.
    """
    scheme, has_scheme, _ = url.partition("://")
    if not has_scheme or scheme.lower() not in SCHEMES:
        # Not echoed: this may be a key=value DSN holding a password.
        raise ConfigurationError("expected a postgresql:// or postgres:// URL")
    redacted = redact(url)
    head, query = _split_query(url)
    _check_userinfo(head, redacted)
    from_query = dict(parse_qsl(query, keep_blank_values=True))
    merged: dict[str, Any] = {**from_query, **options}
    unknown = sorted(set(merged) - set(OPTIONS) - libpq_parameters())
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} for {redacted!r}; outlast-postgres options: "
            f"{', '.join(sorted(OPTIONS))}; libpq connection parameters (sslmode, "
            "application_name, ...) are passed on to psycopg"
        )
    conninfo = _without_options(head, query)
    try:
        parsed = conninfo_to_dict(conninfo)
    except (psycopg.Error, ValueError):  # psycopg raises ProgrammingError
        # from None: libpq's message quotes the offending text, which may be the password.
        raise ConfigurationError(
            f"{redacted!r} is not a valid PostgreSQL URL; percent-encode special characters "
            "in the user name and password (% as %25, @ as %40, / as %2F)"
        ) from None
    libpq_options = {k: v for k, v in options.items() if k not in OPTIONS}
    secrets = tuple(
        str(found)
        for name in SECRET_PARAMETERS
        for found in (libpq_options.get(name), parsed.get(name))
        if found
    )
    return PostgresConfig(
        redacted_url=redacted,
        schema=_schema(merged.get("schema", DEFAULT_SCHEMA)),
        pool_min_size=_count(merged, "pool_min_size", 1, minimum=0),
        pool_max_size=_pool_max(merged),
        pool_timeout=_seconds(merged, "pool_timeout", 30.0),
        connect_timeout=_seconds(merged, "connect_timeout", 10.0),
        prepare_threshold=_prepare_threshold(merged.get("prepare_threshold", 5)),
        conninfo=conninfo,
        libpq_options=libpq_options,
        secrets=secrets,
    )


def _split_query(url: str) -> tuple[str, str]:
    """``url`` cut into what precedes its query and the query, as libpq cuts it.

    libpq ends the user name and password at the first ``@`` (if one comes
    before any ``/``), then the query at the first ``?``; it gives ``#`` no
    meaning. :func:`urllib.parse.urlsplit` would end the host at a ``#`` or
    ``?`` inside the password instead.
    """
    start = url.find("://") + 3
    after = start
    for index in range(start, len(url)):
        if url[index] == "/":
            break
        if url[index] == "@":
            after = index + 1
            break
    mark = url.find("?", after)
    return (url, "") if mark < 0 else (url[:mark], url[mark + 1 :])


def _check_userinfo(head: str, redacted: str) -> None:
    """An ``@`` after libpq's user name and password: one of them holds an
    unencoded ``@`` or ``/``, and libpq would take the rest of it for a host."""
    start = head.find("://") + 3
    first_at = head.find("@", start)
    slash = head.find("/", start)
    if first_at < 0:
        return
    userinfo_ends = first_at if slash < 0 or first_at < slash else start - 1
    if "@" in head[userinfo_ends + 1 :]:
        raise ConfigurationError(
            f"{redacted!r}: the user name or password holds an '@' or '/' that is not "
            "percent-encoded; write @ as %40 and / as %2F"
        )


def _without_options(head: str, query: str) -> str:
    """The URL minus outlast's own query options (libpq would reject them).

    The other parameters are kept byte for byte: re-encoding could turn a
    ``%20`` into a ``+``, which libpq does not read as a space.
    """
    kept = [
        item for item in query.split("&") if item and unquote(item.partition("=")[0]) not in OPTIONS
    ]
    return head + ("?" + "&".join(kept) if kept else "")


def _schema(value: object) -> str:
    name = str(value)
    if not _IDENTIFIER.fullmatch(name) or name.lower().startswith("pg_"):
        raise ConfigurationError(
            f"schema must be a plain identifier (letters, digits, underscores; at most 63 "
            f"characters; not starting with a digit or 'pg_'), got {name!r}"
        )
    return name


def _count(merged: Mapping[str, Any], name: str, default: int, *, minimum: int) -> int:
    value = merged.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = minimum - 1
    if number < minimum or isinstance(value, bool | float):
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def _pool_max(merged: Mapping[str, Any]) -> int:
    low = _count(merged, "pool_min_size", 1, minimum=0)
    high = _count(merged, "pool_max_size", max(10, low), minimum=1)
    if high < low:
        raise ConfigurationError(f"pool_max_size ({high}) must be at least pool_min_size ({low})")
    return high


def _seconds(merged: Mapping[str, Any], name: str, default: float) -> float:
    value = merged.get(name, default)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)) or isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def _prepare_threshold(value: object) -> int | None:
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    try:
        number = int(str(value))
    except ValueError:
        number = -1
    if number < 0 or isinstance(value, bool):
        raise ConfigurationError(
            f"prepare_threshold must be an integer >= 0 or 'none', got {value!r}"
        )
    return number
