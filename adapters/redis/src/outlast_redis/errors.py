"""redis-py's exceptions translated into outlast's, at the boundary.

Most specific first; every message names the server by its redacted URL and
says what to do. redis-py's own messages never carry the password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import exceptions as redis_errors

from outlast.adapter import StoreError, StoreUnavailable


@asynccontextmanager
async def translated(where: str) -> AsyncIterator[None]:
    """Run a block of Redis calls; raise outlast errors instead of redis-py's.

    ``where`` is the redacted URL of the server.
    """
    try:
        yield
    except redis_errors.AuthenticationError as exc:
        raise StoreUnavailable(
            f"Redis at {where} refused the credentials ({exc}); "
            "check the user name and password in the URL"
        ) from exc
    except (redis_errors.NoPermissionError, redis_errors.AuthorizationError) as exc:
        raise StoreUnavailable(
            f"Redis at {where} denied a command outlast needs ({exc}); the user must be "
            "allowed EVALSHA, SCRIPT LOAD, DEL and the sorted-set and hash commands"
        ) from exc
    except redis_errors.ConnectionError as exc:
        raise StoreUnavailable(
            f"cannot reach Redis at {where} ({exc}); is the server running and the URL right?"
        ) from exc
    except redis_errors.TimeoutError as exc:
        raise StoreUnavailable(f"Redis at {where} did not answer in time ({exc})") from exc
    except redis_errors.ResponseError as exc:
        raise _response_error(where, exc) from exc
    except redis_errors.RedisClusterException as exc:
        raise _cluster_error(where, exc) from exc
    except redis_errors.RedisError as exc:
        raise StoreError(f"Redis at {where} failed: {exc}") from exc


def _response_error(where: str, exc: redis_errors.ResponseError) -> StoreError:
    text = str(exc)
    lowered = text.lower()
    if "unknown command" in lowered or lowered.startswith("noscript"):
        return StoreUnavailable(
            f"Redis at {where} cannot run Lua scripts ({text}); outlast needs EVALSHA and "
            "SCRIPT LOAD (Redis >= 6.2 with scripting enabled)"
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


def _cluster_error(where: str, exc: redis_errors.RedisClusterException) -> StoreError:
    """redis-py wraps why no startup node answered; say that, not just "cluster"."""
    cause = exc.__cause__
    if isinstance(cause, redis_errors.AuthenticationError):
        return StoreUnavailable(
            f"Redis Cluster at {where} refused the credentials ({cause}); "
            "check the user name and password in the URL"
        )
    if "not enabled" in str(exc):
        return StoreUnavailable(
            f"Redis at {where} is a single server, not a Cluster; drop cluster=1 from the URL"
        )
    if isinstance(cause, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
        return StoreUnavailable(
            f"cannot reach the Redis Cluster at {where} ({cause}); is it running and the URL right?"
        )
    return StoreUnavailable(f"cannot use the Redis Cluster at {where} ({exc})")
