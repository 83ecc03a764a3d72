"""S3 save latency with compaction, and bytes stored, against moto on loopback.

    .venv/bin/python bench/s3_compaction.py [--saves 1000] [--runs 3] [--compact-after 64]
                                            [--sample-every 100]

Starts moto's S3 server (``moto_server``, from ``moto[server]``) in a child
process on a free loopback port (so client and server do not share a GIL),
creates a bucket, and for each run begins one run and saves it ``--saves``
times, each save adding one ~1 KiB message (checkpoint after every step). It
reports the save latency distribution (median, p99, max) over all saves and
split three ways: the saves that took the run past ``compact_after`` segments
(which compacted, or started a compaction), the 4 saves after each of them
(which a background compaction overlaps), and the others; the S3 requests;
and the bytes stored under the run's prefix against the transcript's own
bytes (its messages as compact JSON, ``codec.dumps`` of their ``to_json()``),
sampled every ``--sample-every`` saves (100) outside the timed calls once any
background compaction has settled. Everything it wrote is deleted and the
server stopped at the end.

moto is not S3: a PUT to moto on loopback costs a few milliseconds of Python,
a PUT to S3 tens of milliseconds of network and service time. The numbers say
which save pays for compaction and how much, not what S3 will take.

To measure another version of the adapter, put its ``src`` first on
PYTHONPATH (the script prints which ``outlast_s3`` it imported).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

import outlast
import outlast_s3
from outlast.adapter import CheckpointState, Message, RunStart, codec

BUCKET = "outlast-bench"
REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Moto:
    """``moto_server`` in a child process, stopped by its pid."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        server = Path(sys.executable).with_name("moto_server")
        self._process = subprocess.Popen(  # noqa: S603 - the venv's moto_server, fixed args
            [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> Moto:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise SystemExit("moto_server did not start")

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, config=Config())


def _stored_bytes(client: Any, prefix: str) -> tuple[int, int]:
    """Bytes and objects under ``prefix``."""
    size = count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", ()):
            size += int(item["Size"])
            count += 1
    return size, count


def _transcript_bytes(history: list[Message]) -> int:
    return len(codec.dumps([m.to_json() for m in history]).encode())


async def _settle(checkpointer: object) -> None:
    """Wait for a background compaction, when the adapter has one."""
    settled = getattr(checkpointer, "settled", None)
    if settled is not None:
        await settled()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_run(
    endpoint: str, prefix: str, saves: int, compact_after: int, sample_every: int = 100
) -> dict[str, Any]:
    url = (
        f"s3://{BUCKET}/{prefix}?endpoint_url={endpoint}&region={REGION}"
        f"&compact_after={compact_after}"
    )
    store = outlast.open(url)
    backend: Any = store.backend
    client = _client(endpoint)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        checkpointer = await store.begin(RunStart(run_id, "bench", None, owner="bench"))
        history: list[Message] = []
        timings: list[float] = []
        ratios: list[tuple[int, float, int]] = []
        for step in range(saves):
            history.append(Message.tool(f"c{step}", "t", f"{step:06d} " + "x" * 1000))
            state = CheckpointState(tuple(history))
            started = time.perf_counter()
            await checkpointer.save(state)
            timings.append(time.perf_counter() - started)
            if (step + 1) % sample_every == 0:
                await _settle(checkpointer)
                stored, objects = _stored_bytes(client, f"{prefix}/")
                ratios.append((step + 1, stored / _transcript_bytes(history), objects))
        await _settle(checkpointer)
        total_requests = backend.requests
        started = time.perf_counter()
        loaded = await store.load(run_id)
        load_ms = (time.perf_counter() - started) * 1000
        assert loaded is not None and loaded.state.history == tuple(history)
        await store.delete(run_id)
    finally:
        await store.close()
        leftovers = [
            item["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix=f"{prefix}/"
            )
            for item in page.get("Contents", ())
        ]
        for start in range(0, len(leftovers), 1000):
            client.delete_objects(
                Bucket=BUCKET,
                Delete={"Objects": [{"Key": k} for k in leftovers[start : start + 1000]]},
            )
        client.close()
    ms = [t * 1000 for t in timings]
    # A run's segments pass compact_after at save compact_after + 1, and
    # (compaction keeps one segment) every compact_after saves after that.
    starts = set(range(compact_after, saves, compact_after))  # 0-based indexes
    after = {i + k for i in starts for k in range(1, 5)} - starts
    return {
        "median": statistics.median(ms),
        "p99": _pct(ms, 0.99),
        "max": max(ms),
        "slowest": sorted(range(len(ms)), key=ms.__getitem__)[-5:],
        "compacting": [ms[i] for i in sorted(starts) if i < len(ms)],
        "overlapped": [ms[i] for i in sorted(after) if i < len(ms)],
        "others": [m for i, m in enumerate(ms) if i not in starts and i not in after],
        "all_requests": total_requests,
        "ratios": ratios,
        "load_ms": load_ms,
        "timings": ms,
    }


async def bench(args: argparse.Namespace) -> None:
    with Moto() as moto:
        client = _client(moto.endpoint)
        client.create_bucket(Bucket=BUCKET)
        results = []
        for index in range(args.runs):
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            result = await one_run(
                moto.endpoint, prefix, args.saves, args.compact_after, args.sample_every
            )
            results.append(result)
            final = result["ratios"][-1] if result["ratios"] else None
            print(
                f"run {index + 1}: save median {result['median']:.2f} ms, "
                f"p99 {result['p99']:.2f} ms, max {result['max']:.2f} ms "
                f"(slowest saves #{', #'.join(str(i + 1) for i in result['slowest'])}); "
                f"{result['all_requests']} S3 requests in all; "
                f"load {result['load_ms']:.1f} ms"
            )
            for part in ("compacting", "overlapped", "others"):
                values = result[part]
                if values:
                    print(
                        f"       {part} ({len(values)} saves): median "
                        f"{statistics.median(values):.2f} ms, p99 {_pct(values, 0.99):.2f} ms, "
                        f"max {max(values):.2f} ms"
                    )
            if final is not None:
                worst = max(result["ratios"], key=lambda r: r[1])
                print(
                    f"       bytes stored / transcript bytes: {final[1]:.3f} at {final[0]} "
                    f"messages ({final[2]} objects); max {worst[1]:.3f} (at {worst[0]}); "
                    + ", ".join(f"{n}:{r:.2f}" for n, r, _ in result["ratios"][-10:])
                )
                grown = [r for r in result["ratios"] if r[0] >= 100]
                if grown:
                    top = max(grown, key=lambda r: r[1])
                    print(
                        f"       from 100 messages on: max {top[1]:.3f} (at {top[0]}), "
                        f"min {min(r[1] for r in grown):.3f}"
                    )
        client.delete_bucket(Bucket=BUCKET)
        client.close()
    pooled = [t for r in results for t in r["timings"]]
    for part in ("compacting", "overlapped", "others"):
        values = [t for r in results for t in r[part]]
        if values:
            print(
                f"all runs, {part} ({len(values)} saves): "
                f"median {statistics.median(values):.2f} ms, "
                f"p99 {_pct(values, 0.99):.2f} ms, max {max(values):.2f} ms"
            )
    print(
        f"all {len(pooled)} saves: median {statistics.median(pooled):.2f} ms, "
        f"p99 {_pct(pooled, 0.99):.2f} ms, max {max(pooled):.2f} ms; "
        f"median of the run medians {statistics.median(r['median'] for r in results):.2f} ms, "
        f"p99 {min(r['p99'] for r in results):.2f}-{max(r['p99'] for r in results):.2f} ms, "
        f"max {min(r['max'] for r in results):.2f}-{max(r['max'] for r in results):.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compact-after", type=int, default=64)
    parser.add_argument(
        "--sample-every", type=int, default=100, help="saves between two bytes-stored samples"
    )
    args = parser.parse_args()
    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    os.environ.pop("AWS_PROFILE", None)
    print(
        f"outlast_s3 from {Path(outlast_s3.__file__).parent}; python {platform.python_version()}, "
        f"{os.cpu_count()} cores, moto_server on loopback (a child process)"
    )
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
