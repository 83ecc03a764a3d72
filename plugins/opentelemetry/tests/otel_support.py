"""For the tests: what the plugin exported (:class:`Otel`), agents with a
tool, and a run carried by two workers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from outlast import (
    JSON,
    Agent,
    Executor,
    Message,
    RunResult,
    ScriptedModel,
    Shutdown,
    Tool,
    ToolCall,
)
from outlast.adapter import CheckpointerFactory
from outlast.messages import JSONObject
from outlast_opentelemetry import Telemetry


def call(tool: str, call_id: str = "c1") -> Message:
    """A model reply asking for one tool call."""
    return Message.assistant(
        None, (ToolCall(call_id, tool, {}),), usage={"input_tokens": 5, "output_tokens": 2}
    )


def looking_agent() -> Agent:
    """Calls the tool ``look`` once, then answers ``done``."""

    def look(arguments: JSONObject) -> JSON:
        return "found"

    return Agent(ScriptedModel([call("look"), Message.assistant("done")]), [Tool("look", "", look)])


async def two_workers(store: CheckpointerFactory, run_id: str = "r1") -> RunResult:
    """Worker A starts the run and shuts down in its tool call (the run is
    released); worker B, a second Executor on the same store, recovers it.
    Returns B's result."""
    first = Executor(store)

    async def slow(arguments: JSONObject) -> JSON:
        if not resumed:
            first.shutdown()
            await asyncio.Event().wait()  # stands for a long call; the shutdown ends it
        return "ok"

    def build() -> Agent:
        return Agent(
            ScriptedModel([call("slow"), Message.assistant("d")]), [Tool("slow", "", slow)]
        )

    resumed = False
    first.register("k", build())
    with pytest.raises(Shutdown):
        await first.run("k", "go", run_id=run_id)
    resumed = True
    second = Executor(store)
    second.register("k", build())
    report = await second.recover()
    assert [r.output for r in report.results] == ["d"], report
    return report.results[0]


DataPoint = NumberDataPoint | HistogramDataPoint


@dataclass
class Otel:
    """What the plugin exported: finished spans and collected metrics."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    telemetry: Telemetry

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        """Finished spans whose name starts with ``prefix``, in the order they ended."""
        return [s for s in self.spans() if s.name.startswith(prefix)]

    def attempts(self) -> list[ReadableSpan]:
        return self.named("outlast.attempt")

    def points(self, name: str) -> Sequence[DataPoint]:
        """The data points of the instrument ``name`` (none if it recorded nothing)."""
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        return list(metric.data.data_points)  # type: ignore[arg-type]
        return []

    def count(self, name: str, attributes: Mapping[str, object] | None = None) -> int:
        """A counter's value, summed over the points that have ``attributes``."""
        total = 0
        for point in self.points(name):
            assert isinstance(point, NumberDataPoint)
            if _matches(point, attributes or {}):
                total += int(point.value)
        return total

    def histogram(
        self, name: str, attributes: Mapping[str, object] | None = None
    ) -> HistogramDataPoint:
        """The one histogram point that has ``attributes``."""
        found = [p for p in self.points(name) if _matches(p, attributes or {})]
        assert len(found) == 1, f"{name}: {found}"
        point = found[0]
        assert isinstance(point, HistogramDataPoint)
        return point


def _matches(point: DataPoint, attributes: Mapping[str, object]) -> bool:
    got = dict(point.attributes or {})
    return all(got.get(key) == value for key, value in attributes.items())
