"""outlast-redis against the round-trip floor: save, resume, bytes stored, parsers.

    python bench/redis_perf.py [URL | --private] [--parser both|python|hiredis]

Measures, on one Redis server (``--private``: a throwaway ``redis-server`` of
its own on a free loopback port, stopped by its PID at the end; else URL,
default ``redis://127.0.0.1:6379/0``, where every key goes under a prefix of
its own and is deleted at the end), with ~1 KiB messages:

* **save vs RPUSH**: a one-message ``save`` of a run whose transcript holds
  ~10, ~100 and ~1,000 messages, against a raw ``RPUSH`` of the same encoded
  bytes on the same connection (the floor: one round trip appending those
  bytes), pair by pair, the lengths and parsers interleaved so drift in the
  machine's load hits all alike. Median, p99, ratio of the medians.
* **resume** of a 10,000-message run: ``claim`` (outlast's resume: takes the
  run over and hands back its transcript), and ``load``, each whole and split
  into the round trips (what redis-py hands over, not yet decoded) and
  outlast's decoding (JSON to messages). The run is released between claims,
  so every claim is a real one.
* **bytes stored**: ``MEMORY USAGE ... SAMPLES 0`` of the run's keys against
  the transcript's own JSON bytes.
* **round trips** of a save, a claim and a load (commands sent).

``--parser both`` runs everything with redis-py's pure-Python parser and with
hiredis's (forced through redis-py's ``parser_class``), alternating;
hiredis must be importable (``pip install "outlast-redis[hiredis]"``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import redis
from redis._parsers import _AsyncHiredisParser, _AsyncRESP3Parser
from redis.utils import HIREDIS_AVAILABLE

from outlast import Message, ToolCall
from outlast.adapter import CheckpointState, RunStart, codec, redact
from outlast_redis.config import parse
from outlast_redis.records import decode_state, fields_of
from outlast_redis.store import RedisStore

OLD = not hasattr(RedisStore, "inline_progress")
"""An outlast-redis from before the transcript travelled by LRANGE (for the
"before" numbers: PYTHONPATH=<its src> python bench/redis_perf.py)."""
PARSERS: dict[str, Any] = {"python": _AsyncRESP3Parser, "hiredis": _AsyncHiredisParser}
NAMESPACE = "bench"
LENGTHS = (10, 100, 1000)
WORDS = 'the quick brown fox jumps over a lazy dog while "quoted" text, tabs\tand\nnewlines'


def message(i: int) -> Message:
    """A ~1 KiB message: tool calls and their results, in turn (JSON with escapes)."""
    body = (f"{i} " + WORDS + " ") * 12
    if i % 2:
        return Message.tool(f"call-{i // 2}", "search", body[:940])
    call = ToolCall(f"call-{i // 2}", "search", {"query": body[:800], "page": i})
    return Message.assistant(body[:60], (call,))


def transcript(n: int) -> tuple[Message, ...]:
    return tuple(message(i) for i in range(n))


def quantile(seconds: list[float], q: float) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def summary(seconds: list[float]) -> str:
    return (
        f"p50 {quantile(seconds, 0.5):8.3f} ms  p99 {quantile(seconds, 0.99):8.3f} ms  "
        f"min {min(seconds) * 1000:8.3f} ms  (n={len(seconds)})"
    )


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return time.perf_counter() - started, result


def open_store(url: str, prefix: str, parser: str) -> RedisStore:
    """A store whose client parses replies with ``parser`` (redis-py's parser_class)."""
    config = parse(url, {"prefix": prefix})
    options = {**config.client_options, "parser_class": PARSERS[parser]}
    return RedisStore(dataclasses.replace(config, client_options=options))


@contextmanager
def private_server() -> Iterator[str]:
    """A throwaway redis-server (no persistence) on a free loopback port; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--private needs redis-server on PATH")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as scratch:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        server = subprocess.Popen(  # noqa: S603 - the installed binary, fixed arguments
            [binary, *args, "--dir", scratch], stdout=subprocess.DEVNULL
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)


class Counter:
    """Counts the round trips of a store's client: commands alone, and pipelines."""

    def __init__(self, store: RedisStore) -> None:
        self.trips: list[str] = []
        client = store.client
        send, open_pipeline = client.execute_command, client.pipeline

        async def counted(*args: Any, **options: Any) -> Any:
            self.trips.append(str(args[0]))
            return await send(*args, **options)

        def pipeline(*args: Any, **options: Any) -> Any:
            pipe = open_pipeline(*args, **options)
            execute = pipe.execute

            async def executed(*args: Any, **options: Any) -> Any:
                self.trips.append(f"pipeline of {len(pipe)}")
                return await execute(*args, **options)

            pipe.execute = executed  # type: ignore[method-assign]
            return pipe

        client.execute_command = counted  # type: ignore[method-assign]
        client.pipeline = pipeline  # type: ignore[method-assign]

    def take(self) -> list[str]:
        taken, self.trips = self.trips, []
        return taken


async def save_vs_rpush(
    stores: dict[str, RedisStore], samples: int, per_run: int
) -> dict[tuple[str, int], dict[str, list[float]]]:
    results: dict[tuple[str, int], dict[str, list[float]]] = {
        (name, n): {"save": [], "rpush": []} for name in stores for n in LENGTHS
    }
    history = transcript(max(LENGTHS) + per_run)
    encoded = [codec.encode_message(m) for m in history]
    for sample in range(samples):
        for length in LENGTHS:
            for name, store in stores.items():
                run_id = f"save-{uuid.uuid4().hex[:10]}"
                cp = await store.begin(RunStart(run_id, "bench", None, NAMESPACE, "b", 60.0))
                await cp.save(CheckpointState(history[: length - 1]))
                scratch = f"{store.config.prefix}:{{{NAMESPACE}}}:rpush"
                states = [CheckpointState(history[: length + k]) for k in range(per_run)]
                gc.collect()
                for k in range(per_run):
                    raw = encoded[length - 1 + k]
                    state = states[k]
                    pair: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                        ("save", partial(cp.save, state)),
                        ("rpush", partial(store.client.rpush, scratch, raw)),
                    ]
                    if (sample + k) % 2:
                        pair.reverse()
                    for what, call in pair:
                        elapsed, _ = await timed(call)
                        results[(name, length)][what].append(elapsed)
                await store.client.delete(scratch)
                await store.delete(run_id, NAMESPACE)
    return results


