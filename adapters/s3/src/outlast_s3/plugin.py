"""pluggy hook implementations: ``s3://`` URLs open an :class:`S3Store`."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

from outlast.adapter import BackendInfo, CheckpointerFactory, hookimpl, scheme_of
from outlast_s3.options import SCHEME, parse_url
from outlast_s3.store import S3Store


@hookimpl
def outlast_open(url: str, options: Mapping[str, Any]) -> CheckpointerFactory | None:
    if scheme_of(url) != SCHEME:
        return None
    return S3Store(parse_url(url, options))


@hookimpl
def outlast_backends() -> list[BackendInfo]:
    return [
        BackendInfo(
            "s3",
            (SCHEME,),
            "outlast-s3",
            version("outlast-s3"),
            ("durable", "multi-process", "conditional-writes", "client-clock-leases"),
        )
    ]
