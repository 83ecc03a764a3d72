"""PostgreSQL store: a save against a raw INSERT, row updates, and loading 10,000 messages.

    .venv/bin/python bench/postgres_save_load.py [URL] [--runs 20] [--rounds 25]
        [--load-messages 10000] [--repeat 15] [--shapes] [--skip-saves]

Works in a schema of its own (``outlast_bench_<hex>``) on the server at URL
(default: ``OUTLAST_TEST_POSTGRES_URL``, else the loopback test server) and
drops it at the end. The store has one pooled connection, so one server
backend serves it. It measures:

* **save vs raw INSERT.** ``--runs`` runs are filled to 10, 100 and 1,000
  messages; then, for ``--rounds`` rounds, each run gets a save of one more
  ~1 KiB message, each save followed by a raw one-row ``INSERT (run_id, seq,
  body)`` of the same message text in autocommit on a plain psycopg
  connection (the floor: one round trip, one row, one commit). The lengths
  are interleaved within each round. Per length: wall time (p50 / p99), the
  ratio of the medians, and the CPU time of each operation (this process
  plus its server backend, read from /proc/<pid>/schedstat: steadier than
  wall time on a busy machine, as it leaves out the waits for a core).
* **Row updates.** ``n_tup_upd`` and ``n_tup_hot_upd`` of the schema's ``runs``
  table after every save above (the store is closed so that its backend
  reports its statistics, then they are read once the saves' message inserts
  have arrived): a save of messages locks the run's row and updates nothing
  (schema version 6); before, each was one HOT update (version 5).
* **load / claim of a long transcript.** One run of ``--load-messages`` ~1 KiB
  messages: ``load`` and ``claim`` (released and claimed again each time),
  wall and CPU; with ``--shapes``, the bare fetch of the transcript in
  several query shapes and formats without decoding it, and the JSON
  decoding alone.

The psycopg implementation in use (``python``, ``c`` or ``binary``) is printed:
run it from venvs with and without ``psycopg[binary]`` to compare them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import sql

from outlast import Message, ToolCall
from outlast.adapter import CheckpointState, RunStart, codec, redact
from outlast_postgres import PostgresStore
from outlast_postgres.checkpointer import PostgresCheckpointer

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SIZES = (10, 100, 1000)
NAMESPACE = "bench"
T = TypeVar("T")


def message(i: int) -> Message:
    """A ~1 KiB message: a tool result holding JSON (quotes to escape), or a reply."""
    if i % 2:
        items = [{"id": k, "name": f'item "{k}"', "ok": True} for k in range(18)]
        payload = {"row": i, "items": items}
        return Message.tool(f"call-{i}", "lookup", json.dumps(payload))
    call = ToolCall(f"call-{i + 1}", "lookup", {"query": "x" * 40, "page": i})
    return Message.assistant("Looking that up: " + "a reasoned reply. " * 50, (call,))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def with_schema(url: str, schema: str) -> str:
    return url + ("&" if "?" in url else "?") + f"schema={schema}"


async def timed(action: Awaitable[object]) -> float:
    started = time.perf_counter()
    await action
    return time.perf_counter() - started


class Meter:
    """Per operation: the wall time, and the CPU time spent on it by this
    process and by the server backend ``pid`` (from /proc: the server is on
    this machine). CPU time is what other load on a shared machine disturbs
    least: it is the work itself, without the waits for a core."""

    def __init__(self, pid: int) -> None:
        self._schedstat = Path(f"/proc/{pid}/schedstat")
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def _backend_ns(self) -> int:
        try:
            return int(self._schedstat.read_text().split()[0])
        except OSError:
            return 0  # not readable: the CPU column then counts this process only

    async def run(self, action: Awaitable[T]) -> T:
        backend = self._backend_ns()
        cpu = time.process_time_ns()
        started = time.perf_counter()
        result = await action
        self.wall.append(time.perf_counter() - started)
        cpu = time.process_time_ns() - cpu
        self.cpu.append((cpu + self._backend_ns() - backend) / 1e9)
        return result


async def save_vs_insert(
    store: PostgresStore, raw: psycopg.AsyncConnection, runs: int, rounds: int
) -> None:
    """``store`` has one pooled connection, so one backend serves every save."""
    table = sql.Identifier(store.schema, "raw_messages")
    await raw.execute(
        sql.SQL(
            'CREATE TABLE {} (run_id text COLLATE "C", seq integer, body text,'
            " PRIMARY KEY (run_id, seq))"
        ).format(table)
    )
    insert = sql.SQL("INSERT INTO {} (run_id, seq, body) VALUES (%s, %s, %s)").format(table)
    async with store.database.connection("finding the backend") as conn:
        store_pid = conn.info.backend_pid
    print("\n## save (one ~1 KiB message appended) vs a raw one-row INSERT of the same text")
    print("wall p50 / p99 ms; CPU: p50 µs of client + server backend per operation")
    print("| messages | save wall | INSERT wall | p50 ratio | save CPU | INSERT CPU | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    medians: dict[int, float] = {}
    cpu_medians: dict[int, float] = {}
    history = [message(i) for i in range(SIZES[-1] + rounds)]
    checkpointers: dict[int, list[tuple[PostgresCheckpointer, str]]] = {}
    for size in SIZES:
        checkpointers[size] = []
        for r in range(runs):
            run_id = f"save-{size}-{r}"
            cp = await store.begin(RunStart(run_id, "bench", None, namespace=NAMESPACE, owner="b"))
            assert isinstance(cp, PostgresCheckpointer)
            await cp.save(CheckpointState(tuple(history[:size])))
            checkpointers[size].append((cp, run_id))
    meters = {size: (Meter(store_pid), Meter(raw.info.backend_pid)) for size in SIZES}
    # Interleaved: every round saves at every length, so a drift of the
    # machine or of the tables' size over the run weighs on each length alike.
    for k in range(rounds):
        for size in SIZES:
            saves, inserts = meters[size]
            state = CheckpointState(tuple(history[: size + k + 1]))
            body = codec.encode_message(history[size + k])
            for cp, run_id in checkpointers[size]:
                await saves.run(cp.save(state))
                await inserts.run(raw.execute(insert, (run_id, size + k, body), prepare=True))
    for size in SIZES:
        saves, inserts = meters[size]
        medians[size] = statistics.median(saves.wall)
        cpu_medians[size] = statistics.median(saves.cpu)
        wall_ratio = statistics.median(saves.wall) / statistics.median(inserts.wall)
        cpu_ratio = statistics.median(saves.cpu) / statistics.median(inserts.cpu)
        print(
            f"| {size} | {ms(statistics.median(saves.wall))} / {ms(p(saves.wall, 0.99))} | "
            f"{ms(statistics.median(inserts.wall))} / {ms(p(inserts.wall, 0.99))} | "
            f"{wall_ratio:.2f}x | {statistics.median(saves.cpu) * 1e6:.0f} | "
            f"{statistics.median(inserts.cpu) * 1e6:.0f} | {cpu_ratio:.2f}x |"
        )
    flatness = medians[SIZES[-1]] / medians[SIZES[0]]
    cpu_flatness = cpu_medians[SIZES[-1]] / cpu_medians[SIZES[0]]
    print(
        f"\nflatness: save p50 at {SIZES[-1]} messages / at {SIZES[0]}: "
        f"wall {flatness:.2f}x, CPU {cpu_flatness:.2f}x"
    )


async def row_updates(url: str, schema: str, saves: int) -> None:
    """What the saves did to the runs table's rows (updates, HOT ones), read
    once the messages they inserted have been reported."""
    runs = sql.Identifier(schema, "runs").as_string(None)
    messages = sql.Identifier(schema, "messages").as_string(None)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while True:
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            cursor = await conn.execute(
                "SELECT r.n_tup_upd, r.n_tup_hot_upd, m.n_tup_ins"
                " FROM pg_stat_user_tables r, pg_stat_user_tables m"
                " WHERE r.relid = %s::regclass AND m.relid = %s::regclass",
                [runs, messages],
            )
            row = await cursor.fetchone()
            assert row is not None
            updated, hot, inserted = row
            if inserted >= saves or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    print(
        f"\n## Row updates: {saves} saves ({inserted} messages inserted) updated the runs"
        f" table {updated} times, {hot} of them HOT"
    )


async def fetch_shapes(store: PostgresStore, url: str, run_id: str, repeat: int) -> None:
    """The transcript's bare fetch (no JSON decoding) in several query shapes and formats."""
    messages = sql.Identifier(store.schema, "messages")
    where = sql.SQL("WHERE namespace = %s AND run_id = %s AND segment = 0")
    shapes = {
        "ARRAY(body), text": (
            sql.SQL("SELECT ARRAY(SELECT body FROM {} {} ORDER BY seq)").format(messages, where),
            False,
        ),
        "ARRAY(body), binary": (
            sql.SQL("SELECT ARRAY(SELECT body FROM {} {} ORDER BY seq)").format(messages, where),
            True,
        ),
        "string_agg(body, 0x1e), text": (
            sql.SQL("SELECT string_agg(body, E'\\x1e' ORDER BY seq) FROM {} {}").format(
                messages, where
            ),
            False,
        ),
        "one row per message, text": (
            sql.SQL("SELECT body FROM {} {} ORDER BY seq").format(messages, where),
            False,
        ),
        "one row per message, binary": (
            sql.SQL("SELECT body FROM {} {} ORDER BY seq").format(messages, where),
            True,
        ),
    }
    print("\n## bare fetch of the transcript, no decoding (p50 / p99 ms)")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        texts: list[str] = []
        for name, (statement, binary) in shapes.items():
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                cursor = conn.cursor(binary=binary)
                await cursor.execute(statement, (NAMESPACE, run_id))
                rows = await cursor.fetchall()
                times.append(time.perf_counter() - started)
            if name.startswith("ARRAY") and not texts:
                texts = rows[0][0]
            print(f"- {name}: {ms(statistics.median(times))} / {ms(p(times, 0.99))}")
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        codec.decode_all(texts, run_id, codec.decode_message)
        times.append(time.perf_counter() - started)
    decoding = f"{ms(statistics.median(times))} / {ms(p(times, 0.99))}"
    print(f"- JSON decoding alone (codec.decode_all): {decoding}")


