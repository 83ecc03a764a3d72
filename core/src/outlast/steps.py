"""One step's tool calls, written ahead: the reply is durable before any tool
runs, and each result is durable as it completes.

The loop (:mod:`outlast.loop`) saves the model's reply first; then
:func:`run_calls` runs the calls that have no result yet, at most
``concurrency`` at once, appending and saving each result as it comes (a
save in flight carries every result appended before it: several finishing
together share one round trip). On resume the same function finishes a step
a crash cut short: only the calls without a result run, and the model is
not asked again.

Before a tool starts, the worker checks that it still owns the run
(``RunScope.ensure_owned``: its last renewal's lease is live, else it renews
or stops). A ``retry=False`` tool's start is saved first (a
:meth:`Message.started` note), so after a crash the executor knows it may
have run: it asks the tool's ``reconcile`` hook, or tells the model the
outcome is unknown, and never calls it again. A tool raising
:class:`~outlast.waiting.AwaitInput` parks the run once the step's other
calls are saved (:class:`~outlast.waiting.Parked`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from outlast import codec, waiting
from outlast.events import Event, EventKind
from outlast.messages import JSON, MARKER, JSONObject, Message, ToolCall
from outlast.plugins import emit, listening
from outlast.tools import Tool, ToolContext, ToolError, idempotency_key

Save = Callable[..., Awaitable[None]]
"""``save(transcript, *, now=False)``: make the transcript durable; ``now``
writes through a throttle at once."""

UNKNOWN_OUTCOME = (
    "error: the outcome of this call is unknown: the worker running it stopped while it "
    "was in flight, and the tool must not run twice (retry=False); check its effect "
    "before calling it again"
)


class _NoLimit:
    """An async context manager that does nothing (one call: nothing to bound)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


_NO_LIMIT = _NoLimit()


@dataclass(frozen=True, slots=True)
class RunScope:
    """What a step knows of the run it belongs to.

    ``wait`` and ``delivery`` come from the record a resumed run was claimed
    with (see :mod:`outlast.waiting`); ``context`` is what a plugin wants
    stored with the run this attempt (:mod:`outlast.attempt_events`);
    ``ensure_owned`` raises when this worker may have lost the run (None: a
    run without a store, which nobody can take over).
    """

    run_id: str = ""
    namespace: str = ""
    kind: str = ""
    epoch: int = 0
    attempt: int = 1
    wait: JSON = None
    delivery: JSON = None
    context: JSONObject | None = None
    ensure_owned: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    def event(
        self,
        kind: EventKind,
        duration: float,
        detail: Mapping[str, JSON],
        error: str | None = None,
    ) -> None:
        """Report one operation of this run to observers (if any listen)."""
        if not listening():
            return
        emit(
            Event(
                kind,
                self.run_id,
                self.namespace,
                self.epoch,
                duration,
                error,
                attempt=self.attempt,
                detail=detail,
            )
        )


@dataclass(slots=True)
class Tally:
    """What the loop keeps count of, so a step costs the same at any length:
    replies so far, the tool call ids used, bookkeeping notes, and usage."""

    steps: int = 0
    call_ids: set[str] = field(default_factory=set)
    notes: int = 0
    usage: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, transcript: Sequence[Message]) -> Tally:
        """Count a restored transcript once."""
        tally = cls()
        for message in transcript:
            tally.add(message)
        return tally

    def add(self, message: Message) -> None:
        if message.role == "assistant":
            self.steps += 1
            self.call_ids.update(call.id for call in message.tool_calls)
            if message.usage:
                for name, count in message.usage.items():
                    self.usage[name] = self.usage.get(name, 0) + count
        elif message.role == MARKER:
            self.notes += 1


def with_call_ids(reply: Message, used: set[str], segment: int, position: int) -> Message:
    """``reply`` with every tool call id unique within the run: a missing or
    repeated id becomes ``call_<segment>_<position>_<index>`` (deterministic:
    the same on every worker)."""
    seen: set[str] = set()
    calls = []
    changed = False
    for index, call in enumerate(reply.tool_calls):
        call_id = call.id
        if not call_id or call_id in used or call_id in seen:
            call_id = f"call_{segment}_{position}_{index}"
            while call_id in used or call_id in seen:
                call_id += "_"
            call = replace(call, id=call_id)
            changed = True
        seen.add(call_id)
        calls.append(call)
    return replace(reply, tool_calls=tuple(calls)) if changed else reply


def unfinished_step(transcript: Sequence[Message]) -> int | None:
    """The position of the last reply when some of its tool calls have no
    result yet (a step a crash or a wait cut short), else None. Looks back
    only as far as that reply."""
    for position in range(len(transcript) - 1, -1, -1):
        message = transcript[position]
        if message.role == "assistant":
            done = {m.tool_call_id for m in transcript[position + 1 :] if m.role == "tool"}
            missing = any(call.id not in done for call in message.tool_calls)
            return position if missing else None
        if message.role not in ("tool", MARKER):
            return None
    return None


