"""``sqlite:///path``: the embedded durable store (stdlib :mod:`sqlite3`, no server).

URLs
    ``sqlite:///relative/path.db`` is relative to the working directory at the
    moment the store is opened; ``sqlite:////absolute/path.db`` is absolute.
    outlast's default URL is ``sqlite:///./.outlast/runs.db``. The file and its
    directory are created on first use (opening a store touches nothing).

Options (URL query ``?busy_timeout=30`` or keyword ``outlast.open(url, busy_timeout=30)``)
    ``busy_timeout``: seconds a statement waits for another connection's write
    lock before giving up with :class:`~outlast.errors.StoreUnavailable`
    (default 5). There is no retention option: terminal runs are removed by
    ``purge`` (``outlast gc``).

Concurrency
    Any number of stores, in any number of processes on one machine, may share
    a file. Each store owns one connection, used by one worker thread of its
    own, so the event loop never blocks on disk I/O. Every write is one
    ``BEGIN IMMEDIATE`` transaction that checks the run's epoch and status
    before writing anything, so writers in different processes serialise and
    a fenced checkpointer writes nothing. A claim is one conditional UPDATE in
    such a transaction: of concurrent claimers exactly one wins. Do not put the
    file on a network filesystem: SQLite's locking is unreliable there.

Clocks
    Lease expiry is ``time.time()`` of the process doing the write or the
    query. Processes sharing a file run on one machine and read one clock, so
    there is no skew between them to tolerate. A jump of that clock (an NTP
    step) only changes *when* a run counts as abandoned, never safety, which
    rests on the epoch alone.

Layout
    One ``runs`` row per run, one ``messages`` row per transcript message and
    one ``phases`` row per completed phase (see
    :mod:`outlast.stores.sqlite_schema`). A save inserts only the new rows.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from outlast import codec, transitions
from outlast.delta import Delta, SaveCursor
from outlast.errors import (
    ConfigurationError,
    CorruptCheckpoint,
    LeaseLost,
    RunExists,
    UnknownFormat,
)
from outlast.messages import JSON
from outlast.ports import (
    DEFAULT_NAMESPACE,
    CheckpointState,
    Claim,
    ResumeState,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    StoredRun,
)
from outlast.stores.sqlite_file import SqliteFile
from outlast.stores.sqlite_schema import (
    COLUMNS,
    load_run,
    parseable_records,
    read_transaction,
    record_of,
    sort_out,
    write_transaction,
)
from outlast.urls import merge_options, redact

log = logging.getLogger("outlast.stores.sqlite")

DEFAULT_BUSY_TIMEOUT = 5.0
OPTIONS = frozenset({"busy_timeout"})

_RUNNING = RunStatus.RUNNING.value
# Appended to every checkpointer UPDATE: transitions.owned, in SQL.
_OWNED = " WHERE namespace = ? AND run_id = ? AND incarnation = ? AND epoch = ? AND status = ?"
# A running run whose lease was released (NULL) or expired: transitions.is_interrupted.
_INTERRUPTED = "status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= ?)"


def open_sqlite(url: str, options: Mapping[str, Any]) -> SqliteStore:
    """The store a ``sqlite://`` URL names; ConfigurationError when it is wrong."""
    merged = merge_options(url, options, known=set(OPTIONS))
    busy_timeout = _seconds(merged.get("busy_timeout", DEFAULT_BUSY_TIMEOUT), "busy_timeout")
    return SqliteStore(path_of(url), busy_timeout=busy_timeout)


def path_of(url: str) -> Path:
    """The absolute file path of a ``sqlite:///...`` URL."""
    parts = urlsplit(url)
    forms = "sqlite:///relative/path.db or sqlite:////absolute/path.db"
    if parts.netloc:
        raise ConfigurationError(
            f"{redact(url)!r}: a sqlite URL names a file, not a host; write {forms}"
        )
    path = unquote(parts.path).removeprefix("/")
    if not path or path.endswith("/"):
        raise ConfigurationError(f"{redact(url)!r} names no database file; write {forms}")
    if path == ":memory:":
        raise ConfigurationError(
            "an in-memory SQLite database is not durable; use memory:// for a store "
            "that lives in this process"
        )
    return Path(os.path.abspath(path))