async def load_and_claim(
    store: PostgresStore, url: str, count: int, repeat: int, shapes: bool
) -> None:
    """``store`` has one pooled connection (see save_vs_insert)."""
    run_id = "load"
    history = tuple(message(i) for i in range(count))
    size = sum(len(codec.encode_message(m).encode()) for m in history)
    cp = await store.begin(RunStart(run_id, "bench", None, namespace=NAMESPACE, owner="b"))
    for end in range(500, count + 500, 500):
        await cp.save(CheckpointState(history[:end]))
    async with store.database.connection("finding the backend") as conn:
        pid = conn.info.backend_pid
    loads, claims = Meter(pid), Meter(pid)
    for _ in range(repeat):
        await loads.run(store.load(run_id, NAMESPACE))
        await cp.release()
        claim = await claims.run(store.claim(run_id, owner="b", lease=60, namespace=NAMESPACE))
        assert claim is not None and len(claim.resume.history) == count
        assert isinstance(claim.checkpointer, PostgresCheckpointer)
        cp = claim.checkpointer
    print(f"\n## a run of {count:,} messages ({size / 2**20:.1f} MiB of JSON)")
    print("wall p50 / p99 ms; CPU: p50 ms of client + server backend")
    for name, meter in (("load", loads), ("claim", claims)):
        print(
            f"- {name}: {ms(statistics.median(meter.wall))} / {ms(p(meter.wall, 0.99))}; "
            f"CPU {ms(statistics.median(meter.cpu))}"
        )
    if shapes:
        await fetch_shapes(store, url, run_id, repeat)


