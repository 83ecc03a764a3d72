"""The run model's data: messages, tool calls and phase outputs.

Every record here is a frozen dataclass that round-trips exactly through JSON
(``to_json`` / ``from_json``): unicode, nulls, nested JSON and large content
come back equal to what went in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
"""A JSON value: what inputs, outputs, tool arguments and ``meta`` may hold."""

JSONObject: TypeAlias = "dict[str, JSON]"


_ABSENT: Any = object()
"""A field missing from a stored object (told apart from one stored as null)."""


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool invocation the model asked for."""

    id: str
    name: str
    arguments: JSONObject = field(default_factory=dict)

    def to_json(self) -> JSONObject:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_json(cls, data: object) -> ToolCall:
        obj = _object(data, "a tool call")
        arguments = obj.get("arguments", _ABSENT)
        return cls(
            str(obj["id"]),
            str(obj["name"]),
            {} if arguments is _ABSENT else _object(arguments, "tool call arguments"),
        )


@dataclass(frozen=True, slots=True)
class Message:
    """One transcript entry.

    ``content`` is text, a JSON list of parts (multimodal content), or None
    (an assistant message that only calls tools). ``meta`` is an open mapping
    for the host's own annotations; outlast itself uses the key ``"phase"`` on
    the first message of a phase.
    """

    role: str
    content: str | list[JSON] | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    meta: JSONObject = field(default_factory=dict)
    usage: dict[str, int] | None = None

    # The constructors pass fields by position: messages are made at every
    # step, and a frozen dataclass's __init__ takes keywords about a third slower.

    @classmethod
    def system(cls, content: str, **meta: JSON) -> Message:
        return cls("system", content, (), None, None, dict(meta))

    @classmethod
    def user(cls, content: str | list[JSON], **meta: JSON) -> Message:
        return cls("user", content, (), None, None, dict(meta))

    @classmethod
    def assistant(
        cls,
        content: str | None = None,
        tool_calls: tuple[ToolCall, ...] = (),
        *,
        usage: dict[str, int] | None = None,
        **meta: JSON,
    ) -> Message:
        return cls("assistant", content, tool_calls, None, None, dict(meta), usage)

    @classmethod
    def tool(cls, tool_call_id: str, name: str, content: str) -> Message:
        return cls("tool", content, (), tool_call_id, name)

    @classmethod
    def started(cls, tool_call_id: str, name: str) -> Message:
        """The executor's durable note that a ``retry=False`` tool call started."""
        return cls(MARKER, None, (), tool_call_id, name, {"started": True})

    @property
    def text(self) -> str:
        """The content as plain text (text parts joined; empty when None)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(cast(str, part["text"]))
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)

    def to_json(self) -> JSONObject:
        data: JSONObject = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [call.to_json() for call in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        if self.meta:
            data["meta"] = self.meta
        if self.usage is not None:
            data["usage"] = dict(self.usage)
        return data

    @classmethod
    def from_json(cls, data: object) -> Message:
        # A resume decodes every message of a run: this path is kept lean (no
        # generator for a message without calls, no check of absent fields).
        obj = _object(data, "a message")
        content = obj.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ValueError("message content must be text, a list of parts, or null")
        calls = obj.get("tool_calls")
        meta = obj.get("meta", _ABSENT)
        usage = obj.get("usage")
        return cls(
            str(obj["role"]),
            content,
            tuple(ToolCall.from_json(c) for c in calls) if calls else (),
            obj.get("tool_call_id"),
            obj.get("name"),
            {} if meta is _ABSENT else _object(meta, "message meta"),
            None if usage is None else _usage(usage),
        )


MARKER = "outlast"
"""The role of the executor's bookkeeping messages (never shown to a model)."""


def _usage(value: object) -> dict[str, int] | None:
    if value is None:
        return None
    counts = _object(value, "message usage")
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"usage {name!r} must be an integer count, got {count!r:.40}")
    return dict(counts)


@dataclass(frozen=True, slots=True)
class PhaseOutput:
    """What a completed phase hands to the phases after it. ``usage`` is the
    token usage the phase's replies reported, summed."""

    name: str
    output: JSON
    summary: str | None = None
    usage: dict[str, int] | None = None

    def to_json(self) -> JSONObject:
        data: JSONObject = {"name": self.name, "output": self.output, "summary": self.summary}
        if self.usage is not None:
            data["usage"] = dict(self.usage)
        return data

    @classmethod
    def from_json(cls, data: object) -> PhaseOutput:
        obj = _object(data, "a phase output")
        summary = obj.get("summary")
        return cls(
            name=str(obj["name"]),
            output=obj.get("output"),
            summary=None if summary is None else str(summary),
            usage=_usage(obj.get("usage")),
        )
