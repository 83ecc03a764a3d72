"""What an adapter declares about its store: one typed, frozen object.

Almost everything the suite checks is a requirement of the ports, not an
option: every store must round-trip, fence, lease, claim, isolate namespaces
and skip corrupt records. What legitimately differs between stores is

* ``durable``: whether the runs outlive the factory that wrote them (a
  brand-new factory from ``reopen()`` sees them, and claims race across
  factories). Every store meant for production is durable; an in-process
  cache-like store may honestly say it is not;
* ``multi_process``: whether other OS processes reach the same runs through
  the store's URL (``url()``), as a fleet of workers does; every store meant
  for a fleet is, an in-process one is not;
* a few physical limits that tune the tests (the shortest lease the store's
  clock honours, how many concurrent actors to throw at it, how long to wait
  for a condition before giving up);
* ``known_gaps``: tests the store is known to fail today, each with a reason.

Nothing here can drop a test. A test the store cannot pass (a declared gap, or
a test that needs a feature declared absent) runs as a *strict* xfail: it must
fail, and the run fails the day it starts passing, so the declaration is
removed then. An unknown field is a ``TypeError`` when the test module is
imported, and an unknown test name in ``known_gaps`` is a collection error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

FEATURES: Mapping[str, str] = MappingProxyType(
    {
        "durable": (
            "runs outlive their factory: a brand-new factory on the same storage "
            "(reopen()) sees them, and claims race across factories"
        ),
        "multi_process": (
            "OS processes that open the store's URL (url()) share its runs: claims and "
            "begins race across processes with exactly one winner"
        ),
    }
)
"""The optional features a test can require, each with what it means."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """An adapter's declaration of its store's optional features and known gaps.

    ``lease_resolution`` is the lease (seconds) the lease-expiry tests use: the
    shortest lease whose expiry the store notices promptly. ``concurrency`` is
    how many concurrent claimers, factories and runs the race tests use
    (at least 2), including the OS processes of the multi-process races.
    ``wait_timeout`` bounds every wait for a condition (a lease to
    expire); a wait that runs out fails the test. ``known_gaps`` maps a suite
    test's name (``test_...``, without class or parameters) to the reason the
    store fails it; those tests become strict xfails.
    """

    durable: bool = True
    multi_process: bool = True
    lease_resolution: float = 0.05
    concurrency: int = 8
    wait_timeout: float = 10.0
    known_gaps: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.lease_resolution > 0:
            raise ValueError(f"lease_resolution must be > 0 seconds, got {self.lease_resolution!r}")
        if self.concurrency < 2:
            raise ValueError(f"concurrency must be at least 2 to race, got {self.concurrency!r}")
        if not self.wait_timeout > 0:
            raise ValueError(f"wait_timeout must be > 0 seconds, got {self.wait_timeout!r}")
        for name, reason in self.known_gaps.items():
            if not isinstance(name, str) or not name.startswith("test_"):
                raise ValueError(f"known_gaps keys are suite test names (test_...), got {name!r}")
            if not isinstance(reason, str) or not reason.strip():
                raise ValueError(f"known gap {name!r} needs a reason saying why the store fails it")
        # Frozen means frozen: a caller's dict must not change the declaration later.
        object.__setattr__(self, "known_gaps", MappingProxyType(dict(self.known_gaps)))
        for feature in FEATURES:
            if not isinstance(getattr(self, feature), bool):
                raise TypeError(f"capability {feature!r} must be True or False")

    def has(self, feature: str) -> bool:
        """Whether the store declares ``feature``; an unknown name is a ValueError."""
        if feature not in FEATURES:
            raise ValueError(
                f"unknown capability {feature!r}; known: {', '.join(sorted(FEATURES))}"
            )
        return bool(getattr(self, feature))
