"""Stored messages decoded straight into typed structures, with msgspec.

An optional speed-up of :func:`outlast.codec.decode_message` (``pip install
"outlast[fast]"``): a resume decodes every message of a run, and most of that
time went to building a dict per message and reading it back key by key.
msgspec parses a stored message directly into a struct of its fields, checking
their types as it goes, and the Message is built from that.

It accepts exactly the messages that :meth:`Message.from_json` builds without
converting anything, and returns an equal Message. Anything else (another
format version, a field of an unexpected type, text msgspec refuses such as a
lone surrogate escape) makes :func:`decode_message` return None, and the
standard path decides, with its own errors: the two paths never disagree on
what a message is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from outlast.messages import Message, ToolCall

decode_message: Callable[[str | bytes, int], Message | None]
"""The Message stored as ``text`` at format ``version``, or None: decode it
the standard way. A stand-in that always says None without msgspec."""

try:  # an optional extra: outlast[fast]
    import msgspec
except ImportError:  # pragma: no cover - the extra is installed where it is tested

    def decode_message(text: str | bytes, version: int) -> Message | None:
        return None

else:

    class _StoredCall(msgspec.Struct, gc=False):
        id: str
        name: str
        arguments: dict[str, Any] = {}

    class _StoredMessage(msgspec.Struct, gc=False):
        # Message.from_json reads a missing field as its default, and an
        # explicit null as None (content, ids, usage) or refuses it (meta).
        v: int
        role: str
        content: str | list[Any] | None = None
        tool_calls: list[_StoredCall] | None = None
        tool_call_id: str | None = None
        name: str | None = None
        meta: dict[str, Any] = {}
        usage: dict[str, int] | None = None

    _decode = msgspec.json.Decoder(_StoredMessage).decode

    def decode_message(text: str | bytes, version: int) -> Message | None:
        try:
            stored = _decode(text)
        except msgspec.DecodeError:  # ValidationError included
            return None
        if stored.v != version:
            return None
        calls = stored.tool_calls
        return Message(
            stored.role,
            stored.content,
            tuple([ToolCall(c.id, c.name, c.arguments) for c in calls]) if calls else (),
            stored.tool_call_id,
            stored.name,
            stored.meta,
            stored.usage,
        )
