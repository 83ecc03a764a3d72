"""Tools the model may call, and what a tool learns of the call it serves.

A tool's handler takes the call's arguments, and optionally a
:class:`ToolContext` as its second argument: the run, the call, the attempt
and an **idempotency key** that is the same on every worker and every retry
of that call, to hand to payment, e-mail or ticketing APIs.

A tool declares whether it may run again after a crash (``retry``, default
True). A tool with ``retry=False`` that was in flight when its worker died is
not called again: its ``reconcile`` hook is asked what happened (given the
same arguments and context, so it can look the effect up by the idempotency
key), or, without one, the model is told that the outcome is unknown.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

from outlast.messages import JSON, JSONObject


class ToolError(Exception):
    """Raised by a tool handler to report a problem to the model instead of
    ending the run."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may know of the call it serves.

    ``attempt`` is the run's attempt (1 for its first, one more for each
    claim by a worker). ``idempotency_key`` is derived from the namespace,
    the run id and the call's position in the run (never from a clock or a
    random number): every worker and every retry of this call gets the same
    key, and no other call of any run gets it. ``reconciling`` is True when
    the context is handed to a ``reconcile`` hook.
    """

    run_id: str
    namespace: str
    kind: str
    tool_call_id: str
    attempt: int
    idempotency_key: str
    reconciling: bool = False


def idempotency_key(namespace: str, run_id: str, segment: int, position: int, index: int) -> str:
    """The key of the ``index``-th call of the reply at ``position`` of
    transcript ``segment`` (the phase, for a plan) of a run: 32 hex digits of
    a SHA-256 over those values, prefixed ``outlast-`` (40 characters, within
    the limits of the payment and e-mail APIs that take such keys)."""
    where = json.dumps([namespace, run_id, segment, position, index], ensure_ascii=False)
    return "outlast-" + hashlib.sha256(where.encode("utf-8")).hexdigest()[:32]


ToolHandler = Callable[..., "JSON | Awaitable[JSON]"]
"""``handler(arguments)`` or ``handler(arguments, context)``, plain or async."""

Reconcile = Callable[[JSONObject, ToolContext], "JSON | Awaitable[JSON]"]
"""``reconcile(arguments, context)``: the result of a call that was in flight
when its worker died, found out without running the call again."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call: its spec, and the handler that runs it.

    The handler gets the call's arguments (and, if it takes a second
    argument, a :class:`ToolContext`) and returns a JSON result, plain or
    awaitable. To report a problem to the model (it sees ``"error: ..."`` as
    the tool's result and may try again), raise :class:`ToolError`; to wait
    for outside input, raise :class:`~outlast.waiting.AwaitInput`; any other
    exception ends the run, which is then failed.

    ``retry=False`` marks a call that must not run twice (a payment): the
    executor records durably that it started before calling it, and after a
    crash during it calls ``reconcile`` instead (see the module docstring).
    """

    name: str
    description: str
    handler: ToolHandler = field(repr=False)
    parameters: JSONObject = field(default_factory=lambda: {"type": "object", "properties": {}})
    retry: bool = True
    reconcile: Reconcile | None = field(default=None, repr=False)

    @property
    def spec(self) -> JSONObject:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    @property
    def takes_context(self) -> bool:
        """Whether the handler takes a second argument, a ToolContext."""
        return _takes_context(self.handler)

    async def call(self, arguments: JSONObject, context: ToolContext | None = None) -> JSON:
        """Run the handler (with ``context`` when it takes one)."""
        if context is not None and _takes_context(self.handler):
            result = self.handler(arguments, context)
        else:
            result = self.handler(arguments)
        if type(result) in _PLAIN:  # a JSON value: nothing to await
            return cast(JSON, result)
        return await _resolved(result)

    async def reconciled(self, arguments: JSONObject, context: ToolContext) -> JSON:
        """The ``reconcile`` hook's answer for an in-flight call (it must be set)."""
        assert self.reconcile is not None
        return await _resolved(self.reconcile(arguments, context))


_PLAIN = frozenset({str, dict, list, int, float, bool, type(None)})
"""The types of a JSON result: never awaitable (checked first, as inspect's
check of an ABC costs more than the rest of a call)."""


async def _resolved(result: JSON | Awaitable[JSON]) -> JSON:
    if inspect.isawaitable(result):
        return await result
    return result


def _takes_context(handler: ToolHandler) -> bool:
    try:
        return _accepts_two(handler)
    except TypeError:  # unhashable callable: look each time
        return _accepts_two.__wrapped__(handler)


@lru_cache(maxsize=1024)
def _accepts_two(handler: Any) -> bool:
    """Whether ``handler`` can be called with (arguments, context)."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: arguments only
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    return positional >= 2
