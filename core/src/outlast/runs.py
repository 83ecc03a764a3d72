"""Run definitions: a single model/tool loop (:class:`Agent`) or a plan of
named phases (:class:`Plan`), and what a finished run returns.

A definition is registered with the executor under a *kind* name; the kind is
stored with the run so any worker can re-dispatch it after a crash.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from outlast import codec
from outlast.messages import JSON, Message, PhaseOutput
from outlast.model import Model
from outlast.tools import Tool

Critic = Callable[[Sequence[Message]], "str | Awaitable[str | None] | None"]
"""Called after every step with the transcript; return a reason to kill the run, or None."""

PhasePrompt = Callable[[JSON, Sequence[PhaseOutput]], "str | Sequence[Message]"]


@dataclass(frozen=True, slots=True)
class Agent:
    """One model/tool loop; its transcript is the run's progress.

    The loop opens with ``system`` (if any) and the messages ``prompt`` builds
    from the run's input (default: the input as one user message), then asks
    the model for a reply, runs the tools it calls (at most
    ``tool_concurrency`` at once), and repeats until a reply calls no tool.
    That reply's text is the run's output.
    """

    model: Model
    tools: Sequence[Tool] = ()
    system: str | None = None
    prompt: Callable[[JSON], Sequence[Message]] | None = None
    max_steps: int = 20
    deadline: float | None = None
    critic: Critic | None = None
    tool_concurrency: int = 4

    def __post_init__(self) -> None:
        _check_concurrency(self.tool_concurrency)

    def opening(self, input: JSON) -> list[Message]:
        messages = [Message.system(self.system)] if self.system else []
        if self.prompt is not None:
            messages.extend(self.prompt(input))
        else:
            messages.append(Message.user(input if isinstance(input, str) else codec.dumps(input)))
        return messages


@dataclass(frozen=True, slots=True)
class Phase:
    """One named phase of a plan: its own loop, fed the outputs of earlier phases.

    ``prompt`` is the phase's instructions: text (earlier outputs are appended
    as context), or a callable of (run input, earlier outputs) returning text
    or the opening messages. ``summarize`` may condense the finished phase's
    transcript into the PhaseOutput's summary.
    """

    name: str
    prompt: str | PhasePrompt
    tools: Sequence[Tool] = ()
    max_steps: int | None = None
    summarize: Callable[[Sequence[Message]], str | None] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Plan:
    """Named phases run in order; each phase's output feeds the later ones.

    The run's output is the last phase's output. Phase names may repeat.
    """

    model: Model
    phases: Sequence[Phase]
    system: str | None = None
    max_steps: int = 20
    deadline: float | None = None
    critic: Critic | None = None
    tool_concurrency: int = 4

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("a Plan needs at least one Phase")
        _check_concurrency(self.tool_concurrency)

    def opening(self, phase: Phase, input: JSON, earlier: Sequence[PhaseOutput]) -> list[Message]:
        messages = [Message.system(self.system)] if self.system else []
        if callable(phase.prompt):
            built = phase.prompt(input, earlier)
            if isinstance(built, str):
                messages.append(Message.user(built))
            else:
                messages.extend(built)
        else:
            text = phase.prompt
            if earlier:
                context = "\n".join(f"[{p.name}] {codec.dumps(p.output)}" for p in earlier)
                text = f"{text}\n\nEarlier phases:\n{context}"
            messages.append(Message.user(text))
        first = messages[0]
        messages[0] = Message(
            first.role,
            first.content,
            first.tool_calls,
            first.tool_call_id,
            first.name,
            {**first.meta, "phase": phase.name},
        )
        return messages


def _check_concurrency(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"tool_concurrency must be an integer >= 1, got {value!r}")


RunDefinition = Agent | Plan
Builder = Callable[[JSON], "RunDefinition | Awaitable[RunDefinition]"]
"""Builds the definition from the run's input; an error here is a build error
(the run is still finalized as failed)."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a finished run returns to its caller.

    ``resumed`` is True when the run continued a recovered record; ``durable``
    is False when it ran without a store (no store, or the store could not be
    reached). ``skipped_phases`` counts the completed phases restored instead
    of re-run. ``ran`` is False when nothing ran: the run id had completed
    before, and ``output`` is its stored result (its transcript and phases
    were cleared when it completed). ``usage`` is the token usage the
    run's model replies reported, summed over the whole run (every attempt,
    each reply once).
    """

    run_id: str
    kind: str
    output: JSON
    transcript: tuple[Message, ...]
    phases: tuple[PhaseOutput, ...] = ()
    epoch: int = 0
    durable: bool = False
    resumed: bool = False
    skipped_phases: int = 0
    ran: bool = True
    usage: dict[str, int] = field(default_factory=dict)
