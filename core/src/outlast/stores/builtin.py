"""Hook implementations of the built-in stores (registered like any plugin)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

from outlast.errors import ConfigurationError
from outlast.hookspecs import hookimpl
from outlast.ports import CheckpointerFactory
from outlast.urls import BackendInfo, merge_options, redact, scheme_of


@hookimpl
def outlast_open(url: str, options: Mapping[str, Any]) -> CheckpointerFactory | None:
    scheme = scheme_of(url)
    if scheme == "memory":
        merge_options(url, options, known=set())
        parts = urlsplit(url)
        if "@" in parts.netloc:  # a name is shown in reprs: never a password
            raise ConfigurationError(
                f"{redact(url)!r}: a memory:// URL names a store in this process; "
                "it takes no user or password"
            )
        return _memory(parts.netloc + parts.path.rstrip("/"))
    if scheme == "sqlite":
        from outlast.stores.sqlite import open_sqlite

        return open_sqlite(url, options)
    return None


def _memory(name: str) -> CheckpointerFactory:
    from outlast.stores.memory import MemoryStore

    if "/" in name:
        raise ConfigurationError(f"memory store names cannot contain '/': {name!r}")
    return MemoryStore(name)


@hookimpl
def outlast_backends() -> list[BackendInfo]:
    core = version("outlast")
    return [
        BackendInfo("memory", ("memory",), "outlast", core, ("in-process",)),
        BackendInfo("sqlite", ("sqlite",), "outlast", core, ("durable", "multi-process")),
    ]
