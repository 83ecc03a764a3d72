"""What the fleet bench measures: outlast on one of its stores, or DBOS's queue.

A target makes a fresh place for its runs (and removes it afterwards),
names the command of one worker process, submits runs, says how many have
finished, and reads back what the store recorded about each one.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import fleet_cpu
from fleet_stats import EventFiles, Facts

HERE = Path(__file__).resolve().parent

Submit = Callable[[str], Awaitable[None]]


class Options(Protocol):
    runs: int
    workers: int
    concurrency: int
    submitters: int
    paced: int
    rate: float
    pool: int
    poll_interval: float
    dbos_polling: list[float]
    profile: str | None
    postgres_url: str
    redis_url: str


class Target(Protocol):
    """What the bench measures (see the module docstring)."""

    name: str
    settings: str
    ready_marker: str
    """What a worker prints once it serves."""
    logs_claims: bool
    """Whether its workers log a claim event (else the store's record of the
    claim stands in)."""

    async def setup(self) -> None:
        """Make the target's own place in the store (a database, a prefix, a file)."""

    def worker_command(self, index: int) -> list[str]:
        """The command line of worker ``index``."""

    async def open_submitter(self) -> Submit:
        """A function submitting one run by its id."""

    async def close_submitter(self) -> None: ...

    async def finished(self, events: EventFiles) -> int:
        """How many runs have finished (completed or failed) so far."""

    async def facts(self) -> dict[str, Facts]:
        """What the store recorded about each run, after the drain."""

    async def counters(self) -> dict[str, int] | None:
        """The server's transaction and row counters of the target's own
        database (PostgreSQL's pg_stat_database), or None."""

    async def server_pid(self) -> int | None:
        """The store server's (parent) process id when it runs on this machine."""

    async def teardown(self) -> None:
        """Remove everything the target made."""


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database``, without query options."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}", query=""))


async def execute(url: str, statement: str, *, autocommit: bool = False) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own; its rows (none for DDL)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=autocommit) as conn:
        cursor = await conn.execute(statement)
        return await cursor.fetchall() if cursor.description else []


def local_command(pid: int) -> str:
    """The command line of a process of this machine ("" if there is none)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Database:
    """A database of the bench's own on the PostgreSQL server: created, counted, dropped."""

    def __init__(self, server_url: str, name: str) -> None:
        self.server_url = server_url
        self.name = name
        self.url = with_database(server_url, name)

    async def create(self) -> None:
        await execute(self.server_url, f'CREATE DATABASE "{self.name}"', autocommit=True)

    async def drop(self) -> None:
        await execute(
            self.server_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', autocommit=True
        )

    async def server_pid(self) -> int | None:
        """The postmaster's pid, if the server is local (its backend is in /proc)."""
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.url) as conn:
            cursor = await conn.execute("SELECT pg_backend_pid()")
            row = await cursor.fetchone()
            assert row is not None
            backend = int(row[0])
            # Read while connected: the backend exits with the connection.
            if "postgres" not in local_command(backend):
                return None
            return fleet_cpu.parent_of(backend)

    async def counters(self) -> dict[str, int]:
        rows = await execute(
            self.server_url,
            "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted "
            f"FROM pg_stat_database WHERE datname = '{self.name}'",
        )
        transactions, written = rows[0]
        return {"transactions": int(transactions), "rows written": int(written)}


# -- outlast ----------------------------------------------------------------------------------


