"""Exact JSON round-trips of the run model and the save delta."""

from __future__ import annotations

import pytest

from outlast import Message, ToolCall
from outlast.adapter import (
    CheckpointState,
    CheckpointStateError,
    CorruptCheckpoint,
    PhaseOutput,
    SaveCursor,
    codec,
)

MESSAGES = [
    Message.system("You are terse."),
    Message.user('héllo 🌍 \u0000 null byte and "quotes"'),
    Message.user([{"type": "text", "text": "look"}, {"type": "image", "url": "x", "detail": None}]),
    Message.assistant(
        None, (ToolCall("c1", "search", {"q": "x", "nested": {"a": [1, 2.5, None, True]}}),)
    ),
    Message.tool("c1", "search", '{"results": []}'),
    Message("assistant", "big " + "x" * 3_000_000, meta={"tokens": 12, "trace": {"id": None}}),
]


@pytest.mark.parametrize("message", MESSAGES, ids=range(len(MESSAGES)))
def test_messages_round_trip_exactly(message: Message) -> None:
    assert codec.decode_message(codec.encode_message(message), "r") == message
    assert Message.from_json(message.to_json()) == message


def test_phase_output_round_trips() -> None:
    phase = PhaseOutput("research", {"facts": ["ä", None]}, summary="short")
    assert codec.decode_phase(codec.encode_phase(phase), "r") == phase


@pytest.mark.parametrize("text", ["{not json", '{"v": 99, "role": "user"}', "[1]", '{"v": 1}'])
def test_bad_records_are_corrupt_checkpoints_naming_the_run(text: str) -> None:
    with pytest.raises(CorruptCheckpoint, match="run 'r9'"):
        codec.decode_message(text, "r9")


def test_text_of_multimodal_content_joins_text_parts() -> None:
    assert MESSAGES[2].text == "look"
    assert Message.assistant(None).text == ""


def test_delta_is_only_what_is_new() -> None:
    cursor = SaveCursor()
    first = cursor.delta(CheckpointState(tuple(MESSAGES[:2])))
    assert first.messages == tuple(MESSAGES[:2]) and first.segment == 0
    cursor = first.after
    second = cursor.delta(CheckpointState(tuple(MESSAGES[:3])))
    assert second.messages == (MESSAGES[2],) and second.first_message == 2
    assert cursor.delta(CheckpointState(tuple(MESSAGES[:2]))).empty  # same state twice


def test_delta_opens_a_new_segment_at_a_phase_boundary() -> None:
    cursor = SaveCursor(phases=0, messages=5)
    delta = cursor.delta(CheckpointState((MESSAGES[0],), (PhaseOutput("a", 1),)))
    assert delta.phases == (PhaseOutput("a", 1),) and delta.segment == 1
    assert delta.first_message == 0 and delta.messages == (MESSAGES[0],)
    assert delta.after == SaveCursor(phases=1, messages=1)


def test_delta_rejects_a_shrinking_state() -> None:
    with pytest.raises(CheckpointStateError, match="phases only grow"):
        SaveCursor(phases=2).delta(CheckpointState((), (PhaseOutput("a", 1),)))
    with pytest.raises(CheckpointStateError, match="only grows by appending"):
        SaveCursor(messages=3).delta(CheckpointState((MESSAGES[0],)))


@pytest.mark.parametrize("fast", [True, False], ids=["msgspec", "stdlib"])
def test_both_json_parsers_read_exactly_the_same_values(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With msgspec (outlast[fast]) and without it, a stored message reads
    back equal, integers beyond 64 bits included; what msgspec refuses (a
    lone surrogate escape) falls back to the standard library, and damage is
    CorruptCheckpoint either way."""
    from outlast import codec
    from outlast.errors import CorruptCheckpoint

    if not fast:
        monkeypatch.setattr(codec, "_fast_loads", None)
    else:
        pytest.importorskip("msgspec")
    big = 2**80 + 1
    message = Message(
        "assistant",
        [{"type": "text", "text": 'ünïcödé \u2028 "quoted"'}, "tail"],
        (ToolCall("c1", "f", {"n": big, "x": 1.5e-300, "nested": {"a": [None, True]}}),),
        meta={"k": [1, 2]},
        usage={"input_tokens": 3},
    )
    text = codec.encode_message(message)
    assert codec.decode_message(text, "r") == message
    assert codec.decode_message(text.encode(), "r") == message
    assert codec.loads(str(big), "r") == big
    assert codec.loads('"\\ud800"', "r") == "\ud800"
    with pytest.raises(CorruptCheckpoint):
        codec.loads('{"broken": ', "r")
