"""Store URLs and options: what outlast reads itself, what goes to redis-py.

``redis://[[user]:password@]host[:port][/db][?options]``, ``rediss://`` (TLS)
and ``unix:///path/to/redis.sock[?options]``. Options come from the URL's
query or as keyword options of ``outlast.open`` (keywords win):

=====================  =====================================================
``prefix``             first part of every key (default ``outlast``)
``db``                 database number (default: the URL's path, else 0)
``completed_ttl``      seconds a completed run's terminal record is kept;
                       default: until ``purge``/``outlast gc`` removes it
``cluster``            ``1``/``true``: connect with Redis Cluster
``socket_timeout``, ``socket_connect_timeout``, ``ssl_cert_reqs``,
``ssl_ca_certs``       passed to redis-py as they are
=====================  =====================================================

Options are removed from the URL before redis-py sees it, so redis-py only
ever receives the connection part plus the options listed here. A URL
redis-py could not read (a ``#``, ``?`` or ``/`` in the password, a port that
is not a number) is refused here, without repeating what redis-py said: its
text may quote a piece of the password.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from redis.asyncio.connection import parse_url

from outlast.adapter import ConfigurationError, merge_options, redact
from outlast_redis.keys import DEFAULT_PREFIX, check_prefix

SCHEMES = ("redis", "rediss", "unix")

_PASSED_TO_REDIS = {"socket_timeout", "socket_connect_timeout", "ssl_cert_reqs", "ssl_ca_certs"}
_FLOAT_OPTIONS = {"socket_timeout", "socket_connect_timeout"}
KNOWN_OPTIONS = {"prefix", "db", "completed_ttl", "cluster"} | _PASSED_TO_REDIS

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Everything a store needs to connect, parsed and checked."""

    url: str = field(repr=False)
    """The URL for redis-py: the caller's URL without its query (may hold a password)."""
    prefix: str = DEFAULT_PREFIX
    db: int | None = None
    completed_ttl_ms: int = 0
    cluster: bool = False
    client_options: Mapping[str, Any] = field(default_factory=dict)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """The URL's password, only so error texts can be scrubbed of it."""

    @property
    def redacted_url(self) -> str:
        return redact(self.url)

    @property
    def tls(self) -> bool:
        """Whether the URL asks for TLS (``rediss://``)."""
        return self.url.lower().startswith("rediss://")

    def __repr__(self) -> str:
        return (
            f"RedisConfig(url={self.redacted_url!r}, prefix={self.prefix!r}, db={self.db!r}, "
            f"completed_ttl_ms={self.completed_ttl_ms}, cluster={self.cluster})"
        )


def parse(url: str, options: Mapping[str, Any]) -> RedisConfig:
    """Check ``url`` and ``options``; ConfigurationError names what is wrong."""
    if url.partition("://")[0].lower() not in SCHEMES:
        raise ConfigurationError(
            f"{redact(url)!r} is not a Redis URL; use redis://, rediss:// or unix://"
        )
    merged = merge_options(url, options, KNOWN_OPTIONS)  # also refuses URLs it cannot split
    parts = urlsplit(url)
    path = parts.path
    if parts.scheme.lower() != "unix":
        # redis://host/2 names database 2; the db option wins over the path.
        merged.setdefault("db", path.strip("/") or None)
        path = ""
    bare = urlunsplit(SplitResult(parts.scheme, parts.netloc, path, "", ""))
    try:
        parse_url(bare)  # redis-py's own reading: fail now, not at first use
    except ValueError:
        # from None: redis-py's text quotes the "port", which may be part of a password.
        raise ConfigurationError(
            f"{redact(url)!r} is not a Redis URL redis-py can read; check the host and "
            "port, and percent-encode special characters in the password (# as %23)"
        ) from None
    cluster = _flag(merged.get("cluster", False), "cluster", url)
    db = _db(merged.get("db"), url)
    if cluster and db:
        raise ConfigurationError(
            f"Redis Cluster has only database 0; drop db={db} from {redact(url)!r}"
        )
    if cluster and parts.scheme.lower() == "unix":
        raise ConfigurationError("Redis Cluster is reached over TCP: use redis:// or rediss://")
    client_options: dict[str, Any] = {}
    for name in sorted(_PASSED_TO_REDIS & set(merged)):
        value = merged[name]
        client_options[name] = _number(value, name, url) if name in _FLOAT_OPTIONS else value
    return RedisConfig(
        url=bare,
        prefix=check_prefix(str(merged.get("prefix", DEFAULT_PREFIX))),
        db=db,
        completed_ttl_ms=_ttl_ms(merged.get("completed_ttl"), url),
        cluster=cluster,
        client_options=client_options,
        secrets=(unquote(parts.password),) if parts.password else (),
    )


def _flag(value: Any, name: str, url: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(
        f"option {name}={value!r} of {redact(url)!r} must be 1/0 or true/false"
    )


def _db(value: Any, url: str) -> int | None:
    if value is None:
        return None
    try:
        db = int(value)
    except (TypeError, ValueError):
        db = -1
    if db < 0:
        raise ConfigurationError(
            f"option db={value!r} of {redact(url)!r} must be a database number (0, 1, ...)"
        )
    return db


def _number(value: Any, name: str, url: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number > 0 or math.isinf(number):
        raise ConfigurationError(
            f"option {name}={value!r} of {redact(url)!r} must be a positive number of seconds"
        )
    return number


def _ttl_ms(value: Any, url: str) -> int:
    if value is None or value == "":
        return 0
    return max(1, math.ceil(_number(value, "completed_ttl", url) * 1000))
