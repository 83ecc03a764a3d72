"""A worker process that dies in the middle of a tool, and the agent it runs.

``python -m outlast_conformance.step_worker`` reads one JSON line from stdin::

    {"url": ..., "namespace": ..., "run_id": ..., "journal": <folder>,
     "charge": "retryable" | "reconciled" | "unreconciled", "lease": <seconds>}

(the URL comes on stdin, not the command line, so no password shows in a
process listing), opens the store at URL (the adapter must be installed) and
runs :func:`agent` as run ``run_id`` with an Executor of that lease. Its
``charge`` tool blocks forever once it has started: the test kills the
process there and recovers the run in its own process with the same agent,
told not to block.

Every model call and every tool call appends one JSON line to the test's
:class:`Journal`, with the process id, so the test counts what each process
did after the kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import outlast
from outlast import Agent, AwaitInput, Executor, Message, ScriptedModel, Tool, ToolCall, ToolContext
from outlast.messages import JSON, JSONObject

KIND = "charge-for-a-book"
INPUT: JSON = {"item": "book", "amount": 40}
LOOK_UP_CALL = "c1"
CHARGE_CALL = "c2"
FINAL = "charged 40 EUR for the book"
SCRIPT: tuple[Message, ...] = (
    Message.assistant(
        None, (ToolCall(LOOK_UP_CALL, "look_up", {"item": "book"}),), usage={"output_tokens": 3}
    ),
    Message.assistant(
        None, (ToolCall(CHARGE_CALL, "charge", {"amount": 40}),), usage={"output_tokens": 5}
    ),
    Message.assistant(FINAL, usage={"output_tokens": 7}),
)
"""Look the book up, charge for it, answer: three replies, one model call each."""

RECONCILED = "the charge was found by its idempotency key: 40 EUR, settled"
"""What the ``reconcile`` hook of the ``reconciled`` charge answers."""

APPROVAL: JSON = {"approve": "charge 40 EUR for the book?", "limit": [40, None]}
"""What the ``awaits_input`` charge asks for (AwaitInput's request)."""

Charge = Literal["retryable", "reconciled", "unreconciled", "awaits_input"]
"""The charge tool: retry=True; retry=False with a reconcile hook; retry=False
without one; one that raises AwaitInput(APPROVAL)."""


class Journal:
    """JSON lines appended to files of one folder, by every process of a test.

    Each entry is written by one ``write`` call of an ``O_APPEND`` file, so
    entries of processes never interleave; a reader skips a last line that
    is still being written.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, entry: JSONObject) -> None:
        line = json.dumps({"pid": os.getpid(), **entry}, ensure_ascii=False) + "\n"
        fd = os.open(self.folder / f"{name}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def read(self, name: str) -> list[dict[str, Any]]:
        """Every complete entry of ``name``, oldest first."""
        try:
            text = (self.folder / f"{name}.jsonl").read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def tool_calls(self, tool: str) -> list[dict[str, Any]]:
        """The calls of ``tool``, oldest first."""
        return [entry for entry in self.read("tools") if entry["tool"] == tool]


class JournaledModel:
    """The scripted model, writing what it was shown to the journal first."""

    def __init__(self, script: Sequence[Message], journal: Journal) -> None:
        self.scripted = ScriptedModel(script)
        self.journal = journal

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        results: JSONObject = {m.tool_call_id or "": m.text for m in messages if m.role == "tool"}
        roles: list[JSON] = [*sorted({m.role for m in messages})]
        self.journal.write(
            "model",
            {
                "turn": sum(1 for m in messages if m.role == "assistant"),
                "roles": roles,
                "results": results,
            },
        )
        return await self.scripted.complete(messages, tools)


def agent(journal: Journal, charge: Charge, *, block: bool = False) -> Agent:
    """The agent of the crash tests: look_up, then charge (``block``: forever)."""

    def look_up(arguments: JSONObject, context: ToolContext) -> JSON:
        journal.write("tools", {"tool": "look_up", "key": context.idempotency_key})
        return {"item": arguments.get("item"), "price": 40}

    async def charge_handler(arguments: JSONObject, context: ToolContext) -> JSON:
        journal.write(
            "tools",
            {"tool": "charge", "key": context.idempotency_key, "attempt": context.attempt},
        )
        if charge == "awaits_input":
            raise AwaitInput(APPROVAL)
        if block:  # the worker is killed while the charge is in flight
            await asyncio.Event().wait()
        return "charged 40 EUR"

    def reconcile(arguments: JSONObject, context: ToolContext) -> JSON:
        journal.write(
            "reconcile", {"key": context.idempotency_key, "reconciling": context.reconciling}
        )
        return RECONCILED

    tool = Tool(
        "charge",
        "charges the customer",
        charge_handler,
        retry=charge in ("retryable", "awaits_input"),
        reconcile=reconcile if charge == "reconciled" else None,
    )
    return Agent(
        model=JournaledModel(SCRIPT, journal),
        tools=(Tool("look_up", "finds an item's price", look_up), tool),
    )


async def main() -> None:
    config: dict[str, Any] = json.loads(await asyncio.to_thread(sys.stdin.readline))
    store = outlast.open(config["url"])
    try:
        executor = Executor(
            store,
            namespace=config["namespace"],
            owner=f"step-worker-{os.getpid()}",
            lease=float(config["lease"]),
        )
        executor.register(
            KIND, agent(Journal(Path(config["journal"])), config["charge"], block=True)
        )
        await executor.run(KIND, INPUT, run_id=config["run_id"])
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
