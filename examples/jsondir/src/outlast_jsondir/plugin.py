"""The pluggy hook implementations outlast loads through the entry point.

``pyproject.toml`` names this module in the ``outlast`` entry-point group; the
host registers it and calls these hooks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from outlast.adapter import (
    BackendInfo,
    ConfigurationError,
    hookimpl,
    merge_options,
    redact,
    scheme_of,
)
from outlast_jsondir.store import JsonDirStore

SCHEME = "jsondir"
FORMS = "jsondir:///relative/dir or jsondir:////absolute/dir"


@hookimpl
def outlast_open(url: str, options: Mapping[str, Any]) -> JsonDirStore | None:
    """A store for ``jsondir:`` URLs; None for every other scheme."""
    if scheme_of(url) != SCHEME:
        return None
    merge_options(url, options, known=set())  # no options: reject any, by name
    return JsonDirStore(directory_of(url))


@hookimpl
def outlast_backends() -> list[BackendInfo]:
    return [
        BackendInfo(
            name=SCHEME,
            schemes=(SCHEME,),
            package="outlast-jsondir",
            version=version("outlast-jsondir"),
            capabilities=("durable", "multi-process"),
        )
    ]


def directory_of(url: str) -> Path:
    """The directory a ``jsondir:///...`` URL names (same rules as sqlite:///)."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigurationError(
            f"{redact(url)!r}: a jsondir URL names a directory, not a host; write {FORMS}"
        )
    path = unquote(parts.path).removeprefix("/")
    if not path:
        raise ConfigurationError(f"{redact(url)!r} names no directory; write {FORMS}")
    return Path(os.path.abspath(path))
