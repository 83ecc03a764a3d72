"""The model side of a run: the ``Model`` protocol, tools, and a scripted model.

A model takes the transcript and the tool specs and returns one assistant
message. Real model clients implement :class:`Model`; :class:`ScriptedModel`
is the deterministic one the tests and the demo use.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from outlast.errors import ModelError
from outlast.messages import JSON, JSONObject, Message


class ToolError(Exception):
    """Raised by a tool handler to report a problem to the model instead of
    ending the run."""


ToolHandler = Callable[[JSONObject], "JSON | Awaitable[JSON]"]


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call: its spec, and the handler that runs it.

    The handler gets the call's arguments and returns a JSON result (plain or
    awaitable). To report a problem to the model (it sees ``"error: ..."`` as
    the tool's result and may try again), raise :class:`ToolError`; any other
    exception ends the run, which is then failed.
    """

    name: str
    description: str
    handler: ToolHandler = field(repr=False)
    parameters: JSONObject = field(default_factory=lambda: {"type": "object", "properties": {}})

    @property
    def spec(self) -> JSONObject:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    async def call(self, arguments: JSONObject) -> JSON:
        result = self.handler(arguments)
        if inspect.isawaitable(result):
            return await result
        return result


@runtime_checkable
class Model(Protocol):
    """A chat model: messages and tool specs in, one assistant message out."""

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        """Return the next assistant message. Raise ModelError (or anything) on failure."""


class ScriptedModel:
    """A deterministic model that replays prepared replies.

    The reply is chosen by the transcript, not by a call counter, so a model
    in a new process continues a resumed transcript exactly where the old one
    stopped: reply number N is given when the transcript holds N assistant
    messages. With a mapping, each phase has its own script, chosen by the
    ``"phase"`` meta of the transcript's first message. Running out of replies
    is a ModelError.
    """

    def __init__(self, script: Sequence[Message] | Mapping[str, Sequence[Message]]) -> None:
        self._by_phase: Mapping[str, Sequence[Message]] | None
        if isinstance(script, Mapping):
            self._by_phase = {name: tuple(replies) for name, replies in script.items()}
            self._replies: Sequence[Message] = ()
        else:
            self._by_phase = None
            self._replies = tuple(script)
        self.calls = 0

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        self.calls += 1
        replies = self._replies
        where = "the script"
        if self._by_phase is not None:
            phase = messages[0].meta.get("phase") if messages else None
            if not isinstance(phase, str) or phase not in self._by_phase:
                raise ModelError(f"the scripted model has no script for phase {phase!r}")
            replies = self._by_phase[phase]
            where = f"the script of phase {phase!r}"
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn >= len(replies):
            raise ModelError(f"{where} has {len(replies)} replies; reply {turn + 1} was asked for")
        return replies[turn]
