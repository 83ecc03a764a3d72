"""Where ``claim_next`` starts among the claimable runs, so a fleet does not herd.

S3 has no ``SKIP LOCKED``: a worker lists the claimable runs and claims one
with a compare-and-swap. Workers that list at the same moment see the same
candidates, oldest first; if all of them tried the oldest, one would win and
the others would lose a request each and move on to the second together, and
so on: a herd that costs about N² requests to hand out N runs.

So each worker starts at a random position among the first ``window``
candidates and goes on from there (wrapping round to the older ones it
skipped). The window adapts to the contention the worker sees, the way a
backoff does: it starts at 1 (exact oldest-first order, what ``interrupted``
lists, for a worker that has the runs to itself), doubles at every claim the
worker loses (another worker took the run first), up to ``limit``, and halves
whenever a claim wins at the first try. A busy fleet so spreads over about as
many of the oldest runs as there are workers contending, and a quiet one
keeps strict order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

DEFAULT_LIMIT = 32
"""The widest window: how many of the oldest runs a worker may skip at first."""


class ClaimSpread:
    """One factory's start window (its claim_next calls share what they learn)."""

    def __init__(self, limit: int = DEFAULT_LIMIT, rng: random.Random | None = None) -> None:
        if limit < 1:
            raise ValueError(f"the window holds at least one candidate, got {limit!r}")
        self.limit = limit
        self.window = 1
        self._rng = rng or random.Random()  # noqa: S311 - spreading load, not security

    def order(self, candidates: Sequence[T]) -> list[T]:
        """``candidates`` (oldest first) in the order to try them: from a random
        start within the window, then the rest, then the older ones skipped."""
        if not candidates:
            return []
        start = self._rng.randrange(min(self.window, len(candidates)))
        return [*candidates[start:], *candidates[:start]]

    def lost(self) -> None:
        """A claim lost to another worker: widen the window."""
        self.window = min(self.window * 2, self.limit)

    def won(self, *, first_try: bool) -> None:
        """A claim won; at the first try it narrows the window again."""
        if first_try:
            self.window = max(self.window // 2, 1)
