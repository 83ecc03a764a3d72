"""OpenTelemetry for outlast: a span per run attempt with a child per model
call, tool call and store operation; attempts of one run linked across the
workers that carried it; metrics of store latency and run outcomes.

Installing the distribution is enough: it registers itself in the ``outlast``
entry-point group and uses the global TracerProvider and MeterProvider.
:func:`configure` gives it providers of its own (tests) or changes a setting.
"""

from outlast_opentelemetry.config import configure, telemetry
from outlast_opentelemetry.names import SCOPE
from outlast_opentelemetry.telemetry import Telemetry

__all__ = ["SCOPE", "Telemetry", "configure", "telemetry"]
