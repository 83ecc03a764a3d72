"""A refund agent that asks a human before it pays, and never pays twice.

From the repository's root (the whole session is in README.md)::

    outlast worker examples.refund_approval.app:build      # a worker
    python -m examples.refund_approval.app A-1001 25.00    # submit; prints the run id

The run's model asks for approval first: the ``approve`` tool raises
``outlast.AwaitInput`` and the run waits, holding no worker, until
``outlast runs send ID '{"approved": true}'`` (or until its ``--timeout``
passes: then the refund is declined). Then the model calls ``refund``, a
``retry=False`` tool that hands the call's idempotency key to a fake payment
ledger. A worker killed while the refund is in flight never refunds again:
the worker that continues the run asks the tool's ``reconcile`` hook, which
looks the refund up in the ledger by that key.

Environment: ``OUTLAST_URL`` (the store; default the SQLite file
``./.outlast/runs.db``), ``REFUND_LEDGER_DIR`` (the ledger's folder; default
``./.outlast/refunds``) and ``REFUND_LEDGER_STALL`` (the crash demo: a file
the ledger creates once it recorded a refund, after which the call hangs
until the worker is killed).
"""

from __future__ import annotations

import argparse
import asyncio
import decimal
import functools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import outlast
from outlast import (
    JSON,
    Agent,
    AwaitInput,
    Executor,
    Message,
    ScriptedModel,
    Tool,
    ToolCall,
    ToolContext,
    ToolError,
)

KIND = "refund"
LEDGER_DIR_ENV = "REFUND_LEDGER_DIR"
STALL_ENV = "REFUND_LEDGER_STALL"
LEASE = 5.0
"""Seconds: short, so a killed worker's run is taken over within seconds in
this demo (the default, 30, suits most apps)."""

JSONObject = dict[str, JSON]


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


# -- the request -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """What a run is asked to do: its input, checked."""

    order: str
    amount_cents: int
    approval_timeout: float | None = None

    def __post_init__(self) -> None:
        if not self.order:
            raise ValueError("the order id is empty")
        if isinstance(self.amount_cents, bool) or self.amount_cents <= 0:
            raise ValueError(f"the amount must be a positive number of cents: {self.amount_cents}")
        if self.approval_timeout is not None and not self.approval_timeout > 0:
            raise ValueError(f"the timeout must be positive: {self.approval_timeout}")

    def to_json(self) -> JSONObject:
        return {
            "order": self.order,
            "amount_cents": self.amount_cents,
            "approval_timeout": self.approval_timeout,
        }

    @classmethod
    def from_json(cls, data: JSON) -> RefundRequest:
        if not isinstance(data, dict):
            raise ValueError(f"a refund request is a JSON object, got {data!r:.80}")
        order = data.get("order")
        amount = data.get("amount_cents")
        timeout = data.get("approval_timeout")
        if not isinstance(order, str) or not isinstance(amount, int):
            raise ValueError(f"a refund request needs an order and amount_cents: {data!r:.80}")
        if timeout is not None and not isinstance(timeout, int | float):
            raise ValueError(f"approval_timeout must be seconds or null: {timeout!r}")
        return cls(order, amount, None if timeout is None else float(timeout))

    def check(self, arguments: JSONObject) -> None:
        """Raise ToolError unless a tool call asks for exactly this refund (a
        model's arguments are never trusted with money)."""
        asked = (arguments.get("order"), arguments.get("amount_cents"))
        if asked != (self.order, self.amount_cents):
            raise ToolError(
                f"this run may refund only order {self.order} for {money(self.amount_cents)}"
            )


# -- the fake payment provider ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refund:
    """One refund in the ledger; ``requests`` counts the calls that asked for it."""

    key: str
    order: str
    amount_cents: int
    requests: int

    def to_json(self) -> JSONObject:
        return {
            "key": self.key,
            "order": self.order,
            "amount_cents": self.amount_cents,
            "requests": self.requests,
        }


class Ledger:
    """A fake payment provider's refunds: ``<directory>/ledger.json``.

    Like a real payment API it takes an idempotency key and keeps one refund
    per key; it also counts the requests for each key, so a tool that ran
    twice would show. The file is replaced atomically; it is meant for one
    worker process at a time (a toy, not a payment system).
    """

    def __init__(self, directory: Path, stall: Path | None = None) -> None:
        self.directory = directory
        self.stall = stall

    @classmethod
    def from_environment(cls) -> Ledger:
        stall = os.environ.get(STALL_ENV)
        directory = os.environ.get(LEDGER_DIR_ENV) or os.path.join(".outlast", "refunds")
        return cls(Path(directory), Path(stall) if stall else None)

    @property
    def path(self) -> Path:
        return self.directory / "ledger.json"

    def refunds(self) -> list[Refund]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        return [Refund(**entry) for entry in data["refunds"]]

    def find(self, key: str) -> Refund | None:
        """The refund made with idempotency key ``key``, if any."""
        return next((refund for refund in self.refunds() if refund.key == key), None)

    async def refund(self, key: str, order: str, amount_cents: int) -> Refund:
        """Refund ``amount_cents`` for ``order``, once per idempotency ``key``."""
        refunds = self.refunds()
        found = next((n for n, refund in enumerate(refunds) if refund.key == key), None)
        if found is None:
            refunds.append(Refund(key, order, amount_cents, requests=1))
        else:
            before = refunds[found]
            refunds[found] = Refund(key, before.order, before.amount_cents, before.requests + 1)
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        entries = [refund.to_json() for refund in refunds]
        temporary.write_text(json.dumps({"refunds": entries}, indent=2), encoding="utf-8")
        os.replace(temporary, self.path)
        if self.stall is not None:  # the crash demo: paid, but the caller never hears back
            self.stall.write_text(key, encoding="utf-8")
            await asyncio.Event().wait()
        return refunds[-1 if found is None else found]