async def build_run(store: RedisStore, run_id: str, history: tuple[Message, ...]) -> None:
    cp = await store.begin(RunStart(run_id, "bench", None, NAMESPACE, "b", 60.0))
    for end in range(1000, len(history), 1000):
        await cp.save(CheckpointState(history[:end]))
    await cp.save(CheckpointState(history))
    await cp.release()


async def resume(
    stores: dict[str, RedisStore], messages: int, samples: int
) -> dict[str, dict[str, list[float]]]:
    """Claim and load of one run of ``messages`` messages per store, alternating."""
    history = transcript(messages)
    runs = {name: f"resume-{uuid.uuid4().hex[:10]}" for name in stores}
    parts = ("claim", "claim_cpu", "claim_trips", "load", "load_trip", "decode")
    results: dict[str, dict[str, list[float]]] = {name: {k: [] for k in parts} for name in stores}
    for name, store in stores.items():
        await build_run(store, runs[name], history)
    for _ in range(samples):
        for name, store in stores.items():
            run_id, got = runs[name], results[name]
            keys = store.run_keys(NAMESPACE, run_id)
            gc.collect()
            cpu = time.process_time()
            elapsed, claim = await timed(
                partial(store.claim, run_id, owner="bench", lease=60.0, namespace=NAMESPACE)
            )
            got["claim_cpu"].append(time.process_time() - cpu)
            assert claim is not None and len(claim.resume.history) == messages
            got["claim"].append(elapsed)
            await claim.checkpointer.release()
            del claim
            gc.collect()
            elapsed, stored = await timed(partial(store.load, run_id, NAMESPACE))
            assert stored is not None and len(stored.state.history) == messages
            got["load"].append(elapsed)
            del stored
            # The claim's round trips alone: its script, then (too long to answer
            # inline) the LRANGEs, as RedisStore.claim sends them; not decoded.
            gc.collect()
            args = [run_id, "b", "60.0", uuid.uuid4().hex, codec.FORMAT_VERSION]
            started = time.perf_counter()
            if OLD:  # the transcript in the script's reply
                reply = await store.connection.run("claim", keys.all(), args)
            else:
                reply = await store.connection.run("claim", keys.all(), [*args, 32])
                await store._progress(keys, reply[3])
            got["claim_trips"].append(time.perf_counter() - started)
            meta = fields_of(reply[2])
            owned = [run_id, int(meta["epoch"]), meta["incarnation"].decode(), uuid.uuid4().hex]
            await store.connection.run("release", keys.all(), owned)
            # The load's one round trip alone, and outlast's decoding of its reply.
            gc.collect()
            started = time.perf_counter()
            if OLD:  # the LOAD script
                meta_reply, phases, msgs = await store.connection.run("load", keys.all(), [run_id])
            else:
                transaction = store.connection.transaction()
                assert transaction is not None
                async with transaction as pipe:
                    pipe.hgetall(keys.meta)
                    pipe.lrange(keys.phases, 0, -1)
                    pipe.lrange(keys.messages, 0, -1)
                    meta_reply, phases, msgs = await pipe.execute()
            got["load_trip"].append(time.perf_counter() - started)
            started = time.perf_counter()
            decode_state(fields_of(meta_reply), phases, msgs, run_id)
            got["decode"].append(time.perf_counter() - started)
    for name, store in stores.items():
        await store.delete(runs[name], NAMESPACE)
    return results