def _seconds(value: object, name: str) -> float:
    try:
        seconds = float(str(value))  # URL query values arrive as text, keywords as numbers
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return seconds


class SqliteCheckpointer:
    """One run's record in a SQLite file, held at one epoch of one incarnation."""

    def __init__(self, file: SqliteFile, record: RunRecord, cursor: SaveCursor) -> None:
        self._file = file
        self._namespace = record.namespace
        self._run_id = record.run_id
        self._epoch = record.epoch
        self._incarnation = record.incarnation
        self._cursor = cursor

    def __repr__(self) -> str:
        return f"SqliteCheckpointer(run_id={self._run_id!r}, epoch={self._epoch})"

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def epoch(self) -> int:
        return self._epoch

    async def save(self, state: CheckpointState) -> bool:
        delta = self._cursor.delta(state)
        rows = self._rows(delta)  # encoded before BEGIN: the lock is held only for the I/O
        cancel_requested = await self._file.call(lambda conn: self._write_delta(conn, delta, *rows))
        # Only now is the delta durable; a failed save is retried by the next.
        self._cursor = delta.after
        return cancel_requested

    async def complete(self, result: JSON) -> None:
        result_text = codec.dumps(result)

        def job(conn: sqlite3.Connection) -> None:
            with write_transaction(conn):
                self._owned_update(
                    conn,
                    "UPDATE runs SET status = 'completed', result = ?, lease_expires_at = NULL, "
                    "updated_at = ?",
                    (result_text, time.time()),
                )
                key = (self._namespace, self._run_id)
                conn.execute("DELETE FROM messages WHERE namespace = ? AND run_id = ?", key)
                conn.execute("DELETE FROM phases WHERE namespace = ? AND run_id = ?", key)

        await self._file.call(job)

    async def fail(self, error: str) -> None:
        await self._owned_write(
            "UPDATE runs SET status = 'failed', error = ?, lease_expires_at = NULL, updated_at = ?",
            lambda now: (error, now),
        )

    async def release(self) -> None:
        await self._owned_write(
            "UPDATE runs SET lease_expires_at = NULL, updated_at = ?", lambda now: (now,)
        )

    async def renew(self) -> bool:
        return await self._owned_write(
            "UPDATE runs SET lease_expires_at = ? + lease_seconds, updated_at = ?",
            lambda now: (now, now),
        )

    def _rows(self, delta: Delta) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        ns, run_id = self._namespace, self._run_id
        phases = [
            (ns, run_id, delta.first_phase + i, codec.encode_phase(phase))
            for i, phase in enumerate(delta.phases)
        ]
        messages = [
            (ns, run_id, delta.segment, delta.first_message + i, codec.encode_message(message))
            for i, message in enumerate(delta.messages)
        ]
        return phases, messages

    def _write_delta(
        self,
        conn: sqlite3.Connection,
        delta: Delta,
        phases: list[tuple[Any, ...]],
        messages: list[tuple[Any, ...]],
    ) -> bool:
        with write_transaction(conn):
            # Also for an empty delta: a fenced writer must learn it is fenced.
            cancel_requested = self._owned_update(
                conn, "UPDATE runs SET updated_at = ?", (time.time(),)
            )
            # OR REPLACE only ever meets rows at or past the durable cursor (a
            # save whose commit succeeded but whose caller never heard back).
            conn.executemany(
                "INSERT OR REPLACE INTO phases (namespace, run_id, idx, body) VALUES (?, ?, ?, ?)",
                phases,
            )
            conn.executemany(
                "INSERT OR REPLACE INTO messages (namespace, run_id, segment, seq, body) "
                "VALUES (?, ?, ?, ?, ?)",
                messages,
            )
        return cancel_requested

    async def _owned_write(self, update: str, values: Callable[[float], tuple[Any, ...]]) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            with write_transaction(conn):
                return self._owned_update(conn, update, values(time.time()))

        return await self._file.call(job)

    def _owned_update(self, conn: sqlite3.Connection, update: str, values: tuple[Any, ...]) -> bool:
        """Run ``update`` only while this checkpointer owns the running run, else
        LeaseLost; return the run's ``cancel_requested``.

        Called inside a write transaction, whose rollback undoes the rest.
        """
        owned = (self._namespace, self._run_id, self._incarnation, self._epoch, _RUNNING)
        if conn.execute(update + _OWNED, (*values, *owned)).rowcount == 1:
            flag = conn.execute(
                "SELECT cancel_requested FROM runs WHERE namespace = ? AND run_id = ?",
                (self._namespace, self._run_id),
            ).fetchone()
            return bool(flag[0])
        row = conn.execute(
            "SELECT epoch, status, incarnation FROM runs WHERE namespace = ? AND run_id = ?",
            (self._namespace, self._run_id),
        ).fetchone()
        if row is None:
            raise LeaseLost(self._run_id, self._epoch, "the run was deleted")
        if row["incarnation"] != self._incarnation:
            raise LeaseLost(self._run_id, self._epoch, "the run was deleted and begun again")
        if row["epoch"] == self._epoch:
            raise LeaseLost(self._run_id, self._epoch, f"the run is {row['status']}")
        raise LeaseLost(self._run_id, self._epoch, f"epoch {row['epoch']} owns it now")


