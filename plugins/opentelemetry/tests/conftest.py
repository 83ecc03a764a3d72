"""Fixtures: the OpenTelemetry SDK's in-memory exporter and metric reader,
given to the plugin with ``configure`` (the global providers are never set),
and a fresh store of each built-in kind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_support import Otel

import outlast
import outlast_opentelemetry
from outlast.adapter import CheckpointerFactory
from outlast.plugins import plugin_manager
from outlast_opentelemetry import plugin


@pytest.fixture(autouse=True)
def registered() -> None:
    """The plugin is registered (by its entry point when installed; by hand when not)."""
    if plugin_manager().get_plugin("opentelemetry") is None:
        plugin_manager().register(plugin, name="opentelemetry")


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = outlast_opentelemetry.configure(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    yield Otel(exporter, reader, tracer_provider, meter_provider, telemetry)
    outlast_opentelemetry.configure()  # back to the global (no-op) providers
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[CheckpointerFactory]:
    """A fresh store of each built-in kind."""
    if request.param == "memory":
        url = f"memory://{uuid.uuid4().hex}"
    else:
        url = f"sqlite:///{tmp_path}/runs.db"
    factory = outlast.open(url)
    yield factory
    await factory.close()
