"""One step's tool calls, written ahead: the reply is durable before any tool
runs, and each result is durable as it completes.

The loop (:mod:`outlast.loop`) saves the model's reply first; then
:meth:`StepCalls.run` runs the calls that have no result yet, at most
``concurrency`` at once, appending and saving each result as it comes (a
save in flight carries every result appended before it: several finishing
together share one round trip). On resume the same method finishes a step
a crash cut short: only the calls without a result run, and the model is
not asked again. A reply with one call to run (the common case) runs it
without a task, a semaphore or a lock.

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

from outlast import codec, usage, waiting
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
        """Report one operation of this run to observers. Called once
        :func:`~outlast.plugins.listening` said someone listens (the caller
        builds ``detail`` only then)."""
        emit(
            Event(
                kind,
                self.run_id,
                self.namespace,
                self.epoch,
                duration,
                error,
                time.time(),  # at: when it ended
                self.attempt,
                detail,
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
        role = message.role
        if role == "assistant":
            self.steps += 1
            for call in message.tool_calls:
                self.call_ids.add(call.id)
            if message.usage:
                usage.add(self.usage, message.usage)
        elif role == MARKER:
            self.notes += 1


def with_call_ids(reply: Message, used: set[str], segment: int, position: int) -> Message:
    """``reply`` with every tool call id unique within the run: a missing or
    repeated id becomes ``call_<segment>_<position>_<index>`` (deterministic:
    the same on every worker)."""
    given = {call.id for call in reply.tool_calls}
    if len(given) == len(reply.tool_calls) and all(given) and used.isdisjoint(given):
        return reply  # the common case: every id is there and new
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
    """Runs the tool calls of one loop's steps: :meth:`run` runs the calls of
    a reply that have no result yet. Made once per loop (a step then costs no
    setup); the fields :meth:`run` sets are the current step's."""

    position: int  # the current step's reply
    scope: RunScope
    _slots: asyncio.Semaphore | None  # made only when calls run at once:
    _saving: asyncio.Lock | None  # one call needs no semaphore, no lock
    _durable: int  # how much of the transcript the last save carried
    _started: set[str | None]  # retry=False calls whose start was saved
    _parked: list[tuple[int, waiting.Parked]]

    def __init__(
        self,
        *,
        tools: dict[str, Tool],
        transcript: list[Message],
        segment: int,
        save: Save,
        concurrency: int,
    ) -> None:
        self.tools = tools
        self.transcript = transcript
        self.segment = segment
        self._save = save
        self._concurrency = concurrency

    async def run(self, position: int, scope: RunScope) -> None:
        """Run the calls of the reply at ``position`` that have no result yet;
        raise Parked when one of them asked to wait."""
        transcript = self.transcript
        self.position = position
        self.scope = scope
        self._slots = self._saving = None
        self._durable = len(transcript)
        self._started = set()
        self._parked = []
        done: set[str | None] = set()  # calls with a result already
        for message in transcript[position + 1 :]:  # nothing, unless a step is resumed
            if message.role == "tool":
                done.add(message.tool_call_id)
            elif _started_note(message):
                self._started.add(message.tool_call_id)
        missing = [
            (index, call)
            for index, call in enumerate(transcript[position].tool_calls)
            if call.id not in done
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
        if self._parked:
            raise min(self._parked, key=lambda parked: parked[0])[1]

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
        scope = self.scope
        if scope.wait is not None:  # a resumed run that waited: for this call?
            answered = waiting.answer(call, scope.wait, scope.delivery)
            if answered is not None:
                await self._append(Message.tool(call.id, call.name, _text(answered[0])))
                return
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            self._report(call, None, "no_such_tool")
            error = f"error: no tool named {call.name!r} (tools: {known})"
            await self._append(Message.tool(call.id, call.name, error))
            return
        if not tool.retry and call.id in self._started:
            started = time.monotonic()
            content = await _reconciled(tool, call, self._context(index, call))
            outcome = "reconciled" if tool.reconcile is not None else "unknown"
            self._report(call, started, outcome)
            await self._append(Message.tool(call.id, call.name, content))
            return
        slots = self._slots  # what ``async with slots`` does, without a no-op for None
        if slots is not None:
            await slots.acquire()
        try:
            if scope.ensure_owned is not None:
                await scope.ensure_owned()
            if not tool.retry:  # durable before the call: after a crash, it may have run
                await self._append(Message.started(call.id, call.name), now=True)
            started = time.monotonic()
            try:
                context = self._context(index, call) if tool.takes_context else None
                result = await tool.call(call.arguments, context)
            except ToolError as exc:
                content, outcome = f"error: {exc}", "tool_error"
            except waiting.AwaitInput as asked:
                self._report(call, started, "waiting")
                self._parked.append((index, waiting.request_of(call, asked)))
                return
            except BaseException as exc:
                self._report(call, started, "error", exc)
                raise
            else:
                content, outcome = _text(result), "ok"
            self._report(call, started, outcome)
        finally:
            if slots is not None:
                slots.release()
        await self._append(Message.tool(call.id, call.name, content))

    def _report(
        self,
        call: ToolCall,
        started: float | None,
        outcome: str,
        error: BaseException | None = None,
    ) -> None:
        """Report the call (``started``: its ``time.monotonic()``, None if it never ran)."""
        if not listening():
            return
        duration = 0.0 if started is None else time.monotonic() - started
        detail: dict[str, JSON] = {"tool": call.name, "call_id": call.id, "outcome": outcome}
        text = None if error is None else f"{type(error).__name__}: {error}"
        self.scope.event(EventKind.TOOL_CALL, duration, detail, text)

    async def _append(self, message: Message, *, now: bool = False) -> None:
        """Append ``message`` and make it durable; a save already in flight
        is waited for, and one save then carries everything appended since.
        ``now``: written at once even through a throttle."""
        transcript = self.transcript
        transcript.append(message)
        saving = self._saving  # what ``async with saving`` does, without a no-op for None
        if saving is not None:
            await saving.acquire()
        try:
            if now or self._durable < len(transcript):  # else an earlier save carried it
                size = len(transcript)
                await self._save(transcript, now=now)  # now: even if carried (throttled)
                self._durable = size
        finally:
            if saving is not None:
                saving.release()


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
