"""``sqlite:///path``: the embedded durable store (stdlib :mod:`sqlite3`, no server).

URLs
    ``sqlite:///relative/path.db`` is relative to the working directory at the
    moment the store is opened; ``sqlite:////absolute/path.db`` is absolute.
    outlast's default URL is ``sqlite:///./.outlast/runs.db``. The file and its
    directory are created on first use (opening a store touches nothing),
    unless ``create`` is false.

Options (URL query ``?busy_timeout=30`` or keyword ``outlast.open(url, busy_timeout=30)``)
    ``busy_timeout``: seconds a statement waits for another connection's write
    lock before giving up with :class:`~outlast.errors.StoreUnavailable`
    (default 5). ``create``: ``false`` uses only an outlast database that
    exists, making no folder, file or schema; first use raises
    :class:`~outlast.errors.StoreUnavailable` when there is none (default
    ``true``; the CLI's commands on existing runs open with ``false``, so a
    mistyped path is reported instead of created). ``synchronous``: ``normal``
    (default) or ``full``, see *Durability*. There is no retention option:
    terminal runs are removed by ``purge`` (``outlast gc``).

Durability
    The file is in WAL mode. With ``synchronous=normal`` (the default) every
    committed write — each save, claim, completion — survives a crash of the
    process that made it (``kill -9``, an OOM kill), which is the failure
    outlast recovers runs from. An OS crash or a power cut may roll back the
    most recent commits (those since SQLite last synced its log to disk): a
    run then continues from an earlier save and repeats the steps after it,
    and a run begun or finished just before may be gone or running again. It
    never corrupts the file. ``?synchronous=full`` (or
    ``outlast.open(url, synchronous="full")``) makes every commit survive
    those too, at the cost of one fsync per write: choose it when a repeated
    step costs more than a slower save.

Concurrency
    Any number of stores, in any number of processes on one machine, may share
    a file. Each store owns one connection, used by one worker thread of its
    own, so the event loop never blocks on disk I/O. Every write is one
    ``BEGIN IMMEDIATE`` transaction that checks the run's epoch and status
    before writing anything, so writers in different processes serialise and
    a fenced checkpointer writes nothing. A claim is one such transaction,
    which updates the run's row only if it is interrupted: of concurrent
    claimers exactly one wins. It reads and writes that row only; the
    transcript is read after its commit, in a snapshot of its own (the claim
    holds the run, so nobody else changes it), and decoded outside any
    transaction: resuming a long run holds other processes' writes up no
    longer than a save does. A record or transcript that does not parse
    undoes the claim (the row gets back what the claim changed, unless
    another write came in between), so a damaged run is never taken over.
    Do not put the file on a network filesystem: SQLite's locking is
    unreliable there.

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
    A new file has 8 KiB pages (a file that exists keeps its own). The
    ``-wal`` file is kept small: once a write leaves more than 64 KiB in it
    (1/32 of a file larger than 2 MiB), the store checkpoints it (PASSIVE:
    no other writer waits for it) and starts the log over, truncating its
    file, on its worker thread: after that write has returned, and only once
    its caller pauses (an agent does, for every model and tool call), so a
    save waits for it only if it comes sooner after the one before than a
    checkpoint takes (three fsyncs: ~1-2 ms on the disk measured). Calls
    issued back to back leave the log to SQLite's own auto-checkpoint, inside
    the commit that passes 1 MiB, until the next pause. A reader holding an
    older snapshot, which outlast never does for long, delays both; closing
    the last connection to the file checkpoints and removes it. A checkpoint
    syncs the log too: an OS crash or power cut can roll back only the
    commits made since the last one.

Performance
    Measured with ``bench/sqlite_wal_claim.py`` (2 cores, Python 3.11, SQLite
    3.40, a machine shared with other benchmarks), this version against the
    one before, interleaved, two runs each:

    - Bytes, 1,000 saves of one ~1 KiB message (1.09 MB of message JSON), a
      2 ms pause after each: file + WAL after the last save 1.21x (before
      1.77x), 1.14x leaving out the empty file's schema (before 1.70x), at
      most 1.25x over the last 100 saves (before 2.11x); 1.16x once closed,
      as before. Saves back to back: 1.77x, as before. A 10,000-message run:
      1.11x, as before. Checkpoints cost three fsyncs each (the log, the
      file, the new log's header): ~1,090 per 1,000 paused saves, ~83 before.
    - Save, paused: median 0.37-0.42 ms (before 0.31-0.34 ms: within this
      machine's noise, perhaps slightly slower), p99 1.0-1.2 ms (before
      2.8 ms: no save runs a checkpoint any more). Back to back: as before.
    - Resume, claim + load of a 10,000-message run: median 55-61 ms, as
      before (55-63 ms): ~10-16 ms of CPU reading the rows, the rest decoding
      them. The claim's write transaction holds the lock for ~0.1 ms (p99
      0.4 ms), as before.
    - Another process saving back to back while 15 such claims run: median
      0.2-0.3 ms, p99 2.5-3 ms, as before.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from outlast import codec, transitions
from outlast.delta import SaveCursor
from outlast.errors import (
    ConfigurationError,
    CorruptCheckpoint,
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
from outlast.stores.sqlite_checkpointer import SqliteCheckpointer
from outlast.stores.sqlite_file import SqliteFile
from outlast.stores.sqlite_schema import (
    COLUMNS,
    RawRun,
    decode_run,
    parseable_records,
    read_progress,
    read_run,
    read_transaction,
    record_of,
    run_row,
    sort_out,
    synchronous_mode,
    write_transaction,
)
from outlast.urls import merge_options, redact

log = logging.getLogger("outlast.stores.sqlite")

DEFAULT_BUSY_TIMEOUT = 5.0
OPTIONS = frozenset({"busy_timeout", "create", "synchronous"})

# A running run whose lease was released (NULL) or expired: transitions.is_interrupted.
# transitions.is_interrupted, in SQL, with one parameter (now): running with a
# lease released (NULL: counts as 0) or past, or waiting with a timeout past
# (a waiting run without a timeout has NULL, which is never <= now).
_INTERRUPTED = (
    "status IN ('running', 'waiting') "
    "AND IFNULL(lease_expires_at, CASE status WHEN 'running' THEN 0 END) <= ?"
)


def open_sqlite(url: str, options: Mapping[str, Any]) -> SqliteStore:
    """The store a ``sqlite://`` URL names; ConfigurationError when it is wrong."""
    merged = merge_options(url, options, known=set(OPTIONS))
    busy_timeout = _seconds(merged.get("busy_timeout", DEFAULT_BUSY_TIMEOUT), "busy_timeout")
    create = _flag(merged.get("create", True), "create")
    synchronous = synchronous_mode(merged.get("synchronous", "normal"))
    return SqliteStore(
        path_of(url), busy_timeout=busy_timeout, create=create, synchronous=synchronous
    )


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


