"""Scripted agents for the executor-level tests: deterministic, interruptible.

Every tool call is recorded, so a test can tell which steps ran in which
worker; a tool can call ``executor.shutdown()`` at a chosen step to interrupt
the run exactly there (the step's result is saved before the run stops).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from outlast import JSON, Agent, Executor, Message, Phase, Plan, ScriptedModel, Tool, ToolCall
from outlast.messages import JSONObject


def call(tool: str, call_id: str, **arguments: JSON) -> Message:
    """An assistant reply that calls ``tool`` once."""
    return Message.assistant(None, (ToolCall(call_id, tool, dict(arguments)),))


@dataclass
class StepTool:
    """A tool named ``step`` that records each call's ``n`` and may interrupt.

    ``interrupt_at``: when a call's ``n`` equals it, the tool calls
    ``shutdown()`` on ``executor`` (the host shutting down mid-run).
    """

    executor: Executor | None = None
    interrupt_at: JSON = None
    seen: list[JSON] = field(default_factory=list)

    def handle(self, arguments: JSONObject) -> JSON:
        n = arguments.get("n")
        self.seen.append(n)
        if self.executor is not None and n == self.interrupt_at:
            self.executor.shutdown()
        return {"done": n}

    @property
    def tool(self) -> Tool:
        return Tool("step", "does one step of work", self.handle)


SINGLE_LOOP_SCRIPT: tuple[Message, ...] = (
    call("step", "c1", n=1),
    call("step", "c2", n=2),
    call("step", "c3", n=3),
    Message.assistant("all three steps done"),
)
"""Three tool steps, then the answer."""


def single_loop(steps: StepTool, script: Sequence[Message] = SINGLE_LOOP_SCRIPT) -> Agent:
    return Agent(model=ScriptedModel(script), tools=(steps.tool,), system="You do steps.")


PLAN_SCRIPT: Mapping[str, tuple[Message, ...]] = {
    "research": (call("step", "r1", n="research"), Message.assistant("three facts")),
    "draft": (
        call("step", "d1", n="draft-1"),
        call("step", "d2", n="draft-2"),
        Message.assistant("a draft citing three facts"),
    ),
    "review": (Message.assistant("approved: a draft citing three facts"),),
}
"""Three phases; the middle one takes two tool steps."""


def plan(steps: StepTool, names: Sequence[str] = ("research", "draft", "review")) -> Plan:
    phases = tuple(Phase(name, f"Do the {name} phase.", tools=(steps.tool,)) for name in names)
    return Plan(model=ScriptedModel(PLAN_SCRIPT), phases=phases)
