"""Executor overhead per step, without a store, as the transcript grows.

    python bench/executor_step.py [--steps 5000] [--repeat 5]

One Agent run of ``--steps`` steps: each step is one model reply calling one
tool and the tool's ~1 KiB result (two messages), so the transcript ends
with 2 x steps + 1 messages. The model and the tool are constant-time
stand-ins (a reply built from a counter, a fixed string), so what is timed is
outlast's own work per step: the loop, the step engine, ids, usage, events.
Prints the median microseconds per step over windows of 100 steps at several
transcript lengths, the best of ``--repeat`` runs (min-max across runs in
brackets).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Sequence

from outlast import Agent, Executor, Message, Tool, ToolCall
from outlast.messages import JSON, JSONObject

RESULT = "x" * 1024


class CountingModel:
    """Replies with a tool call until ``steps`` replies were given, then a final answer."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.calls = 0
        self.stamps: list[float] = []

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        self.stamps.append(time.perf_counter())
        self.calls += 1
        if self.calls > self.steps:
            return Message.assistant("done")
        return Message.assistant(None, (ToolCall(f"c{self.calls}", "work", {"n": self.calls}),))


def work(arguments: JSONObject) -> JSON:
    return RESULT


async def one_run(steps: int) -> list[float]:
    model = CountingModel(steps)
    executor = Executor(None)
    executor.register(
        "bench", Agent(model, [Tool("work", "", work)], max_steps=steps + 1, tool_concurrency=1)
    )
    await executor.run("bench", "go")
    stamps = model.stamps
    return [(b - a) * 1e6 for a, b in itertools.pairwise(stamps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs = [asyncio.run(one_run(args.steps)) for _ in range(args.repeat)]
    print(f"executor step cost without a store, {args.steps} steps, best of {args.repeat} runs")
    print(f"{'messages':>9} {'median us/step':>15}  (min-max across runs)")
    for step in (5, 50, 500, 2500, 5000):
        if step + 100 > args.steps + 1:
            step = args.steps - 100
        windows = [statistics.median(run[step : step + 100]) for run in runs]
        print(f"{2 * step + 1:>9} {min(windows):>15.1f}  ({min(windows):.1f}-{max(windows):.1f})")


if __name__ == "__main__":
    main()
