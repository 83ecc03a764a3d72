"""Retention: terminal runs are removed after a configurable age, never kept forever.

Every store takes the option ``retention`` (URL query ``?retention=7d`` or
keyword ``outlast.open(url, retention="7d")``; a number is seconds).
:func:`outlast.open` takes it out of the URL and the keywords before the
backend's ``outlast_open`` hook sees them (the backend never learns of it),
and the :class:`~outlast.store.Store` it returns applies it: whenever a
namespace's work is looked for (``interrupted``, or a worker's
``claim_next``), completed and failed runs of that namespace older than the
retention are purged, at most once per tenth of the retention (and at most
once a minute) per namespace.
``outlast gc`` purges on demand. Running runs are never purged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from outlast.errors import ConfigurationError
from outlast.ports import CheckpointerFactory

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
    URL without it and the retention in seconds (None when not set).

    Only the ``retention=...`` pairs are cut out of the query text; every
    other option reaches the backend byte for byte (re-encoding the query
    would turn ``%20`` into ``+``, which libpq reads literally).
    """
    base, _, rest = url.partition("?")
    query, hash_sign, fragment = rest.partition("#")
    kept: list[str] = []
    from_url: list[str] = []
    for pair in query.split("&") if query else []:
        key, _, value = pair.partition("=")
        if unquote_plus(key) == OPTION:
            from_url.append(unquote_plus(value))
        else:
            kept.append(pair)
    raw: Any = options.pop(OPTION, from_url[-1] if from_url else None)
    if from_url:
        url = base + ("?" + "&".join(kept) if kept else "") + hash_sign + fragment
    return url, None if raw is None else parse_duration(raw)


class RetentionSchedule:
    """When a store front purges a namespace: at most once per tenth of the
    retention (and at most once a minute) per namespace."""

    def __init__(self, retention: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.retention = retention
        self._every = max(60.0, retention / 10)
        self._clock = clock
        self._last: dict[str, float] = {}

    def due(self, namespace: str) -> bool:
        """Whether to purge ``namespace`` now; if so, the next purge waits."""
        now = self._clock()
        last = self._last.get(namespace)
        if last is not None and now - last < self._every:
            return False
        self._last[namespace] = now
        return True

    async def purge(self, store: CheckpointerFactory, namespace: str) -> None:
        """Purge ``namespace`` of ``store`` if due; a failure is logged, never raised."""
        if not self.due(namespace):
            return
        try:
            removed = await store.purge(self.retention, namespace)
        except Exception as exc:  # noqa: BLE001 - retention must not stop recovery
            log.warning("outlast: retention purge of %r failed: %s", namespace, exc)
        else:
            if removed:
                log.info("outlast: retention removed %d run(s) of %r", removed, namespace)
