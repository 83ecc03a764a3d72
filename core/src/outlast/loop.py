"""The model/tool loop and the plan driver, free of any storage concern.

Both report progress through a ``checkpoint`` callback the executor supplies;
the callback makes the progress durable before the loop goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from outlast.errors import CriticKilled, ModelError, OutlastError, ResumeMismatch, StepLimitExceeded
from outlast.events import EventKind
from outlast.messages import JSON, MARKER, Message, PhaseOutput
from outlast.model import Model
from outlast.plugins import listening
from outlast.ports import CheckpointState, ResumeState
from outlast.runs import Critic, Plan
from outlast.steps import RunScope, Save, StepCalls, Tally, unfinished_step, with_call_ids
from outlast.tools import Tool
from outlast.views import Prefix

Checkpoint = Callable[..., Awaitable[None]]
"""``checkpoint(state, *, now=False)``: make ``state`` (a CheckpointState, or
a function building one) durable; ``now``: even through a throttle."""


async def run_loop(
    *,
    model: Model,
    tools: Sequence[Tool],
    transcript: list[Message],
    max_steps: int,
    critic: Critic | None,
    checkpoint: Save,
    scope: RunScope | None = None,
    segment: int = 0,
    tool_concurrency: int = 4,
    tally: Tally | None = None,
) -> Message:
    """Ask the model, run the tools it calls, repeat until a reply calls none.

    ``transcript`` is extended in place and handed to ``checkpoint`` as each
    step goes (see :mod:`outlast.steps`): the reply before any of its tools
    runs, each tool result as it completes. A transcript that already ends
    with a final reply (restored from a checkpoint) finishes at once; one
    that ends with a reply whose calls lack results runs only those calls.
    Steps already in the transcript count against ``max_steps``. ``segment``
    is the transcript's number in the run (the phase's index for a plan);
    ``tally`` (counted from the transcript when not given) ends holding the
    loop's usage.
    """
    scope = scope or RunScope()
    by_name = {tool.name: tool for tool in tools}
    specs = [tool.spec for tool in tools]
    tally = tally or Tally.of(transcript)
    if scope.context is not None and not _finished(transcript):
        note = Message(MARKER, None, meta={"context": scope.context})
        transcript.append(note)  # saved with this attempt's first save
        tally.add(note)
    conversation = Conversation(transcript)

    calls = StepCalls(
        tools=by_name,
        transcript=transcript,
        segment=segment,
        save=checkpoint,
        concurrency=tool_concurrency,
    )
    unfinished = unfinished_step(transcript)
    if unfinished is not None:  # a step a crash or a wait cut short: its input is for it
        await calls.run(unfinished, scope)
        if critic is not None:
            await _judge(critic, transcript)
    scope = replace(scope, wait=None, delivery=None)
    while True:
        if _finished(transcript):
            return transcript[-1]
        if tally.steps >= max_steps:
            raise StepLimitExceeded(f"the model/tool loop used all {max_steps} steps")
        reply = await _ask(model, conversation.shown(), specs, scope)
        reply = with_call_ids(reply, tally.call_ids, segment, len(transcript))
        transcript.append(reply)
        tally.add(reply)
        await checkpoint(transcript)  # durable before any tool runs: never asked again
        if reply.tool_calls:
            await calls.run(len(transcript) - 1, scope)
        if critic is not None:
            await _judge(critic, transcript)


def _finished(transcript: Sequence[Message]) -> bool:
    """Whether the transcript ends with a final reply (one that calls no tool)."""
    return bool(transcript) and transcript[-1].role == "assistant" and not transcript[-1].tool_calls


class Conversation:
    """What the model is shown of a transcript: every message but outlast's
    own notes, kept up to date as the transcript grows (each message is
    looked at once, so a step costs the same at any length)."""

    def __init__(self, transcript: list[Message]) -> None:
        self._transcript = transcript
        self._shown: list[Message] = []
        self._seen = 0

    def shown(self) -> Sequence[Message]:
        """The conversation so far, as a view that later steps do not change."""
        transcript = self._transcript
        for message in transcript[self._seen :]:  # the messages added since the last step
            if message.role != MARKER:
                self._shown.append(message)
        self._seen = len(transcript)
        return Prefix(self._shown)


async def _judge(critic: Critic, transcript: Sequence[Message]) -> None:
    verdict = critic(transcript)
    reason = await verdict if inspect.isawaitable(verdict) else verdict
    if reason:
        raise CriticKilled(f"the critic stopped the run: {reason}")


async def _ask(
    model: Model, shown: Sequence[Message], specs: list[dict[str, JSON]], scope: RunScope
) -> Message:
    started = time.monotonic()
    try:
        reply = await model.complete(shown, specs)
        if not isinstance(reply, Message) or reply.role != "assistant":
            raise ModelError(f"the model must return an assistant Message, got {reply!r:.200}")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if listening():
            detail: dict[str, JSON] = {"model": type(model).__name__}
            error = f"{type(exc).__name__}: {exc}"
            scope.event(EventKind.MODEL_CALL, time.monotonic() - started, detail, error)
        if isinstance(exc, OutlastError):
            raise
        raise ModelError(f"the model raised {type(exc).__name__}: {exc}") from exc
    if listening():
        detail = {"model": type(model).__name__, "tool_calls": len(reply.tool_calls)}
        if reply.usage:
            detail["usage"] = dict(reply.usage)
        scope.event(EventKind.MODEL_CALL, time.monotonic() - started, detail)
    return reply


async def run_plan(
    *,
    plan: Plan,
    input: JSON,
    resume: ResumeState | None,
    checkpoint: Checkpoint,
    scope: RunScope | None = None,
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
            history: Sequence[Message], done: tuple[PhaseOutput, ...] = done, *, now: bool = False
        ) -> None:
            await checkpoint(lambda: CheckpointState(tuple(history), done), now=now)

        tally = Tally.of(transcript)
        final = await run_loop(
            model=plan.model,
            tools=phase.tools,
            transcript=transcript,
            max_steps=phase.max_steps or plan.max_steps,
            critic=plan.critic,
            checkpoint=save_step,
            scope=scope,
            segment=index,
            tool_concurrency=plan.tool_concurrency,
            tally=tally,
        )
        summary = phase.summarize(transcript) if phase.summarize else None
        outputs.append(PhaseOutput(phase.name, final.text, summary, tally.usage or None))
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
