"""The PostgreSQL CheckpointerFactory: the runs of one schema.

Every write mirrors :mod:`outlast.transitions` in SQL (see
:mod:`outlast_postgres.statements`). Round trips per operation (counted in
the tests): begin, submit, cancel, send, save, complete, fail, release,
renew, wait, quarantine, load, list, delete and purge take one; so does
interrupted, unless it meets damaged records (each is quarantined, then the
list is read again without it); claim and claim_next take two (the claim and
the read of the claimed progress, pipelined; then the commit), whatever the
transcript's length, and claim_next one more per damaged run it meets and
the claim again (and one more, to read its run's messages by id, should it
ever meet another claim of the same owner's made at the same instant: see
``statements._CLAIMED_MESSAGES``).
``wait_for_change`` uses a listening connection of its own, not the pool
(:mod:`outlast_postgres.notifications`).

Transcripts: ``load``, ``claim`` and ``claim_next`` read a run's messages as
rows, one per message, in PostgreSQL's binary format, by a statement
pipelined beside the one that reads the record and the phases (see
``statements._PHASES``). They used to come as one ``text[]`` in the text
format: an array literal in which every quote and backslash of every
message is escaped by the server and unescaped by the client (in Python,
with psycopg's pure-Python build), which was the bulk of loading a long
transcript; in binary each value is its length and its bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from outlast.adapter import (
    DEFAULT_NAMESPACE,
    JSON,
    CheckpointState,
    Claim,
    CorruptCheckpoint,
    NotWaiting,
    ResumeState,
    RunExists,
    RunFinished,
    RunNotFound,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    SaveCursor,
    StoredRun,
    StoreError,
    UnknownFormat,
    codec,
    transitions,
)
from outlast_postgres import records
from outlast_postgres.checkpointer import PostgresCheckpointer
from outlast_postgres.config import PostgresConfig, parse
from outlast_postgres.database import Database
from outlast_postgres.notifications import Listener, channel_for

log = logging.getLogger("outlast_postgres")

# A module-level name: inside PostgresStore, ``list`` is its method.
Damaged = list[tuple[str, CorruptCheckpoint]]
"""Runs that do not parse: (run id, why)."""


class PostgresStore:
    """A CheckpointerFactory on PostgreSQL (psycopg 3, async, pooled).

    ``PostgresStore("postgresql://user:pw@host/db", schema="outlast")`` or
    ``outlast.open(url)``. Options: see :data:`outlast_postgres.config.OPTIONS`.
    ``PostgresStore(other.config)`` opens another store on the same database
    and schema (as another process would).
    """

    def __init__(self, url: str | PostgresConfig, **options: Any) -> None:
        if isinstance(url, PostgresConfig):
            if options:
                raise TypeError("options go into the PostgresConfig, not next to it")
            config = url
        else:
            config = parse(url, options)
        self.database = Database(config)
        """The pool and statements this store shares with its checkpointers."""
        self.listener = Listener(config, channel_for(config.schema))
        """The connection ``wait_for_change`` listens on (opened by the first wait)."""

    def __repr__(self) -> str:
        return f"PostgresStore({self.config.redacted_url!r}, schema={self.config.schema!r})"

    @property
    def config(self) -> PostgresConfig:
        return self.database.config

    @property
    def schema(self) -> str:
        return self.database.config.schema

    async def migrate(self) -> None:
        """Create or upgrade the schema (idempotent; safe from many processes at once).

        Also runs on first use; ``outlast migrate URL`` calls this.
        """
        await self.database.migrate()

    async def close(self) -> None:
        """Close the pool and the listening connection; the store is unusable
        afterwards. Idempotent."""
        await self.listener.close()
        await self.database.close()

    # -- CheckpointerFactory -----------------------------------------------

    async def begin(self, start: RunStart) -> PostgresCheckpointer:
        incarnation = transitions.new_incarnation()
        params = {
            "namespace": start.namespace,
            "run_id": start.run_id,
            "kind": start.kind,
            "input": records.encode_json(start.input),
            "owner": start.owner,
            "lease": float(start.lease),
            "incarnation": incarnation,
            "version": codec.FORMAT_VERSION,
        }
        async with self.database.connection(f"beginning run {start.run_id!r}") as conn:
            cursor = await conn.execute(self.database.statements.begin, params)
            created = await cursor.fetchone()
        if created is None:
            raise RunExists(start.run_id, start.namespace)
        return self._checkpointer(start.namespace, start.run_id, 1, incarnation, SaveCursor())

    async def submit(self, start: RunStart) -> None:
        params = {
            "namespace": start.namespace,
            "run_id": start.run_id,
            "kind": start.kind,
            "input": records.encode_json(start.input),
            "lease": float(start.lease),
            "incarnation": transitions.new_incarnation(),
            "version": codec.FORMAT_VERSION,
        }
        async with self.database.connection(f"submitting run {start.run_id!r}") as conn:
            cursor = await conn.execute(self.database.statements.submit, params)
            created = await cursor.fetchone()
        if created is None:
            raise RunExists(start.run_id, start.namespace)

    async def cancel(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> RunRecord:
        params = {
            "namespace": namespace,
            "run_id": run_id,
            # A JSON string, as every stored error (see PostgresCheckpointer.fail).
            "error": records.encode_json(transitions.CANCELLED),
        }
        async with self.database.connection(f"cancelling run {run_id!r}") as conn:
            return await _decided(
                conn,
                self.database.statements.cancel,
                params,
                lambda seen: (
                    None
                    if seen in (RunStatus.RUNNING, RunStatus.WAITING)
                    else RunFinished(run_id, namespace, seen)
                ),
            )

    async def send(
        self, run_id: str, delivery: JSON, namespace: str = DEFAULT_NAMESPACE
    ) -> RunRecord:
        params = {
            "namespace": namespace,
            "run_id": run_id,
            "delivery": records.encode_json(delivery),
        }
        async with self.database.connection(f"sending input to run {run_id!r}") as conn:
            return await _decided(
                conn,
                self.database.statements.send,
                params,
                lambda seen: (
                    None if seen == RunStatus.WAITING else NotWaiting(run_id, namespace, seen)
                ),
            )

    async def wait_for_change(self, namespace: str, timeout: float) -> bool:
        """True as soon as a run of ``namespace`` may have become claimable or
        finished (a submit, release, send, cancel, completion, failure or
        quarantine was committed), False after ``timeout`` seconds
        (ChangeNotifier).

        LISTEN/NOTIFY on the schema's channel, over one connection per store
        of its own. A notification may be lost (a dropped connection: then
        every waiter wakes); callers poll as well.
        """
        return await self.listener.wait(namespace, timeout)

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        skip: list[str] = []
        async with self.database.connection(f"listing interrupted runs of {namespace!r}") as conn:
            # Terminates: the list is read again only when it held a damaged
            # record, which is then quarantined or skipped for good. A healthy
            # work list is one read.
            while True:
                params = {
                    "namespace": namespace,
                    "limit": max(0, limit),
                    "version": codec.FORMAT_VERSION,
                    "skip": skip,
                }
                cursor = await conn.execute(self.database.statements.interrupted, params)
                found, damaged = records.sort_out(await cursor.fetchall())
                if not damaged:
                    return found
                skip += await self._set_aside(conn, namespace, damaged)

    async def claim(
        self,
        run_id: str,
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        params = {"namespace": namespace, "run_id": run_id, "owner": owner, "lease": float(lease)}
        statements = self.database.statements
        async with self.database.connection(f"claiming run {run_id!r}") as conn, conn.pipeline():
            # One flush: BEGIN, the conditional UPDATE and the reads of the claimed
            # progress (phases, then messages) go out together and come back together.
            await conn.execute("BEGIN")
            claimed = await conn.execute(statements.claim, params)
            phases = await conn.cursor(binary=True).execute(statements.claimed_one, params)
            messages = await records.bodies_cursor(conn).execute(
                statements.claimed_one_messages, params
            )
            progress = await phases.fetchone()
            texts = [text for (text,) in await messages.fetchall()]
            row = await claimed.fetchone()
            try:
                # Decoded before COMMIT: a run that does not parse stays as it was.
                found = None if row is None else records.record_from_row(row)
                if found is not None and progress is None:
                    raise StoreError(f"run {run_id!r}: claimed but its progress could not be read")
                state = (
                    CheckpointState()
                    if progress is None
                    else records.state_from_bodies(run_id, progress[1], texts)
                )
            except Exception:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
        if found is None:
            return None
        return self._claim(found, state)

    async def claim_next(
        self,
        kinds: Sequence[str],
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        """Claim the oldest claimable run of one of ``kinds`` (the order of
        ``interrupted``): ``FOR UPDATE SKIP LOCKED``, so concurrent workers
        take different runs and never wait on each other's. A run whose
        record or progress does not parse is quarantined and the claim made
        again without it."""
        skip: list[str] = []
        async with self.database.connection(f"claiming a run of {namespace!r}") as conn:
            # Terminates: a claim is made again only when it took a damaged
            # run, which is then quarantined or skipped for good.
            while True:
                claimed, damaged = await self._claim_next(
                    conn, kinds, namespace, owner, lease, skip
                )
                if not damaged:
                    return claimed
                skip += await self._set_aside(conn, namespace, damaged)

    async def quarantine(
        self, run_id: str, reason: str, namespace: str = DEFAULT_NAMESPACE
    ) -> bool:
        async with self.database.connection(f"quarantining run {run_id!r}") as conn:
            return await self._quarantine(conn, namespace, run_id, reason)

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        params = {"namespace": namespace, "run_id": run_id}
        statements = self.database.statements
        async with self.database.connection(f"loading run {run_id!r}") as conn:
            # One flush: the record (with the phases) and the messages, read in
            # one snapshot (see the module docstring, "Transcripts").
            async with conn.pipeline():
                await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                run = await conn.cursor(binary=True).execute(statements.load, params)
                messages = await records.bodies_cursor(conn).execute(
                    statements.load_messages, params
                )
                await conn.execute("COMMIT")
            row = await run.fetchone()
            texts = [text for (text,) in await messages.fetchall()]
        if row is None:
            return None
        record = records.record_from_row(row)
        phases = row[records.RUN_COLUMN_COUNT]
        return StoredRun(record, records.state_from_bodies(run_id, phases, texts))

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        limit = max(0, limit)
        statement = self.database.statements.listing(
            status=status is not None, cursor=cursor is not None
        )
        params = {
            "namespace": namespace,
            "version": codec.FORMAT_VERSION,
            "status": None if status is None else str(status),
            "cursor": cursor,
            # One more than asked: whether it exists says if there is a next page.
            "limit": limit + 1,
        }
        async with self.database.connection(f"listing runs of {namespace!r}") as conn:
            result = await conn.execute(statement, params)
            rows = await result.fetchall()
        more = len(rows) > limit
        page = tuple(_readable(rows[:limit]))
        return RunPage(page, rows[limit - 1][0] if more and limit else None)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        params = {"namespace": namespace, "run_id": run_id}
        statements = self.database.statements
        async with self.database.connection(f"deleting run {run_id!r}") as conn:
            # Two statements (see statements._DELETE_PROGRESS), one transaction,
            # one flush: the results are read once the pipeline is synced.
            async with conn.pipeline():
                await conn.execute("BEGIN")
                deleted = await conn.execute(statements.delete_run, params)
                await conn.execute(statements.delete_progress, params)
                await conn.execute("COMMIT")
            found = await deleted.fetchone()
        return found is not None

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        params = {"namespace": namespace, "older_than": float(older_than)}
        async with self.database.connection(f"purging old runs of {namespace!r}") as conn:
            cursor = await conn.execute(self.database.statements.purge, params)
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0

    # -- helpers -----------------------------------------------------------

    async def _claim_next(
        self,
        conn: AsyncConnection[TupleRow],
        kinds: Sequence[str],
        namespace: str,
        owner: str,
        lease: float,
        skip: Sequence[str],
    ) -> tuple[Claim | None, Damaged]:
        """One claim_next attempt: the claim (None: nothing claimable), or,
        undone, the damaged run it took."""
        params = {
            "namespace": namespace,
            "kinds": [*kinds],
            "owner": owner,
            "lease": float(lease),
            "skip": skip,
            "version": codec.FORMAT_VERSION,
        }
        statements = self.database.statements
        async with conn.pipeline():
            # One flush: BEGIN, the claim and the reads of the claimed progress
            # go out together; the COMMIT (or ROLLBACK) is the second.
            await conn.execute("BEGIN")
            claimed = await conn.execute(statements.claim_next, params)
            phases = await conn.cursor(binary=True).execute(statements.claimed, params)
            messages = await records.bodies_cursor(conn).execute(
                statements.claimed_messages, params
            )
            progress = {run_id: bodies for run_id, bodies in await phases.fetchall()}
            texts: Sequence[bytes] = [text for (text,) in await messages.fetchall()]
            row = await claimed.fetchone()
            claim: Claim | None = None
            damaged: Damaged = []
            try:
                if row is not None:
                    record = records.record_from_row(row)
                    if record.run_id not in progress:
                        raise StoreError(
                            f"run {record.run_id!r}: claimed but its progress could not be read"
                        )
                    if len(progress) > 1:
                        # Another claim of this owner's at the same instant
                        # (see statements._CLAIMED_MESSAGES): read this one's by id.
                        texts = await self._claimed_messages(conn, params, record.run_id)
                    state = records.state_from_bodies(record.run_id, progress[record.run_id], texts)
                    claim = self._claim(record, state)
            except CorruptCheckpoint as exc:
                damaged.append((exc.run_id, exc))
            except Exception:
                await conn.execute("ROLLBACK")
                raise
            # A damaged run is not taken over: undone, then quarantined by the caller.
            await conn.execute("ROLLBACK" if damaged else "COMMIT")
        return claim, damaged

    async def _claimed_messages(
        self, conn: AsyncConnection[TupleRow], params: dict[str, Any], run_id: str
    ) -> Sequence[bytes]:
        """The messages of ``run_id``, which this transaction claimed."""
        statement = self.database.statements.claimed_one_messages
        cursor = await records.bodies_cursor(conn).execute(statement, {**params, "run_id": run_id})
        return [text for (text,) in await cursor.fetchall()]

    async def _set_aside(
        self, conn: AsyncConnection[TupleRow], namespace: str, damaged: Damaged
    ) -> Sequence[str]:
        """Quarantine the damaged runs (those of a newer format are left
        alone for a newer outlast); their ids, to skip from now on."""
        for run_id, exc in damaged:
            if isinstance(exc, UnknownFormat):
                log.warning("skipping run %r of namespace %r: %s", run_id, namespace, exc.detail)
                continue
            reason = f"{type(exc).__name__}: {exc}"
            if await self._quarantine(conn, namespace, run_id, reason):
                log.error("quarantined run %r of namespace %r: %s", run_id, namespace, reason)
        return [run_id for run_id, _ in damaged]

    async def _quarantine(
        self, conn: AsyncConnection[TupleRow], namespace: str, run_id: str, reason: str
    ) -> bool:
        params = {
            "namespace": namespace,
            "run_id": run_id,
            # A JSON string, as every stored error (see PostgresCheckpointer.fail).
            "error": records.encode_json(reason),
            "version": codec.FORMAT_VERSION,
        }
        cursor = await conn.execute(self.database.statements.quarantine, params)
        return await cursor.fetchone() is not None  # a row: quarantined (and notified)

    def _claim(self, record: RunRecord, state: CheckpointState) -> Claim:
        cursor = SaveCursor(phases=len(state.phases), messages=len(state.history))
        checkpointer = self._checkpointer(
            record.namespace, record.run_id, record.epoch, record.incarnation, cursor
        )
        return Claim(checkpointer, ResumeState(state.history, state.phases), record)

    def _checkpointer(
        self, namespace: str, run_id: str, epoch: int, incarnation: str, cursor: SaveCursor
    ) -> PostgresCheckpointer:
        return PostgresCheckpointer(
            self.database,
            namespace=namespace,
            run_id=run_id,
            epoch=epoch,
            incarnation=incarnation,
            cursor=cursor,
        )


def _readable(rows: Sequence[TupleRow]) -> list[RunRecord]:
    """The records of ``rows`` that parse; the others are logged and skipped."""
    found, damaged = records.sort_out(rows)
    for run_id, exc in damaged:
        log.warning("skipping unreadable run %r: %s", run_id, exc.detail)
    return found


async def _decided(
    conn: AsyncConnection[TupleRow],
    statement: Any,
    params: dict[str, Any],
    refusal: Callable[[str], Exception | None],
) -> RunRecord:
    """Run a cancel or send statement until it decides: the changed record,
    RunNotFound, or ``refusal(status)`` of the status it saw.

    Terminates: the statement is repeated only when the run changed (another
    writer won, or it finished or was deleted) between its snapshot and its
    row lock; the next snapshot sees that change.
    """
    while True:
        cursor = await conn.execute(statement, params)
        row = await cursor.fetchone()
        assert row is not None  # the statement always returns its one row
        seen, changed = row[0], row[2:]
        if changed[0] is not None:
            return records.record_from_row(changed)
        if seen is None:
            raise RunNotFound(params["run_id"], params["namespace"])
        error = refusal(seen)
        if error is not None:
            raise error