class OutlastTarget:
    """outlast workers (``outlast worker fleet_app:build``) on one store; the
    bench submits through an Executor."""

    ready_marker = ": kinds "
    logs_claims = True

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self.url = ""
        self.submit_url = ""
        self.scratch: Path | None = None
        self.database = Database(options.postgres_url, f"outlast_fleet_{uuid.uuid4().hex[:8]}")
        self.prefix = f"outlast-fleet-{uuid.uuid4().hex[:8]}"
        self.store: Any = None
        settings = [f"{options.workers}x{options.concurrency}"]
        if name == "postgres":
            settings.append(f"pool {options.pool}")
        if name == "sqlite":
            settings.append(f"poll {options.poll_interval:g}s")
        self.settings = ", ".join(settings)

    async def setup(self) -> None:
        o = self.options
        if self.name == "postgres":
            await self.database.create()
            self.url = f"{self.database.url}?pool_max_size={o.pool}"
            self.submit_url = f"{self.database.url}?pool_max_size={o.submitters}"
        elif self.name == "redis":
            self.url = self.submit_url = f"{o.redis_url}?prefix={self.prefix}"
        else:
            self.scratch = Path(tempfile.mkdtemp(prefix="outlast-fleet-"))
            self.url = self.submit_url = f"sqlite:///{self.scratch}/fleet.db"

    def profile_path(self) -> Path:
        return Path(self.options.profile or ".") / f"{self.name}-worker0.prof"

    def worker_command(self, index: int) -> list[str]:
        o = self.options
        profile: list[str] = []
        if o.profile and index == 0:
            profile = [sys.executable, "-m", "cProfile", "-o", str(self.profile_path())]
        return [
            *profile,
            str(Path(sys.executable).with_name("outlast")),
            "worker",
            "fleet_app:build",
            "--url",
            self.url,
            "--concurrency",
            str(o.concurrency),
            "--poll-interval",
            str(o.poll_interval),
        ]

    async def open_submitter(self) -> Submit:
        import fleet_app

        import outlast

        self.store = store = outlast.open(self.submit_url)
        executor = outlast.Executor(store, namespace=fleet_app.NAMESPACE)

        async def submit(run_id: str) -> None:
            await executor.submit(fleet_app.KIND, run_id, run_id=run_id)

        return submit

    async def close_submitter(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def finished(self, events: EventFiles) -> int:
        events.read()
        return events.counts["complete"] + events.counts["fail"]

    async def facts(self) -> dict[str, Facts]:
        import fleet_app

        import outlast

        found: dict[str, Facts] = {}
        async with outlast.open(self.submit_url) as store:
            cursor = None
            while True:
                page = await store.list(fleet_app.NAMESPACE, None, 1000, cursor)
                for r in page.records:
                    found[r.run_id] = Facts(
                        finished=r.status is outlast.RunStatus.COMPLETED
                        and r.result == fleet_app.ANSWER,
                        claimed_once=r.epoch == 1 and r.attempts == 1 and r.crashes == 0,
                        finished_at=r.updated_at,
                    )
                cursor = page.next_cursor
                if cursor is None:
                    return found

    async def counters(self) -> dict[str, int] | None:
        return await self.database.counters() if self.name == "postgres" else None

    async def server_pid(self) -> int | None:
        if self.name == "postgres":
            return await self.database.server_pid()
        if self.name == "redis":
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(self.options.redis_url)
            try:
                pid = int((await client.info("server"))["process_id"])
            finally:
                await client.aclose()
            return pid if "redis" in local_command(pid) else None
        return None

    async def teardown(self) -> None:
        await self.close_submitter()
        if self.name == "postgres":
            await self.database.drop()
        elif self.name == "redis":
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(self.options.redis_url)
            try:
                keys = [key async for key in client.scan_iter(match=f"{self.prefix}:*", count=1000)]
                for start in range(0, len(keys), 1000):
                    await client.unlink(*keys[start : start + 1000])
            finally:
                await client.aclose()
        elif self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


# -- DBOS ---------------------------------------------------------------------------------------


class DbosTarget:
    """DBOS workers (bench/fleet_dbos.py) consuming one Queue; the bench
    enqueues through a DBOSClient, ``--submitters`` threads at a time."""

    name = "dbos"
    ready_marker = ": ready"
    logs_claims = False

    def __init__(self, options: Options, polling: float) -> None:
        self.options = options
        self.polling = polling
        self.database = Database(options.postgres_url, f"outlast_fleet_dbos_{uuid.uuid4().hex[:8]}")
        self.settings = (
            f"{options.workers}x{options.concurrency}, pool {options.pool}, poll {polling:g}s"
        )
        self.enqueuer: Any = None
        self.threads: ThreadPoolExecutor | None = None
        self.own_queries = 0
        """Transactions the bench itself ran in DBOS's database (its drain counts)."""

    async def setup(self) -> None:
        from dbos import DBOS

        await self.database.create()
        await asyncio.to_thread(DBOS.migrate, self.database.url)

    def worker_command(self, index: int) -> list[str]:
        o = self.options
        return [
            sys.executable,
            str(HERE / "fleet_dbos.py"),
            self.database.url,
            "--executor-id",
            f"fleet-{index}",
            "--concurrency",
            str(o.concurrency),
            "--polling-interval",
            str(self.polling),
            "--pool",
            str(o.pool),
        ]

    async def open_submitter(self) -> Submit:
        import fleet_dbos

        self.enqueuer = enqueuer = fleet_dbos.Enqueuer(self.database.url, self.options.submitters)
        self.threads = threads = ThreadPoolExecutor(self.options.submitters)
        loop = asyncio.get_running_loop()

        async def submit(run_id: str) -> None:
            await loop.run_in_executor(threads, enqueuer.enqueue, run_id)

        return submit

    async def close_submitter(self) -> None:
        if self.enqueuer is not None:
            self.enqueuer.close()
            self.enqueuer = None
        if self.threads is not None:
            self.threads.shutdown()
            self.threads = None

    async def finished(self, events: EventFiles) -> int:
        self.own_queries += 1
        rows = await execute(
            self.database.url,
            "SELECT count(*) FROM dbos.workflow_status WHERE status IN ('SUCCESS', 'ERROR')",
        )
        return int(rows[0][0])

    async def facts(self) -> dict[str, Facts]:
        # The output is stored in another table; SUCCESS says the workflow returned.
        rows = await execute(
            self.database.url,
            "SELECT workflow_uuid, status, recovery_attempts, executor_id, started_at_epoch_ms, "
            "completed_at FROM dbos.workflow_status WHERE queue_name = 'fleet'",
        )
        found: dict[str, Facts] = {}
        for run_id, status, attempts, executor, started, completed in rows:
            found[str(run_id)] = Facts(
                finished=status == "SUCCESS" and completed is not None,
                # The dequeue adds 1 to recovery_attempts: 1 means dequeued once.
                claimed_once=attempts == 1 and str(executor).startswith("fleet-"),
                finished_at=(completed or 0) / 1000,
                started_at=started / 1000 if started is not None else None,
            )
        return found

    async def server_pid(self) -> int | None:
        return await self.database.server_pid()

    async def counters(self) -> dict[str, int] | None:
        counted = await self.database.counters()
        counted["transactions"] -= self.own_queries
        return counted

    async def teardown(self) -> None:
        await self.close_submitter()
        await self.database.drop()


def targets_of(options: Options, names: list[str]) -> list[Target]:
    """The targets to measure, in order; DBOS once per polling interval."""
    chosen: list[Target] = []
    for name in names:
        if name == "dbos":
            chosen.extend(DbosTarget(options, polling) for polling in options.dbos_polling)
        else:
            chosen.append(OutlastTarget(name, options))
    return chosen
