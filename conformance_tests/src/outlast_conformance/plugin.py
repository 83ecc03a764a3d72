"""The pytest plugin (entry point ``pytest11``): markers, options, known gaps.

Loaded by pytest from the installed distribution, so the suite runs from any
directory with no conftest.py. It turns every declared known gap, and every
test that needs a feature the store declares absent, into a strict xfail: the
test still runs, and the session fails the day it passes.
"""

from __future__ import annotations

import pytest

from outlast_conformance import services
from outlast_conformance.capabilities import FEATURES, Capabilities

MARKER = "outlast_conformance"
REQUIRES_MARKER = "outlast_requires"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("outlast-conformance")
    group.addoption(
        "--outlast-strict",
        action="store_true",
        default=False,
        help=(
            "fail (instead of skipping) service-backed tests whose service cannot be "
            f"reached; same as {services.STRICT_ENV}=1"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: a test of the outlast conformance suite (every store passes it)"
    )
    config.addinivalue_line(
        "markers",
        f"{REQUIRES_MARKER}(feature): the test needs an optional store feature declared in "
        f"Capabilities ({', '.join(sorted(FEATURES))}); without it the test is a strict xfail",
    )
    if config.getoption("--outlast-strict"):
        services.force_strict()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark suite tests and turn declared gaps into strict xfails."""
    from outlast_conformance.suite import ConformanceSuite

    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None or not issubclass(cls, ConformanceSuite):
            continue
        name = getattr(item, "originalname", item.name)
        if name not in cls.test_names:
            continue  # the adapter's own extra test: not ours to mark
        item.add_marker(pytest.mark.outlast_conformance)
        capabilities = cls.capabilities
        for reason in gap_reasons(name, capabilities, item):
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))


def gap_reasons(name: str, capabilities: Capabilities, item: pytest.Item) -> list[str]:
    """Why ``item`` is expected to fail on this store (empty: it must pass)."""
    reasons = []
    if name in capabilities.known_gaps:
        reasons.append(f"known gap: {capabilities.known_gaps[name]}")
    for mark in item.iter_markers(REQUIRES_MARKER):
        for feature in mark.args:
            if not isinstance(feature, str) or feature not in FEATURES:
                raise pytest.UsageError(
                    f"{item.nodeid}: @{REQUIRES_MARKER}({feature!r}) names no capability; "
                    f"known: {', '.join(sorted(FEATURES))}"
                )
            if not capabilities.has(feature):
                reasons.append(
                    f"store declares {feature}=False: the test needs {FEATURES[feature]}"
                )
    return reasons
