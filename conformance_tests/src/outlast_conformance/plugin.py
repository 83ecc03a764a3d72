"""The pytest plugin (entry point ``pytest11``): markers, options, known gaps.

Loaded by pytest from the installed distribution, so the suite runs from any
directory with no conftest.py. It turns every declared known gap, and every
test that needs a feature the store declares absent, into a strict xfail: the
test still runs, and the session fails the day it passes.
"""

from __future__ import annotations

from collections import Counter

import pytest

from outlast_conformance import services
from outlast_conformance.capabilities import FEATURES, Capabilities

MARKER = "outlast_conformance"
REQUIRES_MARKER = "outlast_requires"
REFUSED_MARKERS = ("skip", "skipif", "xfail")
"""Markers an adapter may not put on a suite test: known_gaps says why, strictly."""

_outcomes: Counter[str] = Counter()


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
    _outcomes.clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark suite tests and turn declared gaps into strict xfails.

    Applies to ConformanceSuite subclasses and to classes using a single topic
    (both are StoreFixtures subclasses); an adapter's own tests are left alone.
    """
    from outlast_conformance.fixtures import StoreFixtures
    from outlast_conformance.suite import ConformanceSuite, check_known_gaps

    checked: set[type[StoreFixtures]] = set()
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None or not issubclass(cls, StoreFixtures):
            continue
        name = getattr(item, "originalname", item.name)
        if name not in ConformanceSuite.test_names:
            continue  # the adapter's own extra test: not ours to mark
        if cls not in checked:
            checked.add(cls)
            try:
                check_known_gaps(cls)
            except (TypeError, ValueError) as exc:
                raise pytest.UsageError(str(exc)) from exc
        refuse_dropping_marks(item)
        item.add_marker(pytest.mark.outlast_conformance)
        capabilities = cls.capabilities
        for reason in gap_reasons(name, capabilities, item):
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))


def refuse_dropping_marks(item: pytest.Item) -> None:
    """A suite test cannot be skipped or xfailed by marker: only by known_gaps."""
    for mark in item.iter_markers():
        if mark.name in REFUSED_MARKERS:
            raise pytest.UsageError(
                f"{item.nodeid}: a conformance test cannot carry @pytest.mark.{mark.name}; "
                "declare it in capabilities.known_gaps with the reason instead (it then "
                "runs as a strict xfail)"
            )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if MARKER not in report.keywords:
        return
    if hasattr(report, "wasxfail"):
        _outcomes["known gap (strict xfail)"] += 1
    elif report.when == "setup" and report.failed:
        _outcomes["error"] += 1
    elif report.when == "call" or (report.when == "setup" and report.skipped):
        _outcomes[report.outcome] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line saying how the store did, skips called out (CI forbids them)."""
    if not _outcomes:
        return
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(_outcomes.items()))
    terminalreporter.write_sep("-", "outlast conformance")
    terminalreporter.write_line(f"conformance tests: {counts}")
    if _outcomes["skipped"]:
        terminalreporter.write_line(
            "a store conforms only when no conformance test is skipped "
            f"(set {services.STRICT_ENV}=1 or --outlast-strict to make skips failures)"
        )


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
