"""Service-backed tests: where their URLs come from, and skip-or-fail.

Service URLs come from environment variables (``OUTLAST_TEST_POSTGRES_URL``,
``OUTLAST_TEST_REDIS_URL``, ...). When a service cannot be reached, its tests
skip with the reason, unless ``OUTLAST_TEST_STRICT=1`` (CI) turns the skip into
a failure: in CI no backend suite may skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from outlast.adapter import redact

STRICT_ENV = "OUTLAST_TEST_STRICT"

_forced_strict = False


def force_strict() -> None:
    """Make skipping an error for this process (pytest's ``--outlast-strict``)."""
    global _forced_strict
    _forced_strict = True


def strict() -> bool:
    """True when skipping a service-backed test is an error (CI)."""
    return _forced_strict or os.environ.get(STRICT_ENV, "") not in ("", "0")


def service_url(env: str, default: str) -> str:
    """The test URL of a service: ``$env`` if set, else ``default``."""
    return os.environ.get(env) or default


def unavailable(reason: str) -> NoReturn:
    """Skip the current test with ``reason``, or fail it when strict.

    The reason goes through ``outlast.adapter.redact`` first: it often quotes
    the service's URL, and a skip message must never show a password.
    """
    reason = redact(reason)
    if strict():
        pytest.fail(f"{reason} ({STRICT_ENV}=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)
