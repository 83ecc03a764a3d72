"""The model side of a run: the ``Model`` protocol and a scripted model.

A model takes the transcript and the tool specs and returns one assistant
message. Real model clients implement :class:`Model`; :class:`ScriptedModel`
is the deterministic one the tests and the demo use. Tools are
:mod:`outlast.tools` (``Tool`` and ``ToolError`` are importable from here too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from outlast.errors import ModelError
from outlast.messages import JSONObject, Message
from outlast.tools import Tool, ToolError, ToolHandler

__all__ = ["Model", "ScriptedModel", "Tool", "ToolError", "ToolHandler"]


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