class StepCalls:
    """Runs the calls of the reply at ``position`` that have no result yet."""

    def __init__(
        self,
        *,
        tools: dict[str, Tool],
        transcript: list[Message],
        position: int,
        segment: int,
        scope: RunScope,
        save: Save,
        concurrency: int,
    ) -> None:
        self.tools = tools
        self.transcript = transcript
        self.position = position
        self.segment = segment
        self.scope = scope
        self._save = save
        self._concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None  # made when calls run at once
        self._saving: asyncio.Lock | None = None
        self._durable = len(transcript)
        self.parked: list[tuple[int, waiting.Parked]] = []
        after = transcript[position + 1 :]
        self._done = {m.tool_call_id for m in after if m.role == "tool"}
        self._started = {m.tool_call_id for m in after if _started_note(m)}

    async def run(self) -> None:
        """Run the missing calls; raise Parked when one of them asked to wait."""
        reply = self.transcript[self.position]
        missing = [
            (index, call)
            for index, call in enumerate(reply.tool_calls)
            if call.id not in self._done
        ]
        if len(missing) == 1:  # the common case: no task, no lock, no semaphore
            await self._one(*missing[0])
        elif missing:
            self._slots = asyncio.Semaphore(self._concurrency)
            self._saving = asyncio.Lock()
            try:
                async with asyncio.TaskGroup() as group:
                    for index, call in missing:
                        group.create_task(self._one(index, call))
            except BaseExceptionGroup as grouped:  # one tool's error ends the run: that error
                raise _first(grouped) from None
        if self.parked:
            raise min(self.parked, key=lambda parked: parked[0])[1]

    def _context(self, index: int, call: ToolCall) -> ToolContext:
        return ToolContext(
            run_id=self.scope.run_id,
            namespace=self.scope.namespace,
            kind=self.scope.kind,
            tool_call_id=call.id,
            attempt=self.scope.attempt,
            idempotency_key=idempotency_key(
                self.scope.namespace, self.scope.run_id, self.segment, self.position, index
            ),
        )

    async def _one(self, index: int, call: ToolCall) -> None:
        answered = waiting.answer(call, self.scope.wait, self.scope.delivery)
        if answered is not None:
            await self._record(call, _text(answered[0]))
            return
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            self._report(call, 0.0, "no_such_tool")
            await self._record(call, f"error: no tool named {call.name!r} (tools: {known})")
            return
        if not tool.retry and call.id in self._started:
            started = time.monotonic()
            content = await _reconciled(tool, call, self._context(index, call))
            outcome = "reconciled" if tool.reconcile is not None else "unknown"
            self._report(call, time.monotonic() - started, outcome)
            await self._record(call, content)
            return
        async with self._slots or _NO_LIMIT:
            if self.scope.ensure_owned is not None:
                await self.scope.ensure_owned()
            if not tool.retry:  # durable before the call: after a crash, it may have run
                await self._append(Message.started(call.id, call.name), now=True)
            started = time.monotonic()
            try:
                context = self._context(index, call) if tool.takes_context else None
                result = await tool.call(call.arguments, context)
            except ToolError as exc:
                content, outcome = f"error: {exc}", "tool_error"
            except waiting.AwaitInput as asked:
                self._report(call, time.monotonic() - started, "waiting")
                self.parked.append((index, waiting.request_of(call, asked)))
                return
            except BaseException as exc:
                self._report(call, time.monotonic() - started, "error", exc)
                raise
            else:
                content, outcome = _text(result), "ok"
            self._report(call, time.monotonic() - started, outcome)
        await self._record(call, content)

    def _report(
        self, call: ToolCall, duration: float, outcome: str, error: BaseException | None = None
    ) -> None:
        if not listening():
            return
        detail: dict[str, JSON] = {"tool": call.name, "call_id": call.id, "outcome": outcome}
        text = None if error is None else f"{type(error).__name__}: {error}"
        self.scope.event(EventKind.TOOL_CALL, duration, detail, text)

    async def _record(self, call: ToolCall, content: str) -> None:
        await self._append(Message.tool(call.id, call.name, content))

    async def _append(self, message: Message, *, now: bool = False) -> None:
        """Append ``message`` and make it durable; a save already in flight
        is waited for, and one save then carries everything appended since.
        ``now``: written at once even through a throttle."""
        self.transcript.append(message)
        async with self._saving or _NO_LIMIT:
            if not now and self._durable >= len(self.transcript):
                return  # an earlier save carried it
            size = len(self.transcript)
            await self._save(self.transcript, now=now)  # now: even if carried (throttled)
            self._durable = size


async def _reconciled(tool: Tool, call: ToolCall, context: ToolContext) -> str:
    if tool.reconcile is None:
        return UNKNOWN_OUTCOME
    try:
        return _text(await tool.reconciled(call.arguments, replace(context, reconciling=True)))
    except ToolError as exc:
        return f"error: {exc}"


def _started_note(message: Message) -> bool:
    return message.role == MARKER and bool(message.meta.get("started"))


def _text(result: JSON) -> str:
    return result if isinstance(result, str) else codec.dumps(result)


def _first(grouped: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a group that is not a cancellation, else the first."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [grouped]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[:0] = list(error.exceptions)
        else:
            leaves.append(error)
    for error in leaves:
        if not isinstance(error, asyncio.CancelledError):
            return error
    return leaves[0]
