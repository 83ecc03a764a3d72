"""The workload every target runs, and the stopwatch every step goes through.

* **A step of the store workload** appends one ~1 KiB message and saves
  (checkpoints) the run: assistant replies (~1 KiB of text and one tool call)
  and tool results (~1 KiB) in turn. The text is words drawn from a small
  vocabulary by a seeded generator: it compresses about as well as prose
  (PostgreSQL's TOAST and nothing else here compresses; a run of one repeated
  character would flatter whatever compresses).
* **An agent step** (the executor and the peers) is what a tool-calling
  agent does: the model's reply calling one tool (~100 bytes) and the tool's
  ~1 KiB result, so the transcript grows by two messages a step.

:class:`Gate` lets the bench drive several whole frameworks' runs one step
at a time, round-robin, in one event loop: each run's code waits at
``turn()`` before each step, and the bench times from letting it go to its
next ``turn()`` -- one complete step, checkpoint included, whoever's
framework it is.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable
from typing import TypeVar

from outlast import Message, ToolCall
from outlast.adapter import codec

VOCABULARY = (
    "the run agent model tool call result step store saved checkpoint worker lease claim resume "
    "transcript message durable queue fleet server client reply search query page order refund "
    "customer invoice amount total status pending approved because when while after before with "
    'without into from over under about every "quoted" value, number 42 3.14 true false null '
    '{"key": [1, 2, 3]} \\ tab\tnewline\n'
)
WORDS = VOCABULARY.split(" ")  # "tab\tnewline\n" stays one word: escapes to store
SIZE = 1000
T = TypeVar("T")


def text(seed: int, size: int = SIZE) -> str:
    """``size`` characters of word salad, the same for the same seed."""
    rng = random.Random(seed)  # noqa: S311 - reproducible text, not secrets
    parts: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        parts.append(word)
        length += len(word) + 1
    return " ".join(parts)[:size]


def store_message(i: int) -> Message:
    """Message ``i`` of the store workload: ~1 KiB, a reply or a tool result in turn."""
    if i % 2:
        return Message.tool(f"call-{i - 1}", "search", text(i))
    call = ToolCall(f"call-{i}", "search", {"query": text(-i, 60)})
    return Message.assistant(text(i, SIZE - 150), (call,))


def agent_reply(step: int) -> Message:
    """The model's reply of an agent step: one tool call, ~100 bytes."""
    return Message.assistant(None, (ToolCall(f"call-{step}", "search", {"query": f"q{step}"}),))


def agent_result(step: int) -> Message:
    """The tool's result of an agent step: ~1 KiB."""
    return Message.tool(f"call-{step}", "search", text(step))


def encoded(message: Message) -> str:
    """The message as outlast stores it (its JSON)."""
    return codec.encode_message(message)


def as_dict(message: Message) -> dict[str, object]:
    """The same JSON as a dict: what the peers are given to store."""
    value = json.loads(encoded(message))
    assert isinstance(value, dict)
    return value


def transcript_bytes(messages: list[Message]) -> int:
    """The transcript's own bytes: its messages' JSON, UTF-8."""
    return sum(len(encoded(m).encode()) for m in messages)


class Gate:
    """A run and the bench take turns, one step at a time (see the module doc)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arrived: asyncio.Future[float] = self._loop.create_future()
        self._go: asyncio.Future[None] | None = None
        self.task: asyncio.Task[object] | None = None

    async def turn(self) -> None:
        """Called by the run before each step: wait until the bench lets it go."""
        arrived_at = time.perf_counter()
        loop = asyncio.get_running_loop()
        go: asyncio.Future[None] = loop.create_future()
        self._go = go
        _resolve(self._arrived, arrived_at)
        await go

    def start(self, run: Awaitable[object]) -> None:
        """Start the run; the end of the run counts as an arrival too."""

        async def whole() -> object:
            value = await run  # an error is raised by _wait, not taken for an arrival
            _resolve(self._arrived, time.perf_counter())
            return value

        self.task = asyncio.ensure_future(whole())

    async def ready(self) -> None:
        """Wait until the run waits at its first turn."""
        await self._wait(self._arrived)

    async def step(self) -> float:
        """Let the run take one step; the seconds until its next turn (or its end)."""
        if self._go is None:  # the run ended (or failed) instead of waiting
            await self._wait(self._loop.create_future())
            raise RuntimeError("the run ended before its last step")
        self._arrived = self._loop.create_future()
        go = self._go
        self._go = None
        released = time.perf_counter()
        _resolve(go, None)
        arrived_at = await self._wait(self._arrived)
        return arrived_at - released

    async def finish(self) -> object:
        assert self.task is not None
        return await self.task

    async def _wait(self, arrived: asyncio.Future[float]) -> float:
        """``arrived``'s time, or the run's error if it failed before arriving."""
        assert self.task is not None
        await asyncio.wait({arrived, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not arrived.done() and self.task.done():
            self.task.result()  # raises the run's error
            raise RuntimeError("the run ended without arriving")
        return arrived.result()


def _resolve(future: asyncio.Future[T], value: T) -> None:
    """Set ``future`` from any thread (DBOS runs parts of a workflow in threads)."""

    def set_now() -> None:
        if not future.done():
            future.set_result(value)

    loop = future.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        set_now()
    else:
        loop.call_soon_threadsafe(set_now)
