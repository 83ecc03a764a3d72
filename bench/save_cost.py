"""How a save's cost grows with the transcript: it should not (delta writes).

    python bench/save_cost.py [URL] [--steps N]

Begins one run and saves a transcript growing by one step (an assistant reply
plus a tool result, ~1 KiB each) N times, then reports the median time of the
first and the last 100 saves and the time to load the whole transcript back.
With delta writes the two medians are about equal; a store that rewrote the
whole transcript would be ~N/100 times slower at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid

import outlast
from outlast import Message, ToolCall
from outlast.adapter import CheckpointState, RunStart, redact


async def measure(url: str, steps: int) -> None:
    store = outlast.open(url)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    cp = await store.begin(RunStart(run_id, "bench", None, namespace="bench", owner="b"))
    history: list[Message] = [Message.user("start")]
    timings: list[float] = []
    for step in range(steps):
        history.append(Message.assistant(None, (ToolCall(f"c{step}", "t", {"i": step}),)))
        history.append(Message.tool(f"c{step}", "t", "x" * 1000))
        state = CheckpointState(tuple(history))
        started = time.perf_counter()
        await cp.save(state)
        timings.append(time.perf_counter() - started)
    started = time.perf_counter()
    loaded = await store.load(run_id, "bench")
    load_time = time.perf_counter() - started
    assert loaded is not None and len(loaded.state.history) == len(history)
    await store.delete(run_id, "bench")
    await store.close()
    first = statistics.median(timings[:100]) * 1000
    last = statistics.median(timings[-100:]) * 1000
    print(f"store: {redact(url)}")
    print(f"saves: {steps} (transcript grows to {len(history)} messages)")
    print(f"median save, first 100: {first:.3f} ms; last 100: {last:.3f} ms")
    print(f"load of {len(history)} messages: {load_time * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "url", nargs="?", default=None, help="store URL (default: a temp SQLite file)"
    )
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    if args.url:
        asyncio.run(measure(args.url, args.steps))
        return
    with tempfile.TemporaryDirectory() as scratch:
        asyncio.run(measure(f"sqlite:///{scratch}/bench.db", args.steps))


if __name__ == "__main__":
    main()
