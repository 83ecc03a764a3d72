"""outlast's hook implementations for Redis (the ``outlast`` entry point)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

from outlast.adapter import BackendInfo, CheckpointerFactory, hookimpl, scheme_of
from outlast_redis.config import SCHEMES
from outlast_redis.store import open_redis


@hookimpl
def outlast_open(url: str, options: Mapping[str, Any]) -> CheckpointerFactory | None:
    if scheme_of(url) not in SCHEMES:
        return None
    return open_redis(url, **options)


@hookimpl
def outlast_backends() -> list[BackendInfo]:
    return [
        BackendInfo(
            "redis",
            SCHEMES,
            "outlast-redis",
            version("outlast-redis"),
            ("durable", "multi-process", "cluster", "server-clock"),
        )
    ]
