"""Samples, windows and summaries: medians with the noise (min-max across repetitions)."""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

Sample = tuple[int, float]
"""(transcript length in messages when the operation ran, seconds)."""


def tolerance(length: int) -> int:
    """Half-width of the window of lengths that counts as ``length`` messages."""
    return max(10, length // 20)


def window(samples: list[Sample], length: int) -> list[float]:
    """The times of the samples taken at about ``length`` messages."""
    half = tolerance(length)
    return [t for n, t in samples if abs(n - length) <= half]


@dataclass
class Summary:
    """A median over every sample, and the least and greatest per-repetition median."""

    median: float
    low: float
    high: float
    count: int

    def scaled(self, factor: float) -> Summary:
        return Summary(self.median * factor, self.low * factor, self.high * factor, self.count)


def summarize(per_rep: list[list[float]]) -> Summary | None:
    reps = [values for values in per_rep if values]
    if not reps:
        return None
    medians = [statistics.median(values) for values in reps]
    pooled = [v for values in reps for v in values]
    return Summary(statistics.median(pooled), min(medians), max(medians), len(pooled))


@dataclass
class Series:
    """One target's samples, per repetition."""

    reps: dict[int, list[Sample]] = field(default_factory=lambda: defaultdict(list))

    def add(self, rep: int, length: int, seconds: float) -> None:
        self.reps[rep].append((length, seconds))

    def at(self, length: int) -> Summary | None:
        return summarize([window(samples, length) for samples in self.reps.values()])

    def overall(self) -> Summary | None:
        """Every sample, whatever the length (for a floor, which does not grow)."""
        return summarize([[t for _, t in samples] for samples in self.reps.values()])

    def longest(self) -> int:
        return max((n for samples in self.reps.values() for n, _ in samples), default=0)

    def curve(self, bins: int = 24, least: int = 5) -> list[tuple[float, float]]:
        """Median seconds per log-spaced bin of lengths, every repetition pooled; a bin
        with fewer than ``least`` samples is merged into the next (the last: the previous)."""
        pooled = sorted(s for samples in self.reps.values() for s in samples)
        if not pooled:
            return []
        top = max(n for n, _ in pooled)
        edges = sorted({round(top ** (i / bins)) for i in range(bins + 1)} | {0, top + 1})
        groups: list[list[Sample]] = []
        carried: list[Sample] = []
        for lo, hi in itertools.pairwise(edges):
            carried += [(n, t) for n, t in pooled if lo <= n < hi]
            if len(carried) >= least:
                groups.append(carried)
                carried = []
        if carried:
            if groups:
                groups[-1] += carried
            else:
                groups.append(carried)
        return [
            (statistics.median(n for n, _ in group), statistics.median(t for _, t in group))
            for group in groups
        ]


def values_summary(values: list[float]) -> Summary | None:
    """One value per repetition: their median, min and max."""
    if not values:
        return None
    return Summary(statistics.median(values), min(values), max(values), len(values))
