"""The bookkeeping on its own, with made-up events: the limits that keep
runs that never end from growing memory, and what a bad input does."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest
from opentelemetry.trace import StatusCode
from otel_support import Otel

import outlast_opentelemetry
from outlast import JSON, Event, EventKind
from outlast_opentelemetry import Telemetry


def event(
    kind: EventKind,
    run_id: str = "r1",
    *,
    epoch: int = 1,
    attempt: int = 1,
    error: str | None = None,
    at: float | None = None,
    detail: Mapping[str, JSON] | None = None,
) -> Event:
    return Event(
        kind,
        run_id,
        "default",
        epoch,
        0.001,
        error,
        at=time.time() if at is None else at,
        attempt=attempt,
        detail={} if detail is None else detail,
    )


def start(run_id: str = "r1", **detail: JSON) -> Event:
    return event(EventKind.ATTEMPT_START, run_id, detail={"kind": "k", **detail})


def small(otel: Otel, **settings: object) -> Telemetry:
    return outlast_opentelemetry.configure(
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        **settings,  # type: ignore[arg-type]
    )


def test_attempts_that_never_end_are_ended_unfinished_over_the_limit(otel: Otel) -> None:
    telemetry = small(otel, max_attempts=2)
    for run_id in ("r1", "r2", "r3"):
        telemetry.observe(start(run_id))
    assert telemetry.open_attempts == 2
    [oldest] = otel.attempts()
    assert dict(oldest.attributes or {})["outlast.run.id"] == "r1"
    assert dict(oldest.attributes or {})["outlast.attempt.unfinished"] is True
    # its late end is counted, and ends nothing twice
    telemetry.observe(
        event(EventKind.ATTEMPT_END, "r1", detail={"kind": "k", "outcome": "completed"})
    )
    assert len(otel.attempts()) == 1
    assert otel.count("outlast.attempts.ended", {"outlast.outcome": "completed"}) == 1
    # a late operation of it is a span of its own
    telemetry.observe(event(EventKind.SAVE, "r1"))
    [save] = otel.named("outlast.save")
    assert save.parent is None


def test_begins_and_claims_whose_attempt_never_starts_are_exported_over_the_limit(
    otel: Otel,
) -> None:
    telemetry = small(otel, max_attempts=2)
    for run_id in ("r1", "r2", "r3"):
        telemetry.observe(event(EventKind.CLAIM, run_id, epoch=2, attempt=0))
    assert telemetry.pending_attempts == 2
    [claim] = otel.named("outlast.claim")
    assert claim.parent is None
    assert dict(claim.attributes or {})["outlast.run.id"] == "r1"
    assert otel.count("outlast.runs.claimed") == 1  # counted as it is exported


def test_a_pending_claim_is_exported_on_its_own_after_the_timeout(otel: Otel) -> None:
    telemetry = small(otel, pending_timeout=30)
    telemetry.observe(event(EventKind.CLAIM, "r1", epoch=2, at=time.time() - 31))
    telemetry.observe(event(EventKind.CLAIM, "r2", epoch=2))
    assert telemetry.pending_attempts == 1  # r1's expired when r2's came
    [claim] = otel.named("outlast.claim")
    assert dict(claim.attributes or {})["outlast.run.id"] == "r1"


def test_a_failed_begin_is_an_error_span_of_its_own_at_once(otel: Otel) -> None:
    telemetry = small(otel)
    telemetry.observe(event(EventKind.BEGIN, error="run 'r1' exists"))
    assert telemetry.pending_attempts == 0
    [begin] = otel.spans()
    assert begin.name == "outlast.begin" and begin.parent is None
    assert begin.status.status_code is StatusCode.ERROR
    assert begin.status.description == "run 'r1' exists"


def test_a_claim_failed_before_its_attempt_starts_is_an_error_attempt(otel: Otel) -> None:
    """A poison run or a cancel request: the claim's run is failed at once."""
    telemetry = small(otel)
    telemetry.observe(event(EventKind.CLAIM, epoch=3, attempt=0))
    telemetry.observe(event(EventKind.FAIL, epoch=3, attempt=0))
    assert telemetry.pending_attempts == 0 and telemetry.open_attempts == 0
    [attempt] = otel.attempts()
    assert attempt.name == "outlast.attempt"
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.status.description == "the run failed before its attempt started"
    assert [s.name for s in otel.spans() if s.parent is not None] == [
        "outlast.claim",
        "outlast.fail",
    ]
    assert otel.count("outlast.runs.failed", {"outlast.namespace": "default"}) == 1


@pytest.mark.parametrize(
    "previous",
    [
        "not an object",
        {"traceparent": "garbage"},
        {"traceparent": 7},
        {"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"},
    ],
)
def test_a_bad_previous_context_is_no_link_and_no_error(otel: Otel, previous: JSON) -> None:
    telemetry = small(otel)
    telemetry.observe(start(previous=previous))
    telemetry.observe(event(EventKind.ATTEMPT_END, detail={"kind": "k", "outcome": "completed"}))
    [attempt] = otel.attempts()
    assert not attempt.links


def test_the_run_context_is_given_only_for_a_started_attempt(otel: Otel) -> None:
    telemetry = small(otel)
    begun = start()
    assert telemetry.context_of(begun) is None  # not started here
    telemetry.observe(begun)
    context = telemetry.context_of(begun)
    assert context is not None and set(context) == {"traceparent"}
    assert telemetry.context_of(event(EventKind.SAVE)) is None


def test_without_an_sdk_no_context_is_given() -> None:
    """The global providers of a process that set none are no-ops: spans
    are invalid, and nothing is stored with the run."""
    telemetry = Telemetry()
    begun = start()
    telemetry.observe(begun)
    assert telemetry.context_of(begun) is None
    telemetry.observe(event(EventKind.ATTEMPT_END, detail={"kind": "k", "outcome": "completed"}))
    assert telemetry.open_attempts == 0


def test_reconfiguring_ends_what_was_open(otel: Otel) -> None:
    telemetry = small(otel)
    telemetry.observe(start("r1"))
    telemetry.observe(event(EventKind.CLAIM, "r2", epoch=2))
    replacement = outlast_opentelemetry.configure()
    assert outlast_opentelemetry.telemetry() is replacement
    assert telemetry.open_attempts == 0 and telemetry.pending_attempts == 0
    [attempt] = otel.attempts()
    assert dict(attempt.attributes or {})["outlast.attempt.unfinished"] is True
    assert [s.name for s in otel.named("outlast.claim")] == ["outlast.claim"]


@pytest.mark.parametrize(
    ("setting", "value"), [("max_attempts", 0), ("pending_timeout", 0), ("pending_timeout", -1)]
)
def test_bad_settings_are_refused(setting: str, value: int) -> None:
    with pytest.raises(ValueError, match=setting):
        outlast_opentelemetry.configure(**{setting: value})  # type: ignore[arg-type]
