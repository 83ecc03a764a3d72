"""Small helpers the suite's tests share: ids, sample data, bounded waits."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from outlast.adapter import (
    JSON,
    Checkpointer,
    CheckpointerFactory,
    CheckpointState,
    LeaseLost,
    Message,
    PhaseOutput,
    RunRecord,
    RunStart,
    StoredRun,
)
from outlast.messages import ToolCall

T = TypeVar("T")

POLL_INTERVAL = 0.01
"""How often a wait re-checks its condition (seconds)."""


def unique(prefix: str) -> str:
    """A fresh id, so tests sharing one store (one database) never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def start(
    namespace: str,
    *,
    run_id: str | None = None,
    kind: str = "conformance",
    input: JSON = None,
    lease: float = 30.0,
    owner: str = "worker-a",
) -> RunStart:
    """A RunStart with a unique run id unless one is given."""
    return RunStart(
        run_id=run_id or unique("run"),
        kind=kind,
        input=input,
        namespace=namespace,
        owner=owner,
        lease=lease,
    )


def conversation(count: int, *, tag: str = "m") -> tuple[Message, ...]:
    """``count`` messages alternating user/assistant, each with distinct text."""
    return tuple(
        Message.user(f"{tag}{i}: question")
        if i % 2 == 0
        else Message.assistant(f"{tag}{i}: answer")
        for i in range(count)
    )


def tool_exchange(call_id: str = "call-1") -> tuple[Message, ...]:
    """An assistant message calling a tool, and the tool's reply."""
    call = ToolCall(
        call_id, "lookup", {"query": "ünïcödé", "limit": 3, "filters": {"a": [1, None]}}
    )
    return (
        Message.assistant(None, (call,)),
        Message.tool(call_id, "lookup", '{"hits": []}'),
    )


def state(
    history: tuple[Message, ...] = (), phases: tuple[PhaseOutput, ...] = ()
) -> CheckpointState:
    return CheckpointState(history, phases)


async def must_load(factory: CheckpointerFactory, run_id: str, namespace: str) -> StoredRun:
    """Load a run the test knows exists."""
    stored = await factory.load(run_id, namespace)
    assert stored is not None, f"run {run_id!r} in namespace {namespace!r} was not found"
    return stored


async def interrupted_ids(factory: CheckpointerFactory, namespace: str) -> set[str]:
    return {record.run_id for record in await factory.interrupted(namespace, limit=1000)}


async def wait_for(
    condition: Callable[[], Awaitable[T | None]],
    *,
    within: float,
    what: str,
) -> T:
    """Poll ``condition`` until it returns something truthy; return that.

    Fails the test (AssertionError) naming ``what`` after ``within`` seconds.
    Used instead of sleeping: a lease expiring, a purge seeing an old record.
    """
    deadline = time.monotonic() + within
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


async def wait_interrupted(
    factory: CheckpointerFactory, run_id: str, namespace: str, *, within: float
) -> RunRecord:
    """Wait until ``run_id`` shows up in ``interrupted(namespace)``; its record."""

    async def listed() -> RunRecord | None:
        for record in await factory.interrupted(namespace, limit=1000):
            if record.run_id == run_id:
                return record
        return None

    return await wait_for(listed, within=within, what=f"run {run_id!r} to be interrupted")


async def writes_not_fenced(cp: Checkpointer, state: CheckpointState) -> list[str]:
    """Try every write of ``cp``; the names of those that did NOT raise LeaseLost.

    Each write is attempted even when an earlier one wrongly succeeded, so a
    failing test names every unfenced write at once.
    """
    writes: dict[str, Callable[[], Awaitable[object]]] = {
        "save": lambda: cp.save(state),
        "complete": lambda: cp.complete("stale result"),
        "fail": lambda: cp.fail("stale error"),
        "release": cp.release,
        "renew": cp.renew,
        "wait": lambda: cp.wait({"stale": "wait"}, None),
    }
    unfenced = []
    for name, write in writes.items():
        try:
            await write()
        except LeaseLost:
            continue
        unfenced.append(name)
    return unfenced


async def clock_moves(seconds: float = 0.005) -> None:
    """Wait until this machine's clock has moved on by ``seconds``.

    Used between two writes that must get different ``updated_at`` values: a
    store's clock (its server's, or this machine's) ticks at the same rate,
    so once ours has moved, the next write is stamped later. A bounded wait
    on the clock itself, not a guess at how long something takes.
    """
    until = time.time() + seconds
    while time.time() < until:  # noqa: ASYNC110 - the clock itself is the condition
        await asyncio.sleep(until - time.time())


def winners_message(won: int, of: int, what: str) -> str:
    """The failure message of a race: how many won, and that exactly one must."""
    return f"{won} of {of} {what} won; exactly one must"
