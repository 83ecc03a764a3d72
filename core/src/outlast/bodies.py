"""The body of a run: build its definition and drive its loop or plan.

The body knows nothing of stores: it reports progress through a
``checkpoint`` callback (the attempt's durable save).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from outlast import usage
from outlast.errors import DeadlineExceeded
from outlast.loop import run_loop, run_plan
from outlast.messages import JSON, Message, PhaseOutput
from outlast.ports import CheckpointState, ResumeState
from outlast.registry import Registry
from outlast.runs import Plan, RunDefinition
from outlast.steps import RunScope, Tally
from outlast.usage import Usage

Output = tuple[JSON, list[Message], tuple[PhaseOutput, ...], Usage]
"""What a body returns: the run's output, the last transcript, the phase
outputs, and the run's usage."""

Checkpoint = Callable[..., Awaitable[None]]
"""``checkpoint(state, *, now=False)``: the attempt's durable save; ``state``
is a CheckpointState or a function building one (called only when there is
a store to write to)."""


async def run_body(
    registry: Registry,
    kind: str,
    input: JSON,
    resume: ResumeState | None,
    checkpoint: Checkpoint,
    scope: RunScope | None = None,
) -> Output:
    """Build ``kind`` for ``input`` and run it, from ``resume`` when given.

    A build error, like every error of the run itself, propagates.
    """
    definition = await registry.build(kind, input)
    scope = scope or RunScope(kind=kind)
    if definition.deadline is None:
        return await _drive(definition, input, resume, checkpoint, scope)
    deadline = asyncio.timeout(definition.deadline)
    try:
        async with deadline:
            return await _drive(definition, input, resume, checkpoint, scope)
    except TimeoutError as exc:
        if not deadline.expired():
            raise  # a TimeoutError of a tool or the store, not the deadline's
        raise DeadlineExceeded(f"the run's deadline of {definition.deadline}s passed") from exc


async def _drive(
    definition: RunDefinition,
    input: JSON,
    resume: ResumeState | None,
    checkpoint: Checkpoint,
    scope: RunScope,
) -> Output:
    if isinstance(definition, Plan):
        phases, transcript = await run_plan(
            plan=definition, input=input, resume=resume, checkpoint=checkpoint, scope=scope
        )
        return phases[-1].output, transcript, phases, usage.of_run(phases, {})
    transcript = list(resume.history) if resume and resume.history else definition.opening(input)

    async def save(history: Sequence[Message], *, now: bool = False) -> None:
        # Built only when there is a store to write to (a copy of the history).
        await checkpoint(lambda: CheckpointState(tuple(history), ()), now=now)

    tally = Tally.of(transcript)
    final = await run_loop(
        model=definition.model,
        tools=definition.tools,
        transcript=transcript,
        max_steps=definition.max_steps,
        critic=definition.critic,
        checkpoint=save,
        scope=scope,
        tool_concurrency=definition.tool_concurrency,
        tally=tally,
    )
    return final.text, transcript, (), tally.usage
