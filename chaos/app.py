"""The application the chaos workers run: ``outlast worker chaos.app:build``.

Two kinds, both built from the run's input alone (so every worker, and the
harness's uninterrupted reference run, builds the same definition):

* ``chaos.plan``: a Plan of three phases (collect, analyse, report);
* ``chaos.loop``: a single model/tool loop.

The input is ``{"run": <run id>, "steps": [tool steps per phase]}``. Every
step is one call of the tool ``work``, which takes a few tens of ms and, at
its start, appends one JSON line to this process's log; a finished phase's
output is a digest of its whole transcript chained to the earlier phases'
outputs, so a lost, doubled or reordered step changes the run's output.

An observer appends the run events (begin, claim, save, complete, release,
fail, lease_lost) to the same log. One ``os.write`` per line on an
``O_APPEND`` file: a ``kill -9`` never leaves half a line, and what was
written before it stays.

Configuration comes from the environment (the harness sets it):
``OUTLAST_CHAOS_LOG`` (log directory, required), ``OUTLAST_CHAOS_NAMESPACE``,
``OUTLAST_CHAOS_LEASE`` (seconds), ``OUTLAST_CHAOS_STEP_MS`` (a tool call's
duration).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import outlast
from outlast import JSON, Agent, Executor, Message, Phase, PhaseOutput, Plan, Tool, ToolCall
from outlast.plugins import plugin_manager

PLAN = "chaos.plan"
LOOP = "chaos.loop"
PHASES = ("collect", "analyse", "report")
LOOP_PHASE = "loop"
"""The phase name a loop's tool calls are logged under."""

LOG_ENV = "OUTLAST_CHAOS_LOG"
NAMESPACE_ENV = "OUTLAST_CHAOS_NAMESPACE"
LEASE_ENV = "OUTLAST_CHAOS_LEASE"
STEP_MS_ENV = "OUTLAST_CHAOS_STEP_MS"

DEFAULT_NAMESPACE = "chaos"
DEFAULT_LEASE = 2.0
DEFAULT_STEP_MS = 30.0

MAX_CRASHES = 1_000_000
"""The poison limit is not under test here: a run may be held by several
killed workers in a row and must still complete."""


class ProcessLog:
    """This process's JSON-lines log: one unbuffered append per record."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        # The pid alone could be reused by a later worker; the token keeps files apart.
        self.path = directory / f"worker-{self.pid}-{uuid.uuid4().hex[:8]}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, record: dict[str, JSON]) -> None:
        line = json.dumps({**record, "pid": self.pid, "t": time.time()}, separators=(",", ":"))
        os.write(self._fd, (line + "\n").encode())


class EventLogger:
    """An ``outlast_event`` observer writing this namespace's events to the log."""

    def __init__(self, log: ProcessLog, namespace: str) -> None:
        self.log = log
        self.namespace = namespace

    @outlast.hookimpl
    def outlast_event(self, event: outlast.Event) -> None:
        if event.namespace != self.namespace:
            return
        self.log.write(
            {
                "type": "event",
                "kind": event.kind.value,
                "run": event.run_id,
                "epoch": event.epoch,
                "duration": event.duration,
                "error": event.error,
            }
        )


class DigestModel:
    """A deterministic model, like ScriptedModel: its reply depends only on the
    transcript, so a resumed run gets the replies an uninterrupted one got.

    Reply N (N assistant messages so far) of a phase of S steps calls the tool
    ``work`` for step N while N < S; then it answers with the previous phase's
    output (the opening message's ``before`` meta, which holds the chain of
    all earlier phases) followed by ``phase:digest`` of the whole transcript.
    """

    def __init__(self, steps: dict[str, int]) -> None:
        self.steps = steps

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[dict[str, JSON]]
    ) -> Message:
        opening = messages[0]
        phase = str(opening.meta["phase"])
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn < self.steps[phase]:
            call = ToolCall(f"{phase}-{turn}", "work", {"phase": phase, "step": turn})
            return Message.assistant(None, (call,))
        transcript = json.dumps([m.to_json() for m in messages], sort_keys=True)
        digest = hashlib.sha256(transcript.encode()).hexdigest()[:12]
        before = opening.meta.get("before")
        return Message.assistant(f"{before} {phase}:{digest}" if before else f"{phase}:{digest}")


def work_tool(run_id: str, log: ProcessLog | None, step_seconds: float) -> Tool:
    """The tool every step calls: logs its start, takes ``step_seconds``, answers."""

    async def work(arguments: dict[str, JSON]) -> JSON:
        phase, step = arguments["phase"], arguments["step"]
        if log is not None:
            log.write({"type": "call", "run": run_id, "phase": phase, "step": step})
        if step_seconds > 0:
            await asyncio.sleep(step_seconds)
        return f"{run_id}/{phase}/{step} done"

    return Tool("work", "does one step of the run's work", work)


def _opening(run_id: str, phase: str, earlier: Sequence[PhaseOutput]) -> list[Message]:
    text = f"Run {run_id}: do the {phase} phase."
    before = str(earlier[-1].output) if earlier else ""
    return [Message.user(text, phase=phase, before=before)]


def register_kinds(executor: Executor, log: ProcessLog | None, step_seconds: float) -> None:
    """Register ``chaos.plan`` and ``chaos.loop`` on ``executor``."""

    def plan(input: JSON) -> Plan:
        assert isinstance(input, dict)
        run_id, steps = str(input["run"]), input["steps"]
        assert isinstance(steps, list) and len(steps) == len(PHASES)
        tool = work_tool(run_id, log, step_seconds)

        def phase_of(phase: str) -> Phase:
            return Phase(
                phase,
                lambda _input, earlier: _opening(run_id, phase, earlier),
                tools=[tool],
            )

        model = DigestModel({name: int(str(n)) for name, n in zip(PHASES, steps, strict=True)})
        return Plan(model, [phase_of(name) for name in PHASES])

    def loop(input: JSON) -> Agent:
        assert isinstance(input, dict)
        run_id, steps = str(input["run"]), input["steps"]
        assert isinstance(steps, list) and len(steps) == 1
        return Agent(
            DigestModel({LOOP_PHASE: int(str(steps[0]))}),
            tools=[work_tool(run_id, log, step_seconds)],
            prompt=lambda _input: _opening(run_id, LOOP_PHASE, ()),
        )

    executor.register(PLAN, plan)
    executor.register(LOOP, loop)


def reference_executor() -> Executor:
    """An executor without a store, logging nothing, with instant tools: the
    uninterrupted run every chaos run's output is compared with."""
    executor = Executor(None, namespace=os.environ.get(NAMESPACE_ENV, DEFAULT_NAMESPACE))
    register_kinds(executor, None, 0.0)
    return executor


def build(store: outlast.Store) -> Executor:
    """The worker's executor (``outlast worker chaos.app:build``), with its event log."""
    namespace = os.environ.get(NAMESPACE_ENV, DEFAULT_NAMESPACE)
    log = ProcessLog(Path(os.environ[LOG_ENV]))
    plugin_manager().register(EventLogger(log, namespace), name="chaos-event-log")
    executor = Executor(
        store,
        namespace=namespace,
        lease=float(os.environ.get(LEASE_ENV, DEFAULT_LEASE)),
        max_crashes=MAX_CRASHES,
    )
    step_seconds = float(os.environ.get(STEP_MS_ENV, DEFAULT_STEP_MS)) / 1000
    register_kinds(executor, log, step_seconds)
    return executor
