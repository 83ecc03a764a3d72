"""JSON encoding of stored records, with a format version. No pickle anywhere.

Adapters store messages, phases and run fields with these functions so every
store writes the same data-only format. Decoding failures become
:class:`~outlast.errors.CorruptCheckpoint` naming the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from outlast import codec_fast
from outlast.errors import CorruptCheckpoint, UnknownFormat
from outlast.messages import JSON, Message, PhaseOutput

FORMAT_VERSION = 1
"""The version every stored record carries; an unknown one is corrupt."""

T = TypeVar("T")

_fast_loads: Callable[[str | bytes], Any] | None
_FastError: type[Exception] = ValueError
try:  # an optional extra: outlast[fast]
    import msgspec.json

    _fast_loads = msgspec.json.Decoder().decode
    _FastError = msgspec.DecodeError
except ImportError:  # the standard library serves
    _fast_loads = None


def dumps(value: JSON) -> str:
    """Compact JSON text; non-ASCII kept as is.

    Raises ValueError for anything that is not JSON (a set, a custom object,
    NaN or Infinity, a key that is not a string...), so a store writes nothing.
    """
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc


def loads(text: str | bytes, run_id: str) -> JSON:
    """Parse JSON text, raising CorruptCheckpoint naming ``run_id``.

    With msgspec installed (``pip install "outlast[fast]"``) it parses,
    about twice as fast as the standard library on a resume's thousands of
    messages, and exactly: integers of any size stay integers. What it
    refuses (a lone surrogate escape, a number beyond a double's range) is
    parsed by the standard library, so both read the same values.
    """
    if _fast_loads is not None:
        try:
            fast: JSON = _fast_loads(text)
        except _FastError:
            pass  # the standard library decides, and says why in its words
        else:
            return fast
    try:
        value: JSON = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise CorruptCheckpoint(run_id, f"invalid JSON ({exc})") from exc
    return value


def encode_message(message: Message) -> str:
    return dumps({"v": FORMAT_VERSION, **message.to_json()})


def decode_message(text: str | bytes, run_id: str) -> Message:
    # With msgspec, straight into typed fields (outlast.codec_fast); what that
    # path does not take, the standard one decides.
    fast = codec_fast.decode_message(text, FORMAT_VERSION)
    if fast is not None:
        return fast
    return _decode(text, run_id, Message.from_json, "message")


def encode_phase(phase: PhaseOutput) -> str:
    return dumps({"v": FORMAT_VERSION, **phase.to_json()})


def decode_phase(text: str | bytes, run_id: str) -> PhaseOutput:
    return _decode(text, run_id, PhaseOutput.from_json, "phase output")


def check_version(version: object, run_id: str) -> None:
    """Raise UnknownFormat (a CorruptCheckpoint) unless ``version`` is a
    format this code reads. A record of another version is skipped, never
    quarantined: a newer outlast may own it."""
    if version != FORMAT_VERSION:
        raise UnknownFormat(
            run_id,
            f"unknown format version {version!r} (this outlast reads {FORMAT_VERSION}); "
            "upgrade outlast",
        )


def decode_all(
    texts: Iterable[str | bytes], run_id: str, decode: Callable[[str | bytes, str], T]
) -> tuple[T, ...]:
    return tuple(decode(text, run_id) for text in texts)


def _decode(text: str | bytes, run_id: str, build: Callable[[object], T], what: str) -> T:
    data = loads(text, run_id)
    if not isinstance(data, dict):
        raise CorruptCheckpoint(run_id, f"{what} is not a JSON object")
    check_version(data.pop("v", None), run_id)
    try:
        return build(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptCheckpoint(run_id, f"{what} does not parse ({exc})") from exc
