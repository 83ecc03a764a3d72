"""outlast's hook implementations for PostgreSQL (entry point ``outlast: postgres``)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

from outlast.adapter import BackendInfo, CheckpointerFactory, hookimpl, scheme_of
from outlast_postgres.config import SCHEMES
from outlast_postgres.store import PostgresStore


@hookimpl
def outlast_open(url: str, options: Mapping[str, Any]) -> CheckpointerFactory | None:
    """A PostgresStore for ``postgresql://`` and ``postgres://`` URLs (connects lazily)."""
    if scheme_of(url) not in SCHEMES:
        return None
    return PostgresStore(url, **options)


@hookimpl
def outlast_backends() -> list[BackendInfo]:
    return [
        BackendInfo(
            name="postgres",
            schemes=SCHEMES,
            package="outlast-postgres",
            version=version("outlast-postgres"),
            capabilities=("durable", "multi-process", "server-clock", "migrate", "notifications"),
        )
    ]
