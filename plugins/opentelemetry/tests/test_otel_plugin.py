"""The plugin as installed: its entry point, and the hook contract (a run
never fails because of telemetry)."""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.util.types import Attributes
from otel_support import Otel, looking_agent

import outlast_opentelemetry
from outlast import Event, Executor
from outlast.adapter import CheckpointerFactory
from outlast.messages import MARKER
from outlast.plugins import plugin_manager
from outlast_opentelemetry import plugin


def test_the_distribution_registers_its_entry_point() -> None:
    [entry_point] = importlib.metadata.entry_points(group="outlast", name="opentelemetry")
    assert entry_point.value == "outlast_opentelemetry.plugin"
    assert entry_point.load() is plugin
    assert entry_point.dist is not None and entry_point.dist.name == "outlast-opentelemetry"


def test_a_fresh_process_loads_the_plugin_from_its_entry_point() -> None:
    """Nothing registers it by hand there: outlast's plugin manager finds it."""
    code = (
        "from outlast.plugins import broken_plugins, plugin_manager\n"
        "print(plugin_manager().get_plugin('opentelemetry').__name__)\n"
        "print(broken_plugins())\n"
    )
    out = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    assert out[:2] == ["outlast_opentelemetry.plugin", "[]"]


def test_the_plugin_in_this_process_is_the_module() -> None:
    assert plugin_manager().get_plugin("opentelemetry") is plugin


class BrokenTracer(trace.Tracer):
    """A tracer whose every span fails: a bug of this package or of an SDK."""

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("tracer bug")

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer bug")


class BrokenTracerProvider(trace.TracerProvider):
    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | Sequence[object] | None = None,
    ) -> trace.Tracer:
        return BrokenTracer()


@pytest.mark.asyncio
async def test_a_broken_tracer_never_breaks_a_run(
    store: CheckpointerFactory, otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    outlast_opentelemetry.configure(
        tracer_provider=BrokenTracerProvider(), meter_provider=otel.meter_provider
    )
    executor = Executor(store)
    executor.register("k", looking_agent())
    with caplog.at_level(logging.DEBUG, logger="outlast_opentelemetry"):
        result = await executor.run("k", "go", run_id="r1")
    assert result.output == "done"
    assert not [m for m in result.transcript if m.role == MARKER]  # no span: no context
    ours = [r for r in caplog.records if r.name == "outlast_opentelemetry"]
    assert ours and "tracer bug" in (ours[0].exc_text or "")
    # at most one WARNING per process: the rest at DEBUG
    assert sum(r.levelno == logging.WARNING for r in ours) <= 1


@pytest.mark.asyncio
async def test_a_failing_run_context_hook_stores_nothing_and_the_run_goes_on(
    store: CheckpointerFactory, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(event: Event) -> dict[str, str] | None:
        raise RuntimeError("context bug")

    monkeypatch.setattr(otel.telemetry, "context_of", broken)
    executor = Executor(store)
    executor.register("k", looking_agent())
    result = await executor.run("k", "go", run_id="r1")
    assert result.output == "done"
    assert not [m for m in result.transcript if m.role == MARKER]
    assert len(otel.attempts()) == 1


@pytest.mark.asyncio
async def test_without_an_sdk_a_run_stores_no_context(store: CheckpointerFactory) -> None:
    """Installed but not set up (no global providers): no-op spans, nothing
    added to the run's transcript."""
    outlast_opentelemetry.configure()
    executor = Executor(store)
    executor.register("k", looking_agent())
    result = await executor.run("k", "go", run_id="r1")
    assert result.output == "done"
    assert not [m for m in result.transcript if m.role == MARKER]
