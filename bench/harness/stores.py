"""outlast's stores and the round-trip floor on the same servers: save, bytes, resume.

Every target takes the store workload one step at a time (the bench calls
them round-robin, so a slow moment of the machine hits all of them alike):

* ``<store>`` -- outlast's store: ``checkpointer.save(state)`` of the run's
  transcript, one ~1 KiB message longer than at the previous save (the
  state is built before the clock starts: the executor builds it anyway);
* ``<store> floor`` -- the cheapest durable write of the same bytes with the
  same client library, settings and server: PostgreSQL a one-row INSERT
  (run id, seq, the message's JSON as text; primary key like outlast's
  messages table) in autocommit on one psycopg AsyncConnection; Redis an
  RPUSH on a redis-py asyncio client; SQLite ``BEGIN IMMEDIATE; INSERT;
  COMMIT`` on a file with outlast's settings (WAL, synchronous=NORMAL,
  8 KiB pages, SQLite's own checkpoint at the bound outlast keeps as its
  backstop), run on one worker thread as outlast's SQLite store does (an
  asyncio program cannot call SQLite on its loop). outlast's store also
  checkpoints the -wal file down to a much smaller bound while its caller
  pauses (here: while the other targets take their turn), never inside a
  save; the floor does not, so its bytes include a larger -wal.

Each repetition uses fresh places (a SQLite file, a PostgreSQL schema or
table, a Redis prefix or key), so *bytes stored* is what that one run added:
SQLite's file plus its ``-wal``; PostgreSQL ``pg_total_relation_size`` of the
tables (heap, TOAST, indexes); Redis ``MEMORY USAGE`` of the keys.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import redis
import redis.asyncio

import outlast
from outlast import Message
from outlast.adapter import Checkpointer, CheckpointState, RunStart

try:  # outlast's backstop bound on the -wal file, whatever it is now
    from outlast.stores.sqlite_schema import WAL_CHECKPOINT_BYTES, WAL_SIZE_LIMIT
except ImportError:  # an outlast without one: SQLite's defaults (1,000 pages, no limit)
    WAL_CHECKPOINT_BYTES, WAL_SIZE_LIMIT = 1000 * 8192, -1

NAMESPACE = "bench"
OWNER = "bench"

Bytes = Callable[[], Awaitable[int]]


def sqlite_bytes(path: Path) -> int:
    """The database file and its write-ahead log, as they are on disk now."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def postgres_bytes(url: str, schema: str | None = None, table: str | None = None) -> int:
    """pg_total_relation_size of the schema's tables (or of one table)."""
    query = (
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm') "
    )
    if table is not None:
        query += "AND c.relname = %(table)s AND n.nspname = 'public'"
    elif schema is not None:
        query += "AND n.nspname = %(schema)s"
    else:  # every table of the database but the catalogs
        query += "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, {"schema": schema, "table": table}).fetchone()
    return int(row[0]) if row else 0


def redis_bytes(url: str, pattern: str) -> int:
    """MEMORY USAGE (every element counted: SAMPLES 0) of the keys matching ``pattern``."""
    client = redis.Redis.from_url(url)
    try:
        return sum(
            int(client.memory_usage(key, samples=0) or 0) for key in client.scan_iter(pattern)
        )
    finally:
        client.close()


class Saver:
    """One target of the store workload: ``open``, ``step`` per message, ``close``."""

    name: str
    store: str

    async def open(self) -> None:
        raise NotImplementedError

    async def step(self, message: Message, body: str, seq: int) -> float:
        raise NotImplementedError

    async def bytes_added(self) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class OutlastSaver(Saver):
    def __init__(
        self,
        store: str,
        url: str,
        run_id: str,
        measure: Callable[[], int],
        prefill: list[Message] | None = None,
    ) -> None:
        self.name = store
        self.store = store
        self.url = url
        self.run_id = run_id
        self.measure = measure
        self.history: list[Message] = list(prefill or [])
        self._store: outlast.Store | None = None
        self._cp: Checkpointer | None = None
        self._before = 0

    async def open(self) -> None:
        self._store = outlast.open(self.url)
        await self._store.list(NAMESPACE)  # connected, schema made: not the run's bytes
        self._before = await asyncio.to_thread(self.measure)
        self._cp = await self._store.begin(
            RunStart(self.run_id, "bench", None, namespace=NAMESPACE, owner=OWNER)
        )
        if self.history:  # a run already this long, saved untimed
            await self._cp.save(CheckpointState(tuple(self.history)))

    async def step(self, message: Message, body: str, seq: int) -> float:
        assert self._cp is not None
        self.history.append(message)
        state = CheckpointState(tuple(self.history))
        started = time.perf_counter()
        await self._cp.save(state)
        return time.perf_counter() - started

    async def bytes_added(self) -> int:
        return await asyncio.to_thread(self.measure) - self._before

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()


