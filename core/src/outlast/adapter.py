"""Everything an adapter author needs, from one module.

Users import :mod:`outlast` (the executor, run definitions, ``open``, the
errors they catch). Adapter authors import this module, and nothing else of
outlast's internals::

    from outlast.adapter import (
        CheckpointState, Claim, LeaseLost, RunRecord, RunStart, SaveCursor,
        codec, hookimpl, transitions,
    )

What is here:

* the ports: :class:`Checkpointer` and :class:`CheckpointerFactory` (their
  docstrings are the contract) and the records they exchange;
* :mod:`~outlast.transitions`, the run record's state machine: a document
  store calls it; SQL or a script mirrors it;
* :class:`SaveCursor` / :class:`Delta`: what a save must write;
* :mod:`~outlast.codec`: the JSON format every store writes (no pickle);
* the store errors to raise, and the rules for ids (:mod:`~outlast.ids`);
* URL helpers (:func:`scheme_of`, :func:`merge_options`, :func:`redact`),
  :class:`BackendInfo` and :data:`hookimpl` for the plugin hooks.

The guide is docs/writing-an-adapter.md; the conformance suite
(``outlast-conformance``) proves an adapter.
"""

from outlast import codec, ids, transitions
from outlast.codec import FORMAT_VERSION
from outlast.delta import Delta, SaveCursor
from outlast.errors import (
    CheckpointStateError,
    ConfigurationError,
    CorruptCheckpoint,
    LeaseLost,
    NotWaiting,
    RunExists,
    RunFinished,
    RunNotFound,
    StoreError,
    StoreUnavailable,
    UnknownFormat,
)
from outlast.hookspecs import hookimpl
from outlast.messages import JSON, JSONObject, Message, PhaseOutput
from outlast.ports import (
    DEFAULT_NAMESPACE,
    ChangeNotifier,
    Checkpointer,
    CheckpointerFactory,
    CheckpointState,
    Claim,
    ResumeState,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    StoredRun,
)
from outlast.urls import BackendInfo, merge_options, query_options, redact, scheme_of

__all__ = [
    "DEFAULT_NAMESPACE",
    "FORMAT_VERSION",
    "JSON",
    "BackendInfo",
    "ChangeNotifier",
    "CheckpointState",
    "CheckpointStateError",
    "Checkpointer",
    "CheckpointerFactory",
    "Claim",
    "ConfigurationError",
    "CorruptCheckpoint",
    "Delta",
    "JSONObject",
    "LeaseLost",
    "Message",
    "NotWaiting",
    "PhaseOutput",
    "ResumeState",
    "RunExists",
    "RunFinished",
    "RunNotFound",
    "RunPage",
    "RunRecord",
    "RunStart",
    "RunStatus",
    "SaveCursor",
    "StoreError",
    "StoreUnavailable",
    "StoredRun",
    "UnknownFormat",
    "codec",
    "hookimpl",
    "ids",
    "merge_options",
    "query_options",
    "redact",
    "scheme_of",
    "transitions",
]
