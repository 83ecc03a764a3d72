"""The model/tool loop and the plan driver, free of any storage concern.

Both report progress through a ``checkpoint`` callback the executor supplies;
the callback makes the progress durable before the loop goes on.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence

from outlast import codec
from outlast.errors import CriticKilled, ModelError, OutlastError, ResumeMismatch, StepLimitExceeded
from outlast.messages import JSON, Message, PhaseOutput, ToolCall
from outlast.model import Model, Tool, ToolError
from outlast.ports import CheckpointState, ResumeState
from outlast.runs import Critic, Plan

Checkpoint = Callable[[CheckpointState], Awaitable[None]]


async def run_loop(
    *,
    model: Model,
    tools: Sequence[Tool],
    transcript: list[Message],
    max_steps: int,
    critic: Critic | None,
    checkpoint: Callable[[Sequence[Message]], Awaitable[None]],
) -> Message:
    """Ask the model, run the tools it calls, repeat until a reply calls none.

    ``transcript`` is extended in place and handed to ``checkpoint`` after
    every step (a reply plus its tool results). A transcript that already
    ends with a final reply (restored from a checkpoint) finishes at once.
    Steps already in the transcript count against ``max_steps``.
    """
    by_name = {tool.name: tool for tool in tools}
    specs = [tool.spec for tool in tools]
    while True:
        if transcript and transcript[-1].role == "assistant" and not transcript[-1].tool_calls:
            return transcript[-1]
        steps = sum(1 for message in transcript if message.role == "assistant")
        if steps >= max_steps:
            raise StepLimitExceeded(f"the model/tool loop used all {max_steps} steps")
        reply = await _ask(model, transcript, specs)
        step = [reply]
        for call in reply.tool_calls:
            step.append(await _call(by_name, call))
        transcript.extend(step)
        await checkpoint(transcript)
        if critic is not None:
            verdict = critic(transcript)
            reason = await verdict if inspect.isawaitable(verdict) else verdict
            if reason:
                raise CriticKilled(f"the critic stopped the run: {reason}")


async def _ask(
    model: Model, transcript: Sequence[Message], specs: list[dict[str, JSON]]
) -> Message:
    try:
        reply = await model.complete(tuple(transcript), specs)
    except (OutlastError, asyncio.CancelledError):
        raise
    except Exception as exc:
        raise ModelError(f"the model raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(reply, Message) or reply.role != "assistant":
        raise ModelError(f"the model must return an assistant Message, got {reply!r:.200}")
    return reply


async def _call(tools: dict[str, Tool], call: ToolCall) -> Message:
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools)) or "none"
        return Message.tool(
            call.id, call.name, f"error: no tool named {call.name!r} (tools: {known})"
        )
    try:
        result = await tool.call(call.arguments)
    except ToolError as exc:
        return Message.tool(call.id, call.name, f"error: {exc}")
    return Message.tool(
        call.id, call.name, result if isinstance(result, str) else codec.dumps(result)
    )


async def run_plan(
    *,
    plan: Plan,
    input: JSON,
    resume: ResumeState | None,
    checkpoint: Checkpoint,
) -> tuple[tuple[PhaseOutput, ...], list[Message]]:
    """Run the plan's phases in order; returns the outputs and the last transcript.

    On resume, completed phases are skipped by position (they must be a
    prefix of the plan, else ResumeMismatch) and the interrupted phase
    continues from its saved transcript, or starts over when none was saved.
    A fresh run skips nothing, whatever the phase names.
    """
    completed = resume.completed_phases if resume else ()
    check_prefix(plan, completed)
    outputs = list(completed)
    saved_history = list(resume.history) if resume else []
    transcript: list[Message] = []
    for index in range(len(completed), len(plan.phases)):
        phase = plan.phases[index]
        if index == len(completed) and saved_history:
            transcript = saved_history
        else:
            transcript = plan.opening(phase, input, outputs)
        done = tuple(outputs)

        async def save_step(
            history: Sequence[Message], done: tuple[PhaseOutput, ...] = done
        ) -> None:
            await checkpoint(CheckpointState(tuple(history), done))

        final = await run_loop(
            model=plan.model,
            tools=phase.tools,
            transcript=transcript,
            max_steps=phase.max_steps or plan.max_steps,
            critic=plan.critic,
            checkpoint=save_step,
        )
        summary = phase.summarize(transcript) if phase.summarize else None
        outputs.append(PhaseOutput(phase.name, final.text, summary))
        await checkpoint(CheckpointState((), tuple(outputs)))
    return tuple(outputs), transcript


def check_prefix(plan: Plan, completed: Sequence[PhaseOutput]) -> None:
    """Raise ResumeMismatch unless ``completed`` names a prefix of the plan's phases."""
    planned = [phase.name for phase in plan.phases]
    saved = [phase.name for phase in completed]
    if saved != planned[: len(saved)]:
        raise ResumeMismatch(
            f"the saved completed phases {saved} are not a prefix of the plan's phases "
            f"{planned}; the plan changed since the run was saved (fail or delete the run, "
            "or restore the old plan)"
        )
