"""One OS process of the index race test (test_redis_index_race.py).

``python index_race_worker.py poll URL NAMESPACE``
    says ``ready`` once connected, then calls ``interrupted(NAMESPACE)`` in a
    loop (as a fleet of idle workers does) until its stdin closes.

``python index_race_worker.py begin URL NAMESPACE TAG COUNT LEASE``
    begins COUNT runs ``TAG-0``, ``TAG-1``... leased for LEASE seconds,
    prints each run id once its ``begin`` returned, then dies without
    finishing, releasing or closing anything (``os._exit``), as a worker
    killed by a deploy does.
"""

from __future__ import annotations

import asyncio
import os
import sys

import outlast
from outlast.adapter import RunStart


async def poll(url: str, namespace: str) -> None:
    store = outlast.open(url)
    try:
        await store.load("warm-up", namespace)  # connect and load the scripts now
        print("ready", flush=True)
        stop = asyncio.ensure_future(asyncio.to_thread(sys.stdin.read))
        while not stop.done():
            await store.interrupted(namespace, limit=1000)
        await stop
    finally:
        await store.close()


async def begin(url: str, namespace: str, tag: str, count: int, lease: float) -> None:
    store = outlast.open(url)
    await store.load("warm-up", namespace)
    for index in range(count):
        run_id = f"{tag}-{index}"
        await store.begin(RunStart(run_id, "race", index, namespace, f"owner-{tag}", lease))
        print(run_id, flush=True)
    os._exit(0)  # the owner dies: no release, no close


def main(argv: list[str]) -> None:
    mode, url, namespace, *rest = argv
    if mode == "poll":
        asyncio.run(poll(url, namespace))
    else:
        tag, count, lease = rest
        asyncio.run(begin(url, namespace, tag, int(count), float(lease)))


if __name__ == "__main__":
    main(sys.argv[1:])