# -- the run: tools and model ------------------------------------------------------------


def approve_tool(request: RefundRequest) -> Tool:
    """Asks a human; the run waits (no worker held) until the answer is sent."""

    def approve(arguments: JSONObject) -> JSON:
        request.check(arguments)
        raise AwaitInput(
            {
                "question": f"Refund {money(request.amount_cents)} for order {request.order}?",
                "answer": {"approved": "true or false", "reason": "optional text"},
            },
            timeout=request.approval_timeout,  # None: wait for ever
            timeout_result={"approved": False, "reason": "nobody answered in time"},
        )

    return Tool("approve", "Ask a human to approve the refund.", approve)


def refund_tool(request: RefundRequest, ledger: Ledger) -> Tool:
    """Pays the refund; after a crash mid-call, looks it up instead (retry=False)."""

    async def refund(arguments: JSONObject, context: ToolContext) -> JSON:
        request.check(arguments)
        # The key is the same on every worker and every retry of this call.
        paid = await ledger.refund(context.idempotency_key, request.order, request.amount_cents)
        return {"status": "refunded", **paid.to_json()}

    def reconcile(arguments: JSONObject, context: ToolContext) -> JSON:
        paid = ledger.find(context.idempotency_key)
        if paid is None:  # the worker died before the ledger recorded it: nothing was paid
            return {"status": "not refunded", "reason": "the payment never reached the ledger"}
        return {"status": "refunded", "reconciled": True, **paid.to_json()}

    return Tool(
        "refund",
        "Refund an order.",
        refund,
        parameters={
            "type": "object",
            "properties": {"order": {"type": "string"}, "amount_cents": {"type": "integer"}},
            "required": ["order", "amount_cents"],
        },
        retry=False,
        reconcile=reconcile,
    )


USAGE = {"input_tokens": 180, "output_tokens": 25}
"""What a real model reports with each reply; fixed here, and summed by outlast."""


class RefundClerk:
    """The run's model: offline and deterministic, a stand-in for an LLM.

    Its tool calls come from a ScriptedModel (ask for approval, then refund);
    like an LLM it reads the tools' answers: a refusal ends the run, and the
    last reply reports what the ledger said.
    """

    def __init__(self, request: RefundRequest) -> None:
        self.request = request
        asked: JSONObject = {"order": request.order, "amount_cents": request.amount_cents}
        self.script = ScriptedModel(
            [
                Message.assistant(None, (ToolCall("approve-1", "approve", asked),), usage=USAGE),
                Message.assistant(None, (ToolCall("refund-1", "refund", asked),), usage=USAGE),
            ]
        )

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        last = messages[-1]
        if last.role == "tool":
            answer = _decoded(last.text)
            if last.name == "approve" and answer.get("approved") is not True:
                reason = answer.get("reason") or "no reason given"
                declined = f"Refund for order {self.request.order} declined: {reason}."
                return Message.assistant(declined, usage=USAGE)
            if last.name == "refund":
                return Message.assistant(self._report(answer, last.text), usage=USAGE)
        return await self.script.complete(messages, tools)

    def _report(self, answer: JSONObject, text: str) -> str:
        what = f"{money(self.request.amount_cents)} for order {self.request.order}"
        if answer.get("status") != "refunded":
            return f"Did not refund {what}: {answer.get('reason') or text}."
        if answer.get("reconciled"):
            return (
                f"Refunded {what} (ledger key {answer['key']}); a worker died during the "
                "refund, and the ledger confirmed it was paid once."
            )
        return f"Refunded {what} (ledger key {answer['key']})."


def _decoded(text: str) -> JSONObject:
    """A tool's result as a JSON object (a plain answer such as "yes" is none)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def refund_agent(ledger: Ledger, input: JSON) -> Agent:
    """The run definition of one refund request (built from the run's input)."""
    request = RefundRequest.from_json(input)
    tools = [approve_tool(request), refund_tool(request, ledger)]
    return Agent(RefundClerk(request), tools=tools, max_steps=5)


def build(store: outlast.Store | None = None) -> Executor:
    """The app: ``outlast worker examples.refund_approval.app:build``."""
    executor = Executor(store, lease=LEASE)
    executor.register(KIND, functools.partial(refund_agent, Ledger.from_environment()))
    return executor


# -- submitting ------------------------------------------------------------------------


def cents(amount: str) -> int:
    try:
        value = decimal.Decimal(amount) * 100
    except decimal.InvalidOperation:
        raise ValueError(f"not an amount: {amount!r} (write it as 25.00)") from None
    if value != value.to_integral_value():
        raise ValueError(f"not a whole number of cents: {amount!r}")
    return int(value)


async def submit(request: RefundRequest, url: str | None) -> str:
    async with outlast.open(url) as store:
        return await build(store).submit(KIND, request.to_json())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.refund_approval.app",
        description="Submit a refund for a worker to run; prints the run id.",
    )
    parser.add_argument("order", help="the order to refund, e.g. A-1001")
    parser.add_argument("amount", help="the amount, e.g. 25.00")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for approval, then decline (default: wait for ever)",
    )
    parser.add_argument("--url", default=None, help="store URL (default: $OUTLAST_URL)")
    args = parser.parse_args(argv)
    try:
        request = RefundRequest(args.order, cents(args.amount), args.timeout)
    except ValueError as exc:
        parser.error(str(exc))
    run_id = asyncio.run(submit(request, args.url))
    print(run_id)
    print(
        f"submitted; approve it with: outlast runs send {run_id} '{{\"approved\": true}}'",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