async def bytes_stored(store: RedisStore, messages: int) -> dict[str, int]:
    history = transcript(messages)
    run_id = f"bytes-{uuid.uuid4().hex[:10]}"
    await build_run(store, run_id, history)
    keys = store.run_keys(NAMESPACE, run_id)
    usage = {}
    for label, key in (("meta", keys.meta), ("phases", keys.phases), ("msgs", keys.messages)):
        usage[label] = int(await store.client.memory_usage(key, samples=0) or 0)
    usage["stored_json"] = sum(len(codec.encode_message(m).encode()) for m in history)
    array = json.dumps([m.to_json() for m in history], ensure_ascii=False, separators=(",", ":"))
    usage["transcript_json"] = len(array.encode())
    await store.delete(run_id, NAMESPACE)
    return usage


async def round_trips(store: RedisStore) -> dict[str, list[str]]:
    trips: dict[str, list[str]] = {}
    for n in (10, 1000):
        run_id = f"rt-{uuid.uuid4().hex[:10]}"
        await build_run(store, run_id, transcript(n - 1))
        claim = await store.claim(run_id, owner="bench", lease=60.0, namespace=NAMESPACE)
        assert claim is not None
        counter = Counter(store)
        await claim.checkpointer.save(CheckpointState(transcript(n)))
        trips[f"save at {n}"] = counter.take()
        await claim.checkpointer.release()
        counter.take()
        assert await store.claim(run_id, owner="bench", lease=60.0, namespace=NAMESPACE)
        trips[f"claim of {n}"] = counter.take()
        await store.load(run_id, NAMESPACE)
        trips[f"load of {n}"] = counter.take()
        await store.delete(run_id, NAMESPACE)
    return trips


async def measure(url: str, args: argparse.Namespace) -> None:
    parsers = ["python", "hiredis"] if args.parser == "both" else [args.parser]
    if "hiredis" in parsers and not HIREDIS_AVAILABLE:
        raise SystemExit('hiredis is not importable: pip install "outlast-redis[hiredis]"')
    prefix = f"outlast-bench-{uuid.uuid4().hex[:8]}"
    stores = {name: open_store(url, prefix, name) for name in parsers}
    with redis.Redis.from_url(url) as client:
        version = client.info("server")["redis_version"]
    before = " (an outlast-redis from before LRANGE resumes)" if OLD else ""
    print(f"# outlast-redis perf{before}: {redact(url)}, Redis {version}")
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"redis-py {redis.__version__}, hiredis importable: {HIREDIS_AVAILABLE}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"
    )
    try:
        first = next(iter(stores.values()))
        print("\nround trips:")
        for what, trips in (await round_trips(first)).items():
            print(f"  {what:14} {len(trips)}: {trips}")

        usage = await bytes_stored(first, args.messages)
        stored = usage["meta"] + usage["phases"] + usage["msgs"]
        print(f"\nbytes stored, {args.messages:,} messages: MEMORY USAGE {usage}")
        print(
            f"  run keys {stored:,} B vs transcript JSON {usage['transcript_json']:,} B: "
            f"{stored / usage['transcript_json']:.3f}x "
            f"(vs the stored messages' own JSON {usage['stored_json']:,} B: "
            f"{stored / usage['stored_json']:.3f}x)"
        )

        saves = await save_vs_rpush(stores, args.samples, args.per_run)
        print(f"\nsave of one ~1 KiB message vs raw RPUSH of the same bytes ({args.per_run}/run)")
        for name in stores:
            for length in LENGTHS:
                got = saves[(name, length)]
                ratio = statistics.median(got["save"]) / statistics.median(got["rpush"])
                print(f"  [{name:7}] ~{length:5} msgs  save  {summary(got['save'])}")
                print(f"  [{name:7}] ~{length:5} msgs  rpush {summary(got['rpush'])}  {ratio:.2f}x")
            flat = statistics.median(saves[(name, 1000)]["save"]) / statistics.median(
                saves[(name, 10)]["save"]
            )
            print(f"  [{name:7}] flat: save p50 at ~1000 / p50 at ~10 = {flat:.3f}")

        resumed = await resume(stores, args.messages, args.resume_samples)
        print(f"\nresume of a {args.messages:,}-message run")
        for name in stores:
            for what, label in (
                ("claim", "claim (the resume)"),
                ("claim_cpu", "  its CPU (this process)"),
                ("claim_trips", "  its round trips"),
                ("load", "load"),
                ("load_trip", "  its round trip"),
                ("decode", "  decoding"),
            ):
                print(f"  [{name:7}] {label:24} {summary(resumed[name][what])}")
    finally:
        for store in stores.values():
            keys = [key async for key in store.client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await store.client.delete(*keys)
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--private", action="store_true", help="start a redis-server of its own")
    parser.add_argument("--parser", choices=["both", "python", "hiredis"], default="both")
    parser.add_argument("--samples", type=int, default=60, help="runs per length and parser")
    parser.add_argument("--per-run", type=int, default=5, help="timed saves per run")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--resume-samples", type=int, default=30)
    args = parser.parse_args()
    if args.private:
        with private_server() as url:
            asyncio.run(measure(url, args))
    else:
        asyncio.run(measure(args.url, args))


if __name__ == "__main__":
    main()
