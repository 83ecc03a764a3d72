"""Executor overhead per step, without a store, as the transcript grows.

    python bench/executor_step.py [--steps 5000] [--repeat 5] [--observers]

One Agent run of ``--steps`` steps: each step is one model reply calling one
tool and the tool's ~1 KiB result (two messages), so the transcript ends
with 2 x steps + 1 messages. The model and the tool are constant-time
stand-ins (a reply built from a counter, a fixed string), so what is timed is
outlast's own work per step: the loop, the step engine, ids, usage, events.

Installed plugins that observe events (``outlast_event`` hooks, such as
outlast-opentelemetry) are left out of the run unless ``--observers`` is
given: their work is theirs, not the executor's (with none listening, the
executor builds no events). The line above the table names them.

Prints, at several transcript lengths, the median microseconds per step over
windows of 100 steps, the best of ``--repeat`` runs (min-max across runs in
brackets): ``step`` is from one model call to the next, everything
included; ``outside the model`` leaves out the time spent inside the stand-in
model's ``complete`` (building its reply), so it is outlast's work plus the
instant tool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence

from outlast import Agent, Executor, Message, Tool, ToolCall
from outlast.messages import JSON, JSONObject
from outlast.plugins import plugin_manager

RESULT = "x" * 1024


class CountingModel:
    """Replies with a tool call until ``steps`` replies were given, then a final answer."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.calls = 0
        self.entered: list[float] = []
        self.left: list[float] = []

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        self.entered.append(time.perf_counter())
        self.calls += 1
        if self.calls > self.steps:
            reply = Message.assistant("done")
        else:
            reply = Message.assistant(
                None, (ToolCall(f"c{self.calls}", "work", {"n": self.calls}),)
            )
        self.left.append(time.perf_counter())
        return reply


def work(arguments: JSONObject) -> JSON:
    return RESULT


async def one_run(steps: int) -> list[float]:
    """µs per step, from one model call to the next."""
    return (await timed_run(steps))[0]


async def timed_run(steps: int) -> tuple[list[float], list[float]]:
    """µs per step, from one model call to the next and outside the model."""
    model = CountingModel(steps)
    executor = Executor(None)
    executor.register(
        "bench", Agent(model, [Tool("work", "", work)], max_steps=steps + 1, tool_concurrency=1)
    )
    await executor.run("bench", "go")
    entered, left = model.entered, model.left
    step = [(entered[k + 1] - entered[k]) * 1e6 for k in range(len(entered) - 1)]
    outside = [(entered[k + 1] - left[k]) * 1e6 for k in range(len(entered) - 1)]
    return step, outside


@contextlib.contextmanager
def without_observers() -> Iterator[list[str]]:
    """Within the block, the plugins observing events are unregistered; yields their names."""
    manager = plugin_manager()
    observers = [impl.plugin for impl in manager.hook.outlast_event.get_hookimpls()]
    names = [manager.get_name(plugin) or repr(plugin) for plugin in observers]
    for plugin in observers:
        manager.unregister(plugin)
    try:
        yield names
    finally:
        for plugin, name in zip(observers, names, strict=True):
            manager.register(plugin, name=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--observers", action="store_true", help="keep installed observers")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.observers:
            manager = plugin_manager()
            impls = manager.hook.outlast_event.get_hookimpls()
            listening = ", ".join(impl.plugin_name for impl in impls) or "none"
            observers = f"observers timed too: {listening}"
        else:
            left_out = ", ".join(stack.enter_context(without_observers())) or "none"
            observers = f"observers left out: {left_out}"
        runs = [asyncio.run(timed_run(args.steps)) for _ in range(args.repeat)]
    print(f"executor step cost without a store, {args.steps} steps, best of {args.repeat} runs")
    print(f"({observers})")
    print(f"{'messages':>9} {'step, us':>16} {'outside the model, us':>26}")
    for step in (5, 50, 500, 2500, 5000):
        if step + 100 > args.steps + 1:
            step = args.steps - 100
        cells = []
        for which in (0, 1):
            windows = [statistics.median(run[which][step : step + 100]) for run in runs]
            cells.append(f"{min(windows):.1f} ({min(windows):.1f}-{max(windows):.1f})")
        print(f"{2 * step + 1:>9} {cells[0]:>16} {cells[1]:>26}")


if __name__ == "__main__":
    main()
