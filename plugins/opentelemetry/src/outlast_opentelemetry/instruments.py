"""Metrics from outlast events: store latencies and counts of runs by how
their records changed."""

from __future__ import annotations

from opentelemetry.metrics import Counter, Meter
from opentelemetry.util.types import Attributes

from outlast import Event, EventKind
from outlast_opentelemetry import names

_RUN_COUNTERS = {
    EventKind.COMPLETE: (names.RUNS_COMPLETED, "Runs completed (the record's completion written)"),
    EventKind.FAIL: (names.RUNS_FAILED, "Runs failed (the record's failure written)"),
    EventKind.RELEASE: (names.RUNS_RELEASED, "Runs released for another worker (shutdown)"),
    EventKind.WAIT: (names.RUNS_WAITING, "Runs parked waiting for outside input"),
}


class Instruments:
    """The instruments of one meter, and how each event counts."""

    def __init__(self, meter: Meter) -> None:
        self.save_duration = meter.create_histogram(
            names.SAVE_DURATION,
            unit="s",
            description="Duration of a run's checkpoint save",
            explicit_bucket_boundaries_advisory=names.SECONDS_BUCKETS,
        )
        self.claim_duration = meter.create_histogram(
            names.CLAIM_DURATION,
            unit="s",
            description="Duration of a won claim of a run (asked until granted)",
            explicit_bucket_boundaries_advisory=names.SECONDS_BUCKETS,
        )
        self.started = meter.create_counter(
            names.RUNS_STARTED, unit="{run}", description="Runs whose first attempt started"
        )
        self.claimed = meter.create_counter(
            names.RUNS_CLAIMED, unit="{run}", description="Runs claimed to be continued here"
        )
        self.leases_lost = meter.create_counter(
            names.LEASES_LOST,
            unit="{lease}",
            description="Writes or renewals refused because another worker took the run",
        )
        self.attempts_ended = meter.create_counter(
            names.ATTEMPTS_ENDED, unit="{attempt}", description="Attempts ended, by outcome"
        )
        self.runs: dict[EventKind, Counter] = {
            kind: meter.create_counter(name, unit="{run}", description=description)
            for kind, (name, description) in _RUN_COUNTERS.items()
        }

    def record(self, event: Event, kind: str | None) -> None:
        """Count or measure ``event`` of a run of ``kind`` (None: not known)."""
        attributes: dict[str, str | bool] = {names.NAMESPACE: event.namespace}
        if kind is not None:
            attributes[names.RUN_KIND] = kind
        if event.kind is EventKind.SAVE:
            self.save_duration.record(event.duration, _with_error(attributes, event))
        elif event.kind is EventKind.CLAIM:
            self.claim_duration.record(event.duration, _with_error(attributes, event))
            self.claimed.add(1, attributes)
        elif event.kind is EventKind.ATTEMPT_START:
            if event.attempt == 1:
                self.started.add(1, attributes)
        elif event.kind is EventKind.ATTEMPT_END:
            outcome = event.detail.get("outcome")
            if isinstance(outcome, str):
                attributes[names.OUTCOME] = outcome
            self.attempts_ended.add(1, attributes)
        elif event.kind is EventKind.LEASE_LOST:
            self.leases_lost.add(1, attributes)
        elif event.kind in self.runs and event.error is None:
            self.runs[event.kind].add(1, attributes)


def _with_error(attributes: dict[str, str | bool], event: Event) -> Attributes:
    return {**attributes, names.ERROR: event.error is not None}
