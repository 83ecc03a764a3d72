"""Waiting for outside input: a tool asks, the run parks, a send resumes it.

A tool raises :class:`AwaitInput` (an approval, a missing value). The
executor finishes and saves the step's other calls, then parks the run:
``waiting``, no lease, no process (``Checkpointer.wait``). The record keeps
what the run waits for (:func:`request_of`). ``Executor.send`` (or
``outlast runs send``) stores the input once and makes the run claimable;
whichever worker claims it continues with the input as that tool call's
result (:func:`answer`). A wait with a timeout that passes without input is
claimed as well, and then fails the run (:class:`~outlast.errors.WaitTimedOut`)
or continues with the tool's ``timeout_result``.
"""

from __future__ import annotations

from outlast import codec
from outlast.errors import WaitTimedOut
from outlast.messages import JSON, JSONObject, ToolCall


class _Fail:
    """The default ``timeout_result``: fail the run when the wait times out."""


_FAIL = _Fail()


class AwaitInput(Exception):
    """Raised by a tool to park the run until outside input arrives.

    ``request`` (JSON) says what is asked; it is stored with the run and
    shown by ``outlast runs show`` and ``outlast runs list --status waiting``.
    ``timeout`` (seconds, None for never) bounds the wait; when it passes,
    the run fails with WaitTimedOut, unless ``timeout_result`` is given: then
    the run continues with it as the tool's result.
    """

    def __init__(
        self, request: JSON, *, timeout: float | None = None, timeout_result: JSON | _Fail = _FAIL
    ) -> None:
        if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
            raise ValueError(
                f"timeout must be a positive number of seconds or None, got {timeout!r}"
            )
        codec.dumps(request)  # not JSON: a ValueError here, in the tool, says so
        self.request = request
        self.timeout = timeout
        self.timeout_result = timeout_result
        super().__init__(f"waiting for input: {request!r:.200}")


class Parked(Exception):
    """Raised out of the body once a step's other calls are saved: the attempt
    parks the run with ``request`` (the record's ``wait``) for ``timeout``."""

    def __init__(self, request: JSONObject, timeout: float | None) -> None:
        self.request = request
        self.timeout = timeout
        super().__init__(f"parked waiting for input: {request.get('request')!r:.200}")


def request_of(call: ToolCall, asked: AwaitInput) -> Parked:
    """The wait the record keeps for ``call`` asking ``asked``."""
    fallback = asked.timeout_result
    on_timeout: JSONObject = {"fail": True} if isinstance(fallback, _Fail) else {"result": fallback}
    request: JSONObject = {
        "call": call.id,
        "tool": call.name,
        "request": asked.request,
        "timeout": asked.timeout,
        "on_timeout": on_timeout,
    }
    return Parked(request, asked.timeout)


def answer(call: ToolCall, wait: JSON, delivery: JSON) -> tuple[JSON] | None:
    """The result a resumed run gives ``call`` (in a 1-tuple), if the run
    waited for it.

    None when the record's wait is not this call's (the call is run as any
    other). The delivered payload when input arrived; else the wait timed
    out: its ``timeout_result``, or WaitTimedOut.
    """
    if not isinstance(wait, dict) or wait.get("call") != call.id:
        return None
    if isinstance(delivery, dict) and "payload" in delivery:
        return (delivery["payload"],)
    on_timeout = wait.get("on_timeout")
    if isinstance(on_timeout, dict) and "result" in on_timeout:
        return (on_timeout["result"],)
    raise WaitTimedOut(
        f"tool {call.name!r} waited for input ({wait.get('request')!r:.200}) longer than its "
        f"timeout of {wait.get('timeout')}s"
    )
