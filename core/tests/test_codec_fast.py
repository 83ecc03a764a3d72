"""The msgspec path of message decoding (outlast.codec_fast) agrees with the
standard one on every input: the same Message, or the standard path's error."""

from __future__ import annotations

import pytest

from outlast import Message, ToolCall, codec
from outlast.errors import CorruptCheckpoint

codec_fast = pytest.importorskip("outlast.codec_fast")
pytest.importorskip("msgspec")

GOOD = [
    Message.system("You are terse."),
    Message.user('héllo 🌍 \u0000 "quotes" \u2028'),
    Message.user([{"type": "text", "text": "look"}, {"type": "image", "url": "x", "d": None}]),
    Message.assistant(
        None,
        (
            ToolCall("c1", "search", {"q": "x", "n": 2**80 + 1, "f": 1.5e-300}),
            ToolCall("c2", "fetch", {}),
        ),
        usage={"input_tokens": 3, "output_tokens": 4},
        phase="research",
    ),
    Message.tool("c1", "search", '{"results": []}'),
    Message.started("c1", "refund"),
    Message("assistant", "", meta={"trace": {"id": None}}),
]

# Stored texts the fast path must not take as they are, or must read exactly
# as the standard path does: coerced fields, wrong types, nulls, another
# format, text msgspec refuses, damage.
ODD = [
    '{"v":1,"role":5,"content":null}',
    '{"v":1,"role":"x","content":{"a":1}}',
    '{"v":1,"role":"x","content":7}',
    '{"v":1,"role":"x","usage":{"a":true}}',
    '{"v":1,"role":"x","usage":{"a":1.5}}',
    '{"v":1,"role":"x","usage":null}',
    '{"v":1,"role":"x","tool_calls":null}',
    '{"v":1,"role":"x","tool_calls":[]}',
    '{"v":1,"role":"x","tool_calls":[{"id":1,"name":"b"}]}',
    '{"v":1,"role":"x","tool_calls":[{"id":"a","name":"b","arguments":null}]}',
    '{"v":1,"role":"x","tool_calls":["a"]}',
    '{"v":1,"role":"x","meta":null}',
    '{"v":1,"role":"x","meta":[1]}',
    '{"v":1,"role":"x","tool_call_id":3}',
    '{"v":1,"role":"x","unknown":"kept out"}',
    '{"v":1,"role":"x","content":"\\ud800 lone"}',
    '{"v":1,"role":"x","content":1e400}',
    '{"v":2,"role":"x"}',
    '{"v":true,"role":"x"}',
    '{"v":1.0,"role":"x"}',
    '{"role":"x"}',
    '{"v":1}',
    "[1]",
    "{broken",
    "",
]


def standard(text: str | bytes) -> Message:
    """The standard path alone (Message.from_json over a parsed dict)."""
    return codec._decode(text, "r7", Message.from_json, "message")


def outcome(decode: object, text: str | bytes) -> object:
    try:
        return decode(text)  # type: ignore[operator]
    except CorruptCheckpoint as exc:
        return (type(exc), str(exc))


@pytest.mark.parametrize("message", GOOD, ids=range(len(GOOD)))
def test_stored_messages_take_the_fast_path_and_read_back_equal(message: Message) -> None:
    text = codec.encode_message(message)
    for stored in (text, text.encode()):
        assert codec_fast.decode_message(stored, codec.FORMAT_VERSION) == message
        assert codec.decode_message(stored, "r7") == message == standard(stored)


@pytest.mark.parametrize("text", ODD, ids=range(len(ODD)))
def test_odd_texts_read_exactly_as_the_standard_path_reads_them(text: str) -> None:
    fast = codec_fast.decode_message(text, codec.FORMAT_VERSION)
    expected = outcome(standard, text)
    assert outcome(lambda t: codec.decode_message(t, "r7"), text) == expected
    # What the fast path takes at all, it reads as the standard path does.
    assert fast is None or fast == expected


def test_a_message_of_another_format_version_is_left_to_the_standard_path() -> None:
    text = codec.encode_message(GOOD[0])
    assert codec_fast.decode_message(text, codec.FORMAT_VERSION + 1) is None
