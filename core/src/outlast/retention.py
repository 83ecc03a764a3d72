"""Retention: terminal runs are removed after a configurable age, never kept forever.

Every store takes the option ``retention`` (URL query ``?retention=7d`` or
keyword ``outlast.open(url, retention="7d")``; a number is seconds).
:func:`outlast.open` takes it out before the backend sees the options and wraps
the store in :class:`RetainingStore`: whenever a namespace's boot-recovery work
list is read (``interrupted``), completed and failed runs of that namespace
older than the retention are purged, at most once per tenth of the retention
(and at most once a minute) per namespace. ``outlast gc`` purges on demand.
Running runs are never purged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from outlast.errors import ConfigurationError
from outlast.ports import (
    DEFAULT_NAMESPACE,
    Checkpointer,
    CheckpointerFactory,
    Claim,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    StoredRun,
)

log = logging.getLogger("outlast.retention")

OPTION = "retention"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | float) -> float:
    """``90``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` -> seconds (ConfigurationError if not)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if match is None:
            raise ConfigurationError(f"{value!r} is not a duration like 30s, 15m, 12h or 7d")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ConfigurationError(f"a duration cannot be negative: {value!r}")
    return seconds


def take_retention(url: str, options: dict[str, Any]) -> tuple[str, float | None]:
    """Remove the ``retention`` option from ``url`` and ``options``; return the
    URL without it and the retention in seconds (None when not set)."""
    # Split by hand: urlunsplit would turn sqlite:///x into sqlite:/x.
    base, _, rest = url.partition("?")
    query, hash_sign, fragment = rest.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    from_url = [value for key, value in pairs if key == OPTION]
    raw: Any = options.pop(OPTION, from_url[-1] if from_url else None)
    if from_url:
        kept = urlencode([(k, v) for k, v in pairs if k != OPTION])
        url = base + (f"?{kept}" if kept else "") + hash_sign + fragment
    return url, None if raw is None else parse_duration(raw)


class RetainingStore:
    """A store that purges old terminal runs as it reads the recovery work list."""

    def __init__(
        self,
        inner: CheckpointerFactory,
        retention: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.retention = retention
        self._every = max(60.0, retention / 10)
        self._clock = clock
        self._last: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"RetainingStore({self.inner!r}, retention={self.retention})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # backend extras: migrate(), corrupt()...

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        now = self._clock()
        last = self._last.get(namespace)
        if last is None or now - last >= self._every:
            self._last[namespace] = now
            try:
                removed = await self.inner.purge(self.retention, namespace)
            except Exception as exc:  # noqa: BLE001 - retention must not stop recovery
                log.warning("outlast: retention purge of %r failed: %s", namespace, exc)
            else:
                if removed:
                    log.info("outlast: retention removed %d run(s) of %r", removed, namespace)
        return await self.inner.interrupted(namespace, limit)

    async def begin(self, start: RunStart) -> Checkpointer:
        return await self.inner.begin(start)

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        return await self.inner.claim(run_id, owner=owner, lease=lease, namespace=namespace)

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        return await self.inner.load(run_id, namespace)

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        return await self.inner.list(namespace, status, limit, cursor)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        return await self.inner.delete(run_id, namespace)

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        return await self.inner.purge(older_than, namespace)

    async def close(self) -> None:
        await self.inner.close()
