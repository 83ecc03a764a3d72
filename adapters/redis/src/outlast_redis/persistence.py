"""The check, once per store, that the Redis server keeps what outlast writes.

A save, a claim's epoch bump, a fence: each is durable only as far as the
server's persistence makes it so. A server with neither an append-only file
(``appendonly yes``) nor RDB save points keeps everything in memory alone, and
its restart forgets every run. Such a store logs one WARNING on first use.
Servers that forbid ``INFO`` or ``CONFIG GET`` (managed services often do) are
not judged: nothing is logged above DEBUG. See "Durability" in the README.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster

from outlast_redis.config import RedisConfig

log = logging.getLogger("outlast.redis")

WARNING = (
    "Redis at %s persists nothing (appendonly no and no RDB save points): a restart "
    "or crash of the server loses every run, save and claim stored there. Set "
    "`appendonly yes` (appendfsync everysec or always); see 'Durability' in "
    "outlast-redis's README"
)


async def warn_if_not_persistent(client: Any, config: RedisConfig) -> bool:
    """Log :data:`WARNING` if a server (on Cluster: a primary) persists nothing.

    Returns whether it warned. Never raises: a server that refuses INFO or
    CONFIG GET, or fails meanwhile, is not judged (a DEBUG line says why).
    """
    if isinstance(client, RedisCluster):
        targets: list[ClusterNode | None] = list(client.get_primaries())
    else:
        targets = [None]
    for node in targets:
        where = config.redacted_url if node is None else f"{config.redacted_url} (node {node.name})"
        try:
            persists = await _persists(client, node)
        except redis_errors.RedisError as exc:
            log.debug("cannot tell whether Redis at %s persists writes: %s", where, exc)
            return False
        if persists is False:
            log.warning(WARNING, where)
            return True
    return False


async def _persists(client: Any, node: ClusterNode | None) -> bool | None:
    """True/False as the server says; None when it hides its RDB save points."""
    target: dict[str, Any] = {} if node is None else {"target_nodes": node}
    info = await client.info("persistence", **target)
    if _text(info.get("aof_enabled", "0")) != "0":
        return True
    try:
        save = await client.config_get("save", **target)
    except redis_errors.ResponseError as exc:  # NOPERM, or CONFIG renamed away
        log.debug("CONFIG GET save refused (%s): the RDB save points are unknown", exc)
        return None
    points = _text(save.get("save", save.get(b"save", "")))
    return bool(points.strip())


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