class SqliteStore:
    """A CheckpointerFactory in one SQLite file, shareable by processes on this machine."""

    def __init__(self, path: Path | str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.file = SqliteFile(self.path, busy_timeout)

    def __repr__(self) -> str:
        return f"SqliteStore(path={str(self.path)!r})"

    async def begin(self, start: RunStart) -> SqliteCheckpointer:
        record = await self._create(transitions.begin(start, start.input, time.time()))
        return SqliteCheckpointer(self.file, record, SaveCursor())

    async def submit(self, start: RunStart) -> None:
        await self._create(transitions.submit(start, start.input, time.time()))

    async def _create(self, record: RunRecord) -> RunRecord:
        """Insert the record a begin or submit transition made. The primary key
        is the atomic "exists" check: of concurrent creations one wins."""
        input_text = codec.dumps(record.input)

        def job(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO runs (namespace, run_id, kind, input, status, epoch, attempts, "
                    "crashes, owner, lease_seconds, lease_expires_at, created_at, updated_at, "
                    "format_version, incarnation) "
                    "VALUES (?, ?, ?, ?, 'running', ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.namespace,
                        record.run_id,
                        record.kind,
                        input_text,
                        record.epoch,
                        record.attempts,
                        record.owner,
                        record.lease,
                        record.lease_expires_at,
                        record.created_at,
                        record.updated_at,
                        codec.FORMAT_VERSION,
                        record.incarnation,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise RunExists(record.run_id, record.namespace) from exc

        await self.file.call(job)
        return record

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        def job(conn: sqlite3.Connection) -> list[RunRecord]:
            skip: list[str] = []
            # Terminates: a query is repeated only when its rows held a damaged
            # record, which is then quarantined or skipped for good.
            while True:
                query = (
                    f"SELECT {COLUMNS} FROM runs WHERE namespace = ? AND {_INTERRUPTED} "
                    f"AND run_id NOT IN ({', '.join('?' * len(skip))}) "
                    "ORDER BY COALESCE(lease_expires_at, updated_at), run_id LIMIT ?"
                )
                params = (namespace, time.time(), *skip, limit)
                with closing(conn.execute(query, params)) as rows:
                    records, damaged = sort_out(rows)
                if not damaged:
                    return records
                for run_id, exc in damaged:
                    skip.append(run_id)
                    if isinstance(exc, UnknownFormat):
                        log.warning("skipping run %r of a newer outlast: %s", run_id, exc.detail)
                    elif _quarantine(conn, namespace, run_id, _reason(exc)):
                        log.error("quarantined run %r in namespace %r: %s", run_id, namespace, exc)

        return await self.file.call(job)

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        def job(conn: sqlite3.Connection) -> tuple[RunRecord, CheckpointState] | None:
            with write_transaction(conn):
                return _take(conn, namespace, run_id, owner, lease, time.time())

        won = await self.file.call(job)
        return None if won is None else self._claimed(*won)

    def _claimed(self, record: RunRecord, state: CheckpointState) -> Claim:
        cursor = SaveCursor(phases=len(state.phases), messages=len(state.history))
        checkpointer = SqliteCheckpointer(self.file, record, cursor)
        return Claim(checkpointer, ResumeState(state.history, state.phases), record)

    async def claim_next(
        self,
        kinds: Sequence[str],
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        kinds = list(kinds)

        def job(conn: sqlite3.Connection) -> tuple[RunRecord, CheckpointState] | None:
            skip: list[str] = []
            # Terminates: each pass after the first skips one more damaged run.
            while True:
                now = time.time()
                run_id = ""
                damage: CorruptCheckpoint | None = None
                try:
                    # The pick and the claim in one write transaction: no two
                    # claimers (threads or processes) pick the same run.
                    with write_transaction(conn):
                        picked = conn.execute(
                            f"SELECT run_id FROM runs WHERE namespace = ? AND {_INTERRUPTED} "
                            f"AND kind IN ({', '.join('?' * len(kinds))}) "
                            f"AND run_id NOT IN ({', '.join('?' * len(skip))}) "
                            "ORDER BY COALESCE(lease_expires_at, updated_at), run_id LIMIT 1",
                            (namespace, now, *kinds, *skip),
                        ).fetchone()
                        if picked is None:
                            return None
                        run_id = picked["run_id"]
                        return _take(conn, namespace, run_id, owner, lease, now)
                except UnknownFormat:
                    pass  # a newer outlast's run: skipped, left alone
                except CorruptCheckpoint as exc:  # rolled back: quarantined below
                    damage = exc
                skip.append(run_id)
                if damage is not None and _quarantine(conn, namespace, run_id, _reason(damage)):
                    log.error("quarantined run %r in namespace %r: %s", run_id, namespace, damage)

        won = await self.file.call(job)
        return None if won is None else self._claimed(*won)

    async def cancel(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> RunRecord:
        def job(conn: sqlite3.Connection) -> RunRecord:
            now = time.time()
            with write_transaction(conn):
                row = conn.execute(
                    f"SELECT {COLUMNS} FROM runs WHERE namespace = ? AND run_id = ?",
                    (namespace, run_id),
                ).fetchone()
                # transitions.cancel decides; the UPDATE stores exactly what it changed.
                after = transitions.cancel(
                    None if row is None else record_of(row), now, run_id, namespace
                )
                conn.execute(
                    "UPDATE runs SET status = ?, error = ?, epoch = ?, lease_expires_at = ?, "
                    "cancel_requested = 1, updated_at = ? WHERE namespace = ? AND run_id = ?",
                    (
                        after.status.value,
                        after.error,
                        after.epoch,
                        after.lease_expires_at,
                        now,
                        namespace,
                        run_id,
                    ),
                )
                return after

        return await self.file.call(job)

    async def quarantine(
        self, run_id: str, reason: str, namespace: str = DEFAULT_NAMESPACE
    ) -> bool:
        return await self.file.call(lambda conn: _quarantine(conn, namespace, run_id, reason))

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        def job(conn: sqlite3.Connection) -> StoredRun | None:
            with read_transaction(conn):
                found = load_run(conn, namespace, run_id)
            return None if found is None else StoredRun(*found)

        return await self.file.call(job)

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        def job(conn: sqlite3.Connection) -> list[RunRecord]:
            query = f"SELECT {COLUMNS} FROM runs WHERE namespace = ?"
            params: list[Any] = [namespace]
            if status is not None:
                query += " AND status = ?"
                params.append(RunStatus(status).value)
            if cursor is not None:
                query += " AND run_id > ?"
                params.append(cursor)
            with closing(conn.execute(query + " ORDER BY run_id", params)) as rows:
                # One more than a page tells whether another page follows.
                return parseable_records(rows, limit + 1)

        records = await self.file.call(job)
        page = tuple(records[:limit])
        more = len(records) > limit
        return RunPage(page, page[-1].run_id if more and page else None)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            key = (namespace, run_id)
            with write_transaction(conn):
                conn.execute("DELETE FROM messages WHERE namespace = ? AND run_id = ?", key)
                conn.execute("DELETE FROM phases WHERE namespace = ? AND run_id = ?", key)
                removed = conn.execute("DELETE FROM runs WHERE namespace = ? AND run_id = ?", key)
                return removed.rowcount > 0

        return await self.file.call(job)

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        def job(conn: sqlite3.Connection) -> int:
            doomed = "namespace = ? AND status != 'running' AND updated_at < ?"
            params = (namespace, time.time() - older_than)
            with write_transaction(conn):
                for table in ("messages", "phases"):
                    conn.execute(
                        f"DELETE FROM {table} WHERE namespace = ? "
                        f"AND run_id IN (SELECT run_id FROM runs WHERE {doomed})",
                        (namespace, *params),
                    )
                return conn.execute(f"DELETE FROM runs WHERE {doomed}", params).rowcount

        return await self.file.call(job)

    async def migrate(self) -> None:
        """Create the file and its schema now (``outlast migrate``); idempotent.

        Every store also does this lazily on first use.
        """
        await self.file.call(lambda conn: None)

    async def close(self) -> None:
        """Close the connection and stop the worker; later calls raise StoreError."""
        await self.file.close()


def _take(
    conn: sqlite3.Connection, namespace: str, run_id: str, owner: str, lease: float, now: float
) -> tuple[RunRecord, CheckpointState] | None:
    """transitions.claim, in SQL, inside the caller's write transaction: an
    expired (not released) lease is a crash. A record or transcript that does
    not parse raises CorruptCheckpoint; the caller's rollback undoes the claim,
    so a corrupt run is never taken over."""
    taken = conn.execute(
        "UPDATE runs SET epoch = epoch + 1, attempts = attempts + 1, "
        "crashes = crashes + (lease_expires_at IS NOT NULL), owner = ?, "
        "lease_seconds = ?, lease_expires_at = ?, updated_at = ? "
        f"WHERE namespace = ? AND run_id = ? AND {_INTERRUPTED}",
        (owner, lease, now + lease, now, namespace, run_id, now),
    ).rowcount
    return load_run(conn, namespace, run_id) if taken else None


def _quarantine(conn: sqlite3.Connection, namespace: str, run_id: str, reason: str) -> bool:
    """transitions.quarantine, in SQL: fail the run only while it is interrupted
    and in a format this outlast reads; everything stored stays."""
    with write_transaction(conn):
        now = time.time()
        changed = conn.execute(
            "UPDATE runs SET status = 'failed', error = ?, epoch = epoch + 1, "
            "lease_expires_at = NULL, updated_at = ? "
            f"WHERE namespace = ? AND run_id = ? AND format_version = ? AND {_INTERRUPTED}",
            (reason, now, namespace, run_id, codec.FORMAT_VERSION, now),
        ).rowcount
    return changed == 1


def _reason(exc: CorruptCheckpoint) -> str:
    """The error text a quarantined run keeps."""
    return f"{type(exc).__name__}: {exc}"
