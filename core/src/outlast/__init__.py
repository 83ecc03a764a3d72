"""outlast: LLM-agent runs that outlast the process running them.

This module is the user's door: the executor, run definitions, the model and
tool types, ``open`` and the errors an application catches. Adapter authors
use :mod:`outlast.adapter`.
"""

from outlast.errors import (
    Cancelled,
    ConfigurationError,
    CorruptCheckpoint,
    CriticKilled,
    DeadlineExceeded,
    LeaseLost,
    ModelError,
    NotWaiting,
    OutlastError,
    PoisonRun,
    ResultTimeout,
    ResumeMismatch,
    RunError,
    RunExists,
    RunFailed,
    RunFinished,
    RunNotFound,
    RunWaiting,
    Shutdown,
    StepLimitExceeded,
    StoreError,
    StoreUnavailable,
    UnknownBackend,
    WaitTimedOut,
)
from outlast.events import Event, EventKind
from outlast.executor import Executor
from outlast.hookspecs import hookimpl
from outlast.messages import JSON, Message, PhaseOutput, ToolCall
from outlast.model import Model, ScriptedModel
from outlast.observers import Observer, observe
from outlast.plugins import backends, broken_plugins, open
from outlast.ports import DEFAULT_NAMESPACE, RunPage, RunRecord, RunStatus, StoredRun
from outlast.recovery import RecoveryReport
from outlast.runs import Agent, Phase, Plan, RunResult
from outlast.store import Store
from outlast.sync import SyncExecutor
from outlast.throttle import ThrottledCheckpointer
from outlast.tools import Tool, ToolContext, ToolError
from outlast.urls import DEFAULT_URL, BackendInfo
from outlast.waiting import AwaitInput

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_URL",
    "JSON",
    "Agent",
    "AwaitInput",
    "BackendInfo",
    "Cancelled",
    "ConfigurationError",
    "CorruptCheckpoint",
    "CriticKilled",
    "DeadlineExceeded",
    "Event",
    "EventKind",
    "Executor",
    "LeaseLost",
    "Message",
    "Model",
    "ModelError",
    "NotWaiting",
    "Observer",
    "OutlastError",
    "Phase",
    "PhaseOutput",
    "Plan",
    "PoisonRun",
    "RecoveryReport",
    "ResultTimeout",
    "ResumeMismatch",
    "RunError",
    "RunExists",
    "RunFailed",
    "RunFinished",
    "RunNotFound",
    "RunPage",
    "RunRecord",
    "RunResult",
    "RunStatus",
    "RunWaiting",
    "ScriptedModel",
    "Shutdown",
    "StepLimitExceeded",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredRun",
    "SyncExecutor",
    "ThrottledCheckpointer",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "UnknownBackend",
    "WaitTimedOut",
    "backends",
    "broken_plugins",
    "hookimpl",
    "observe",
    "open",
]
