"""One racer process of the multi-process conformance tests.

``python -m outlast_conformance.racer URL NAMESPACE`` opens the store at URL
(the adapter must be installed), says ``{"ready": true}`` once connected, then
answers one JSON line per command read from stdin::

    {"op": "claim" | "begin", "run_id": "...", "at": <time.monotonic()>}
    {"op": "begin", "run_ids": [...], "lease": <seconds>, "at": ...}   (begins each)
    {"op": "poll", "seconds": <s>, "at": ...}   (reads interrupted() for s seconds)
    {"op": "drain", "at": ...}   (claim_next of kind "race" until none is left)
    -> {"won": true | false, "claimed": [run ids]}  or  {"error": "..."}

``at`` is when to act (the machine's monotonic clock is shared by its
processes), so every racer acts at the same moment. stdin closing ends it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import outlast
from outlast.adapter import CheckpointerFactory, NotWaiting, RunExists, RunStart


async def act(
    store: CheckpointerFactory, namespace: str, command: dict[str, Any], claimed: list[str]
) -> bool:
    owner = f"racer-{os.getpid()}"
    op = command["op"]
    if op == "claim":
        claim = await store.claim(command["run_id"], owner=owner, lease=3600, namespace=namespace)
        return claim is not None
    if op == "drain":  # a worker taking runs until none is left
        while claim := await store.claim_next(
            ["race"], owner=owner, lease=3600, namespace=namespace
        ):
            claimed.append(claim.record.run_id)
        return True
    if op == "send":  # a sender delivering input to a waiting run
        try:
            await store.send(command["run_id"], {"from": os.getpid()}, namespace)
        except NotWaiting:
            return False
        return True
    if op == "poll":  # a worker watching the work list while others begin
        until = time.monotonic() + float(command["seconds"])
        while True:
            await store.interrupted(namespace, limit=1000)
            if time.monotonic() >= until:
                return True
    won = True
    for run_id in command.get("run_ids") or [command["run_id"]]:
        lease = float(command.get("lease", 3600))
        try:
            await store.begin(RunStart(run_id, "race", os.getpid(), namespace, owner, lease))
        except RunExists:
            won = False
    return won  # begun, then left to expire: this racer "dies" without a release


async def main(url: str, namespace: str) -> None:
    store = outlast.open(url)
    try:
        await store.load("racer-warm-up", namespace)  # connect now, not in the race
        print(json.dumps({"ready": True}), flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            command: dict[str, Any] = json.loads(line)
            delay = float(command["at"]) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # act together with the other racers
            claimed: list[str] = []
            try:
                won = await act(store, namespace, command, claimed)
                reply: dict[str, object] = {"won": won, "claimed": claimed}
            except Exception as exc:  # noqa: BLE001 - reported to the test, which fails
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
