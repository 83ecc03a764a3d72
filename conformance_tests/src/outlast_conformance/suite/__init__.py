"""The conformance suite: one class per topic, combined into ConformanceSuite.

Each topic class (``RoundTripTests``, ``ClaimTests``, ...) is a mixin on
:class:`~outlast_conformance.fixtures.StoreFixtures`; an adapter subclasses
:class:`ConformanceSuite` (all of them) and provides the fixtures. A topic
class can also be used on its own while an adapter is being written, but the
adapter's CI runs the whole suite.
"""

from __future__ import annotations

from typing import Any, ClassVar

from outlast_conformance.capabilities import Capabilities
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.suite.agreement import TransitionAgreementTests
from outlast_conformance.suite.append import AppendTests
from outlast_conformance.suite.claims import ClaimTests
from outlast_conformance.suite.concurrency import ConcurrencyTests
from outlast_conformance.suite.corrupt import CorruptRecordTests
from outlast_conformance.suite.fleet import FleetStoreTests
from outlast_conformance.suite.leases import LeaseTests
from outlast_conformance.suite.lifecycle import LifecycleTests
from outlast_conformance.suite.listing import ListingTests
from outlast_conformance.suite.namespaces import NamespaceTests
from outlast_conformance.suite.outcomes import ExecutorOutcomeTests
from outlast_conformance.suite.races import RaceTests
from outlast_conformance.suite.resume import ExecutorResumeTests
from outlast_conformance.suite.roundtrip import RoundTripTests
from outlast_conformance.suite.serving import ServingTests
from outlast_conformance.suite.steps import StepCrashTests
from outlast_conformance.suite.waiting import WaitingTests

STORE_TOPICS: tuple[type[StoreFixtures], ...] = (
    RoundTripTests,
    AppendTests,
    LifecycleTests,
    LeaseTests,
    ClaimTests,
    NamespaceTests,
    CorruptRecordTests,
    ListingTests,
    ConcurrencyTests,
    RaceTests,
    TransitionAgreementTests,
    FleetStoreTests,
    WaitingTests,
)
"""Topics that talk to the store directly through the ports."""

EXECUTOR_TOPICS: tuple[type[StoreFixtures], ...] = (
    ExecutorOutcomeTests,
    ExecutorResumeTests,
    ServingTests,
    StepCrashTests,
)
"""Topics that drive the store end to end through outlast.Executor."""

TOPICS: tuple[type[StoreFixtures], ...] = STORE_TOPICS + EXECUTOR_TOPICS


def suite_test_names(topics: tuple[type[StoreFixtures], ...] = TOPICS) -> frozenset[str]:
    """The name of every test in the suite (unique across topics)."""
    seen: dict[str, str] = {}
    for topic in topics:
        for name in vars(topic):
            if name.startswith("test_"):
                if name in seen:
                    raise TypeError(
                        f"suite test {name!r} is defined by both {seen[name]} and "
                        f"{topic.__name__}; test names must be unique (known_gaps uses them)"
                    )
                seen[name] = topic.__name__
    return frozenset(seen)


def check_known_gaps(cls: type[Any], names: frozenset[str] | None = None) -> None:
    """``cls.capabilities`` must be a Capabilities whose gaps name suite tests."""
    names = suite_test_names() if names is None else names
    capabilities = getattr(cls, "capabilities", None)
    if not isinstance(capabilities, Capabilities):
        raise TypeError(
            f"{cls.__name__}.capabilities must be an outlast_conformance.Capabilities, "
            f"got {type(capabilities).__name__}"
        )
    unknown = sorted(set(capabilities.known_gaps) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__}.capabilities.known_gaps names unknown test(s) "
            f"{', '.join(unknown)}; known gaps must be names of suite tests (test_...)"
        )


def check_declaration(cls: type[Any], names: frozenset[str]) -> None:
    """Reject a suite subclass that could drop or misname a test.

    ``capabilities`` must be a Capabilities; every known gap must name a suite
    test; and no suite test may be overridden (declare a known gap instead, so
    the test still runs as a strict xfail).
    """
    check_known_gaps(cls, names)
    for klass in cls.__mro__:
        if klass is ConformanceSuite:
            break
        overridden = sorted(names & set(vars(klass)))
        if overridden:
            raise TypeError(
                f"{klass.__name__} overrides suite test(s) {', '.join(overridden)}; a store "
                "cannot drop a conformance test: declare it in capabilities.known_gaps "
                "with the reason instead (it then runs as a strict xfail)"
            )


class ConformanceSuite(
    RoundTripTests,
    AppendTests,
    LifecycleTests,
    LeaseTests,
    ClaimTests,
    NamespaceTests,
    CorruptRecordTests,
    ListingTests,
    ConcurrencyTests,
    RaceTests,
    TransitionAgreementTests,
    FleetStoreTests,
    WaitingTests,
    ExecutorOutcomeTests,
    ExecutorResumeTests,
    ServingTests,
    StepCrashTests,
):
    """The whole conformance suite. Subclass it as ``Test...`` in your tests.

    Provide the ``factory`` fixture and the ``reopen``, ``url``,
    ``corrupt_record`` and ``corrupt_message`` methods (see StoreFixtures),
    and set ``capabilities``. The subclass is checked when it is defined:
    see :func:`check_declaration`.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    test_names: ClassVar[frozenset[str]] = suite_test_names()
    """Every suite test's name: what ``known_gaps`` may name."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_declaration(cls, cls.test_names)
