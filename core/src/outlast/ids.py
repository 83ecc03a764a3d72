"""The rules for run ids, namespaces, kinds and owners, checked once, in core.

Every name that reaches a store is checked here first (by ``RunStart``, the
executor and the store front :func:`outlast.open` returns), so an adapter
never sees an invalid one and no store has to repeat the rules:

* a non-empty string;
* valid Unicode that encodes as UTF-8 (no lone surrogate);
* no control character (``\\x00``-``\\x1f``, ``\\x7f``-``\\x9f``): they break
  keys, file names and log lines, and NUL cannot be stored in PostgreSQL text;
* at most :data:`MAX_RUN_ID_BYTES` UTF-8 bytes for a run id (and a kind),
  :data:`MAX_NAMESPACE_BYTES` for a namespace.

A name that breaks a rule raises ``ValueError`` saying which rule.
"""

from __future__ import annotations

import re

MAX_RUN_ID_BYTES = 255
"""Longest run id (and kind, and owner), in UTF-8 bytes."""

MAX_NAMESPACE_BYTES = 128
"""Longest namespace, in UTF-8 bytes."""

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_name(value: object, what: str, *, max_bytes: int, allow_empty: bool = False) -> str:
    """``value`` if it is a usable ``what`` (run id, namespace...); else ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"{what} must be a non-empty string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} {value!r:.80} is not valid Unicode (character {exc.start} is a lone "
            "surrogate); use text that encodes as UTF-8"
        ) from None
    control = _CONTROL.search(value)
    if control is not None:
        raise ValueError(
            f"{what} {value!r:.80} contains the control character {control.group()!r} at "
            f"{control.start()}; use printable text"
        )
    if size > max_bytes:
        raise ValueError(
            f"{what} {value[:40]!r}... is {size} bytes of UTF-8; at most {max_bytes} are allowed"
        )
    return value


def check_run_id(run_id: object) -> str:
    """``run_id`` if valid (see the module's rules); else ValueError."""
    return check_name(run_id, "run id", max_bytes=MAX_RUN_ID_BYTES)


def check_namespace(namespace: object) -> str:
    """``namespace`` if valid (see the module's rules); else ValueError."""
    return check_name(namespace, "namespace", max_bytes=MAX_NAMESPACE_BYTES)


def check_kind(kind: object) -> str:
    """``kind`` (a registered run definition's name) if valid; else ValueError."""
    return check_name(kind, "run kind", max_bytes=MAX_RUN_ID_BYTES)


def check_owner(owner: object) -> str:
    """``owner`` (a worker's name; may be empty) if valid; else ValueError."""
    return check_name(owner, "owner", max_bytes=MAX_RUN_ID_BYTES, allow_empty=True)


def check_lease(lease: object) -> float:
    """``lease`` as seconds if it is a positive finite number; else ValueError."""
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        raise ValueError(f"lease must be a number of seconds, got {lease!r}")
    if not 0 < lease < float("inf"):
        raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
    return float(lease)


def check_limit(limit: object) -> int:
    """``limit`` (a page size) if it is an integer >= 1; else ValueError."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
    return limit


def printable(text: str) -> str:
    """``text`` with lone surrogates escaped, so any store can keep it (error texts)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