def _flag(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()  # URL query values arrive as text
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


class SqliteStore:
    """A CheckpointerFactory in one SQLite file, shareable by processes on this machine."""

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        create: bool = True,
        synchronous: str = "normal",
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous_mode(synchronous)
        self.file = SqliteFile(self.path, busy_timeout, create=create, synchronous=self.synchronous)

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
                taken = _take(conn, namespace, run_id, owner, lease, time.time())
            return None if taken is None else _resume(conn, *taken)

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
            # Terminates: each pass after the first skips one more run.
            while True:
                now = time.time()
                run_id = ""
                taken: tuple[sqlite3.Row, sqlite3.Row] | None = None
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
                        taken = _take(conn, namespace, run_id, owner, lease, now)
                    if taken is not None:
                        won = _resume(conn, *taken)
                        if won is not None:
                            return won
                except UnknownFormat:
                    pass  # a newer outlast's run: skipped, left alone (the claim undone)
                except CorruptCheckpoint as exc:  # the claim undone: quarantined
                    if _quarantine(conn, namespace, run_id, _reason(exc)):
                        log.error("quarantined run %r in namespace %r: %s", run_id, namespace, exc)
                skip.append(run_id)  # also a run lost again since (deleted, or taken)

        won = await self.file.call(job)
        return None if won is None else self._claimed(*won)

    async def cancel(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> RunRecord:
        def job(conn: sqlite3.Connection) -> RunRecord:
            now = time.time()
            with write_transaction(conn):
                row = run_row(conn, namespace, run_id)
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

    async def send(
        self, run_id: str, delivery: JSON, namespace: str = DEFAULT_NAMESPACE
    ) -> RunRecord:
        delivery_text = codec.dumps(delivery)

        def job(conn: sqlite3.Connection) -> RunRecord:
            now = time.time()
            with write_transaction(conn):
                row = run_row(conn, namespace, run_id)
                after = transitions.send(
                    None if row is None else record_of(row),
                    codec.loads(delivery_text, run_id),
                    now,
                    run_id,
                    namespace,
                )
                conn.execute(
                    "UPDATE runs SET status = 'running', delivery = ?, lease_expires_at = NULL, "
                    "updated_at = ? WHERE namespace = ? AND run_id = ?",
                    (delivery_text, now, namespace, run_id),
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
                raw = read_run(conn, namespace, run_id)
            # Decoded after the snapshot ends: it never holds a checkpoint back.
            return None if raw is None else StoredRun(*decode_run(raw))

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
            doomed = "namespace = ? AND status IN ('completed', 'failed') AND updated_at < ?"
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

    async def namespaces(self) -> dict[str, int]:
        """Every namespace that holds runs, with its number of runs, by name.

        Not part of the store contract: ``outlast runs list`` uses it, where a
        backend has it, to point at the namespaces an empty listing missed.
        """

        def job(conn: sqlite3.Connection) -> dict[str, int]:
            query = "SELECT namespace, COUNT(*) FROM runs GROUP BY namespace ORDER BY namespace"
            with closing(conn.execute(query)) as rows:
                return {namespace: count for namespace, count in rows}

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
) -> tuple[sqlite3.Row, sqlite3.Row] | None:
    """transitions.claim, in SQL, inside the caller's write transaction: an
    expired (not released) lease is a crash. The run's row before and after
    the claim, as stored (nothing decoded: the write lock is held for a few
    row reads and one UPDATE only); None when it is not interrupted.

    A run of a newer outlast raises UnknownFormat before anything is written
    (the caller's rollback ends the transaction). The transcript is read and
    every JSON decoded by :func:`_resume` once the transaction has committed.
    """
    key = (namespace, run_id)
    before = conn.execute(
        f"SELECT {COLUMNS} FROM runs WHERE namespace = ? AND run_id = ? AND {_INTERRUPTED}",
        (*key, now),
    ).fetchone()
    if before is None:
        return None
    codec.check_version(before["format_version"], run_id)
    conn.execute(
        "UPDATE runs SET status = 'running', epoch = epoch + 1, attempts = attempts + 1, "
        "crashes = crashes + (status = 'running' AND lease_expires_at IS NOT NULL), owner = ?, "
        "lease_seconds = ?, lease_expires_at = ?, updated_at = ? "
        "WHERE namespace = ? AND run_id = ?",
        (owner, lease, now + lease, now, *key),
    )
    after = run_row(conn, namespace, run_id)
    assert after is not None  # updated in this transaction
    return before, after


def _resume(
    conn: sqlite3.Connection, before: sqlite3.Row, after: sqlite3.Row
) -> tuple[RunRecord, CheckpointState] | None:
    """The claimed run's record and progress, read and decoded after the
    claim's commit, so other processes' writes never wait for the decoding.

    The claim holds the run: nobody else can change its transcript, and a
    snapshot read now is the one the claim took over. None when the run was
    lost in between (deleted, or claimed again after a lease of ~0 s): the
    checkpointer would be fenced anyway. When anything does not parse the
    claim is undone (:func:`_undo`) and CorruptCheckpoint raised: a damaged
    run is never taken over.
    """
    namespace, run_id = after["namespace"], after["run_id"]
    with read_transaction(conn):
        held = conn.execute(
            "SELECT epoch, incarnation FROM runs WHERE namespace = ? AND run_id = ?",
            (namespace, run_id),
        ).fetchone()
        if held is None or tuple(held) != (after["epoch"], after["incarnation"]):
            return None
        phases, messages = read_progress(conn, namespace, run_id)
    try:
        return decode_run(RawRun(after, phases, messages))
    except CorruptCheckpoint:
        _undo(conn, before, after)
        raise


_CLAIMED = (
    "status", "epoch", "attempts", "crashes", "owner", "lease_seconds", "lease_expires_at",
    "updated_at",
)  # fmt: skip
"""The columns a claim sets (see :func:`_take`)."""


def _undo(conn: sqlite3.Connection, before: sqlite3.Row, after: sqlite3.Row) -> None:
    """Put back what the claim changed, the epoch included (the claim's
    checkpointer was never handed out), so a damaged run is left as it was:
    its previous owner, if alive, holds it again. A row that moved on since
    the claim (a cancel, a send, a delete, a later claim) is left alone.
    """
    restore = ", ".join(f"{column} = ?" for column in _CLAIMED)
    still = " AND ".join(f"{column} IS ?" for column in ("incarnation", *_CLAIMED))
    with write_transaction(conn):
        conn.execute(
            f"UPDATE runs SET {restore} WHERE namespace = ? AND run_id = ? AND {still}",
            (
                *(before[column] for column in _CLAIMED),
                after["namespace"],
                after["run_id"],
                *(after[column] for column in ("incarnation", *_CLAIMED)),
            ),
        )


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
