"""Metrics of real runs: save and claim latency histograms (seconds) and the
run counters, with namespace and kind."""

from __future__ import annotations

import math

import pytest
from otel_support import Otel, call, looking_agent, two_workers

import outlast
from outlast import JSON, Agent, Event, EventKind, Executor, Message, ScriptedModel, Tool
from outlast.adapter import CheckpointerFactory
from outlast.messages import JSONObject

pytestmark = pytest.mark.asyncio

RUN = {"outlast.namespace": "default", "outlast.run.kind": "k"}


async def test_a_completed_run_counts_once_and_measures_every_save(
    store: CheckpointerFactory, otel: Otel
) -> None:
    seen: list[Event] = []
    executor = Executor(store)
    executor.register("k", looking_agent())
    with outlast.observe(seen.append):
        await executor.run("k", "go", run_id="r1")

    saves = [e.duration for e in seen if e.kind is EventKind.SAVE]
    assert len(saves) == 3
    point = otel.histogram("outlast.save.duration", {**RUN, "outlast.error": False})
    assert point.count == 3
    assert math.isclose(point.sum, sum(saves))
    assert point.explicit_bounds[0] == 0.0005 and point.explicit_bounds[-1] == 10.0
    assert otel.count("outlast.runs.started", RUN) == 1
    assert otel.count("outlast.runs.completed", RUN) == 1
    assert otel.count("outlast.attempts.ended", {**RUN, "outlast.outcome": "completed"}) == 1
    for name in ("outlast.runs.failed", "outlast.runs.released", "outlast.runs.claimed"):
        assert otel.count(name) == 0, name
    assert otel.points("outlast.claim.duration") == []


async def test_a_failed_run_is_counted_failed(store: CheckpointerFactory, otel: Otel) -> None:
    def broken(arguments: JSONObject) -> JSON:
        raise RuntimeError("boom")

    executor = Executor(store, namespace="billing")
    executor.register(
        "k",
        Agent(
            ScriptedModel([call("broken"), Message.assistant("x")]), [Tool("broken", "", broken)]
        ),
    )
    with pytest.raises(RuntimeError):
        await executor.run("k", "go", run_id="r1")
    billing = {"outlast.namespace": "billing", "outlast.run.kind": "k"}
    assert otel.count("outlast.runs.failed", billing) == 1
    assert otel.count("outlast.runs.completed") == 0
    assert otel.count("outlast.attempts.ended", {**billing, "outlast.outcome": "failed"}) == 1


async def test_a_run_carried_by_two_workers_is_released_claimed_and_completed(
    store: CheckpointerFactory, otel: Otel
) -> None:
    seen: list[Event] = []
    with outlast.observe(seen.append):
        await two_workers(store)

    assert otel.count("outlast.runs.started", RUN) == 1  # the first attempt only
    assert otel.count("outlast.runs.released", RUN) == 1
    assert otel.count("outlast.runs.claimed", RUN) == 1
    assert otel.count("outlast.runs.completed", RUN) == 1
    assert otel.count("outlast.attempts.ended", {"outlast.outcome": "released"}) == 1
    assert otel.count("outlast.attempts.ended", {"outlast.outcome": "completed"}) == 1
    [claim] = [e for e in seen if e.kind is EventKind.CLAIM]
    point = otel.histogram("outlast.claim.duration", {**RUN, "outlast.error": False})
    assert point.count == 1 and math.isclose(point.sum, claim.duration)
    saves = [e.duration for e in seen if e.kind is EventKind.SAVE]
    point = otel.histogram("outlast.save.duration", RUN)
    assert point.count == len(saves) and math.isclose(point.sum, sum(saves))