async def main(args: argparse.Namespace) -> None:
    url = args.url or os.environ.get("OUTLAST_TEST_POSTGRES_URL", DEFAULT_URL)
    schema = f"outlast_bench_{uuid.uuid4().hex[:12]}"
    print(f"server: {redact(url)}, schema {schema}")
    print(f"psycopg {psycopg.__version__}, implementation: {psycopg.pq.__impl__}")

    def one_connection() -> PostgresStore:
        return PostgresStore(with_schema(url, schema), pool_min_size=1, pool_max_size=1)

    store = one_connection()
    try:
        await store.migrate()
        if not args.skip_saves:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as raw:
                await save_vs_insert(store, raw, args.runs, args.rounds)
            saves = len(SIZES) * args.runs * (1 + args.rounds)
            await store.close()  # its connection ends, and reports its statistics
            await row_updates(url, schema, saves)
            store = one_connection()
        await load_and_claim(store, url, args.load_messages, args.repeat, args.shapes)
    finally:
        await store.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            await conn.execute(drop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=None, help="PostgreSQL URL (no schema option)")
    parser.add_argument("--runs", type=int, default=20, help="runs per transcript length")
    parser.add_argument("--rounds", type=int, default=25, help="timed saves per run")
    parser.add_argument("--load-messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15, help="loads and claims timed")
    parser.add_argument("--shapes", action="store_true", help="also time bare fetch shapes")
    parser.add_argument("--skip-saves", action="store_true", help="only load and claim")
    asyncio.run(main(parser.parse_args()))
