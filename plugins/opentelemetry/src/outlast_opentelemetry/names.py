"""The names this package emits: instrumentation scope, span names, attribute
keys and metric instruments (the README's tables list the same)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

SCOPE = "outlast"
"""The instrumentation scope of every span and instrument."""

try:
    SCOPE_VERSION: str | None = version("outlast-opentelemetry")
except PackageNotFoundError:  # imported from a source tree, not installed
    SCOPE_VERSION = None

# -- spans ------------------------------------------------------------------------

ATTEMPT_SPAN = "outlast.attempt"
"""An attempt's span: ``outlast.attempt <run kind>`` (the bare name when the
kind is not known: an attempt that ended before it started)."""

# -- attributes (spans, and metrics where noted) ----------------------------------

RUN_ID = "outlast.run.id"
NAMESPACE = "outlast.namespace"  # also on metrics
RUN_KIND = "outlast.run.kind"  # also on metrics, when known
EPOCH = "outlast.epoch"
ATTEMPT = "outlast.attempt"
RESUMED = "outlast.resumed"
OUTCOME = "outlast.outcome"  # also on outlast.attempts.ended
UNFINISHED = "outlast.attempt.unfinished"
"""True on an attempt span this package ended itself (over the size limit,
superseded, or at reconfiguration) because its ``attempt_end`` never came."""
OPERATION = "outlast.operation"
"""A child span's event kind: ``save``, ``claim``, ``model_call``..."""
ERROR = "outlast.error"  # on the latency histograms: the operation failed
LINK_TYPE = "outlast.link.type"
PREVIOUS_ATTEMPT = "previous_attempt"

MODEL = "outlast.model"
MODEL_TOOL_CALLS = "outlast.model.tool_calls"
USAGE_PREFIX = "outlast.usage."
"""Each integer count of a model reply's usage: ``outlast.usage.input_tokens``..."""
GEN_AI_USAGE = {
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
}
"""The usage counts the OpenTelemetry GenAI conventions name too."""

TOOL_NAME = "outlast.tool.name"
TOOL_CALL_ID = "outlast.tool.call_id"
TOOL_OUTCOME = "outlast.tool.outcome"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"

# -- metrics ------------------------------------------------------------------------

SAVE_DURATION = "outlast.save.duration"
CLAIM_DURATION = "outlast.claim.duration"
RUNS_STARTED = "outlast.runs.started"
RUNS_CLAIMED = "outlast.runs.claimed"
RUNS_COMPLETED = "outlast.runs.completed"
RUNS_FAILED = "outlast.runs.failed"
RUNS_RELEASED = "outlast.runs.released"
RUNS_WAITING = "outlast.runs.waiting"
LEASES_LOST = "outlast.leases.lost"
ATTEMPTS_ENDED = "outlast.attempts.ended"

SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Histogram buckets for store latencies in seconds (the SDK's default
buckets are made for milliseconds: every save would land in the first)."""