class PostgresFloor(Saver):
    def __init__(self, url: str, table: str) -> None:
        self.name = "postgres floor"
        self.store = "postgres"
        self.url = url
        self.table = table
        self.run_id = f"floor-{table}"
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._insert = f"INSERT INTO {table} (run_id, seq, body) VALUES (%s, %s, %s)"

    async def open(self) -> None:
        self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        await self._conn.execute(
            f'CREATE TABLE {self.table} (run_id text COLLATE "C" NOT NULL, seq integer NOT NULL,'
            " body text NOT NULL, PRIMARY KEY (run_id, seq))"
        )

    async def step(self, message: Message, body: str, seq: int) -> float:
        assert self._conn is not None
        started = time.perf_counter()
        await self._conn.execute(self._insert, (self.run_id, seq, body))
        return time.perf_counter() - started

    async def bytes_added(self) -> int:
        return await asyncio.to_thread(postgres_bytes, self.url, table=self.table)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


class RedisFloor(Saver):
    def __init__(self, url: str, key: str) -> None:
        self.name = "redis floor"
        self.store = "redis"
        self.url = url
        self.key = key
        self._client: redis.asyncio.Redis | None = None

    async def open(self) -> None:
        self._client = redis.asyncio.Redis.from_url(self.url)
        await self._client.ping()

    async def step(self, message: Message, body: str, seq: int) -> float:
        assert self._client is not None
        started = time.perf_counter()
        await self._client.rpush(self.key, body)
        return time.perf_counter() - started

    async def bytes_added(self) -> int:
        return await asyncio.to_thread(redis_bytes, self.url, self.key)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class SqliteFloor(Saver):
    def __init__(self, path: Path) -> None:
        self.name = "sqlite floor"
        self.store = "sqlite"
        self.path = path
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floor-sqlite")
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA page_size = 8192")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # outlast's backstop bound on the -wal file: SQLite checkpoints at this much
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(1, WAL_CHECKPOINT_BYTES // 8192):d}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT:d}")
        conn.execute(
            "CREATE TABLE messages (run_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,"
            " PRIMARY KEY (run_id, seq))"
        )
        self._conn = conn

    def _insert(self, seq: int, body: str) -> None:
        assert self._conn is not None
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.execute("INSERT INTO messages VALUES (?, ?, ?)", ("floor", seq, body))
        self._conn.execute("COMMIT")

    async def _call(self, job: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker, job)

    async def open(self) -> None:
        await self._call(self._connect)
        self._before = sqlite_bytes(self.path)

    async def step(self, message: Message, body: str, seq: int) -> float:
        started = time.perf_counter()
        await self._call(lambda: self._insert(seq, body))
        return time.perf_counter() - started

    async def bytes_added(self) -> int:
        return sqlite_bytes(self.path) - self._before

    async def close(self) -> None:
        if self._conn is not None:
            conn = self._conn
            await self._call(conn.close)
        self._worker.shutdown(wait=False)


async def build_resume_run(url: str, run_id: str, messages: list[Message]) -> outlast.Store:
    """A released run holding ``messages``: what a crashed worker leaves behind."""
    store = outlast.open(url)
    cp = await store.begin(RunStart(run_id, "bench", None, namespace=NAMESPACE, owner=OWNER))
    await cp.save(CheckpointState(tuple(messages)))
    await cp.release()
    return store


async def time_resume(store: outlast.Store, run_id: str, expected: int) -> tuple[float, float]:
    """Seconds of a claim (outlast's resume: takes the run over and returns its
    transcript, decoded) and of a load; the claim is released untimed.

    Each starts after a full garbage collection: a collection of what earlier
    phases left (the last resume's 10,000 messages) is not counted against
    it, one that its own allocations set off is (timeit goes further: it
    turns the collector off)."""
    gc.collect()
    started = time.perf_counter()
    claim = await store.claim(run_id, owner=OWNER, lease=30.0, namespace=NAMESPACE)
    claimed = time.perf_counter() - started
    assert claim is not None and len(claim.resume.history) == expected
    await claim.checkpointer.release()
    del claim
    gc.collect()
    started = time.perf_counter()
    stored = await store.load(run_id, NAMESPACE)
    loaded = time.perf_counter() - started
    assert stored is not None and len(stored.state.history) == expected
    return claimed, loaded
