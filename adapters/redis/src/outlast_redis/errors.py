"""redis-py's exceptions translated into outlast's, at the boundary.

Most specific first; every message names the server by its redacted URL and
says what to do. redis-py's own messages never carry the password; they are
passed through :func:`outlast.adapter.redact` anyway, with the store's
password, as a second line of defence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from redis import exceptions as redis_errors

from outlast.adapter import StoreError, StoreUnavailable, redact

TLS_HINT = (
    "; the URL asks for TLS (rediss://) and this server has never answered: "
    "the server may not speak TLS, try redis://"
)
"""Added to a failure to reach a rediss:// server that never answered: a
plain server does not answer a TLS handshake (the client times out)."""


_NOT_NOW = (redis_errors.ReadOnlyError, redis_errors.MasterDownError, redis_errors.TryAgainError)
_NOT_NOW_CODES = ("NOREPLICAS", "READONLY", "MASTERDOWN")
"""Refusals that pass (a failover, min-replicas-to-write), also as a script's error text."""


@asynccontextmanager
async def translated(
    where: str, *, secrets: Sequence[str] = (), tls_unconfirmed: bool = False
) -> AsyncIterator[None]:
    """Run a block of Redis calls; raise outlast errors instead of redis-py's.

    ``where`` is the redacted URL of the server; ``secrets`` are scrubbed
    from redis-py's texts; ``tls_unconfirmed`` (a rediss:// server that has
    not answered yet) adds :data:`TLS_HINT` to connection failures.
    """
    try:
        yield
    except REDIS_ERRORS as exc:
        raise translate(exc, where, secrets=secrets, tls_unconfirmed=tls_unconfirmed) from exc


REDIS_ERRORS = (redis_errors.RedisError, redis_errors.RedisClusterException)
"""What redis-py raises (its Cluster exception is no RedisError)."""


def translate(
    exc: Exception, where: str, *, secrets: Sequence[str] = (), tls_unconfirmed: bool = False
) -> StoreError:
    """The outlast error for redis-py's ``exc`` (one of REDIS_ERRORS), as
    :func:`translated` raises it; for hot paths that catch it themselves."""
    hint = TLS_HINT if tls_unconfirmed else ""
    if isinstance(exc, redis_errors.AuthenticationError):
        return StoreUnavailable(
            f"Redis at {where} refused the credentials ({_text(exc, secrets)}); "
            "check the user name and password in the URL"
        )
    if isinstance(exc, (redis_errors.NoPermissionError, redis_errors.AuthorizationError)):
        return StoreUnavailable(
            f"Redis at {where} denied a command outlast needs ({_text(exc, secrets)}); the "
            "user must be allowed EVALSHA, SCRIPT LOAD, MULTI/EXEC, DEL and the list, "
            "sorted-set and hash commands"
        )
    if isinstance(exc, redis_errors.ConnectionError):
        return StoreUnavailable(
            f"cannot reach Redis at {where} ({_text(exc, secrets)}); is the server running "
            f"and the URL right?{hint}"
        )
    if isinstance(exc, redis_errors.TimeoutError):
        return StoreUnavailable(
            f"Redis at {where} did not answer in time ({_text(exc, secrets)}){hint}"
        )
    if isinstance(exc, redis_errors.ResponseError):
        return _response_error(where, _text(exc, secrets), exc)
    if isinstance(exc, redis_errors.RedisClusterException):
        return _cluster_error(where, exc, secrets, hint)
    return StoreError(f"Redis at {where} failed: {_text(exc, secrets)}")


def _text(exc: BaseException, secrets: Sequence[str]) -> str:
    return redact(str(exc) or type(exc).__name__, secrets=secrets)


def _response_error(where: str, text: str, exc: redis_errors.ResponseError) -> StoreError:
    lowered = text.lower()
    if "unknown command" in lowered or lowered.startswith("noscript"):
        return StoreUnavailable(
            f"Redis at {where} cannot run Lua scripts ({text}); outlast needs EVALSHA and "
            "SCRIPT LOAD (Redis >= 6.2 with scripting enabled)"
        )
    if isinstance(exc, _NOT_NOW) or any(code in text for code in _NOT_NOW_CODES):
        return StoreUnavailable(
            f"Redis at {where} cannot take writes now ({text}); it may be failing over or "
            "short of in-sync replicas (min-replicas-to-write): the refusal is temporary"
        )
    if isinstance(exc, redis_errors.AskError) or lowered.startswith(("moved", "crossslot")):
        return StoreUnavailable(
            f"Redis at {where} is a Redis Cluster ({text}); add cluster=1 to the URL"
        )
    if lowered.startswith("wrongtype"):
        return StoreError(
            f"Redis at {where} holds a key of another type where outlast keeps its data "
            f"({text}); use a key prefix nobody else uses (prefix=...)"
        )
    return StoreError(f"Redis at {where} answered with an error: {text}")


def _cluster_error(
    where: str, exc: redis_errors.RedisClusterException, secrets: Sequence[str], hint: str
) -> StoreError:
    """redis-py wraps why no startup node answered; say that, not just "cluster"."""
    cause = exc.__cause__
    if isinstance(cause, redis_errors.AuthenticationError):
        return StoreUnavailable(
            f"Redis Cluster at {where} refused the credentials ({_text(cause, secrets)}); "
            "check the user name and password in the URL"
        )
    if "not enabled" in str(exc):
        return StoreUnavailable(
            f"Redis at {where} is a single server, not a Cluster; drop cluster=1 from the URL"
        )
    if isinstance(cause, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
        return StoreUnavailable(
            f"cannot reach the Redis Cluster at {where} ({_text(cause, secrets)}); is it "
            f"running and the URL right?{hint}"
        )
    return StoreUnavailable(f"cannot use the Redis Cluster at {where} ({_text(exc, secrets)})")
