"""The SQLite store's file: connection settings, tables, reading rows, driver errors.

Kept apart from :mod:`outlast.stores.sqlite` (which holds the store's
semantics: fencing, claims, deltas) because everything here is about the
database file itself: how it is opened, which tables it holds, how a row
becomes a record, and what a driver error means to the user.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from outlast import codec
from outlast.errors import (
    ConfigurationError,
    CorruptCheckpoint,
    OutlastError,
    StoreError,
    StoreUnavailable,
)
from outlast.messages import JSON
from outlast.ports import CheckpointState, RunRecord, RunStatus

log = logging.getLogger("outlast.stores.sqlite")

SCHEMA_VERSION = 4
"""Kept in ``PRAGMA user_version``; a newer one means a newer outlast wrote the file."""

COLUMNS = (
    "namespace, run_id, kind, input, status, epoch, attempts, crashes, owner, lease_seconds, "
    "lease_expires_at, result, error, created_at, updated_at, format_version, incarnation, "
    "cancel_requested, wait, delivery, usage"
)
"""The ``runs`` columns :func:`record_of` reads, in a SELECT's column list."""

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS runs (
        namespace        TEXT    NOT NULL,
        run_id           TEXT    NOT NULL,
        kind             TEXT    NOT NULL,
        input            TEXT    NOT NULL,
        status           TEXT    NOT NULL,
        epoch            INTEGER NOT NULL,
        attempts         INTEGER NOT NULL,
        owner            TEXT    NOT NULL,
        lease_seconds    REAL    NOT NULL,
        lease_expires_at REAL,
        result           TEXT,
        error            TEXT,
        created_at       REAL    NOT NULL,
        updated_at       REAL    NOT NULL,
        format_version   INTEGER NOT NULL,
        crashes          INTEGER NOT NULL DEFAULT 0,
        incarnation      TEXT    NOT NULL DEFAULT '',
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        wait             TEXT,
        delivery         TEXT,
        usage            TEXT,
        PRIMARY KEY (namespace, run_id)
    )
    """,
    # interrupted(): running runs of a namespace whose lease is NULL or past.
    """
    CREATE INDEX IF NOT EXISTS runs_interrupted
        ON runs (namespace, status, lease_expires_at)
    """,
    # One row per transcript message; ``segment`` is the number of phases
    # completed when it was saved, ``seq`` its position in that segment.
    """
    CREATE TABLE IF NOT EXISTS messages (
        namespace TEXT    NOT NULL,
        run_id    TEXT    NOT NULL,
        segment   INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        body      TEXT    NOT NULL,
        PRIMARY KEY (namespace, run_id, segment, seq)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS phases (
        namespace TEXT    NOT NULL,
        run_id    TEXT    NOT NULL,
        idx       INTEGER NOT NULL,
        body      TEXT    NOT NULL,
        PRIMARY KEY (namespace, run_id, idx)
    )
    """,
)


PAGE_SIZE = 8192
"""The page size of a new file (one that exists keeps its own). A page holds
whole rows: ~1 KiB messages fill 8 KiB pages to ~90-95%, 4 KiB ones (SQLite's
default) to ~80%."""

WAL_BOUND_BYTES = 64 * 1024
"""The ``-wal`` file's bound in a small file (see :func:`wal_over_bound`):
eight 8 KiB pages, a twentieth of a 1,000-message transcript."""

WAL_BOUND_SHARE = 32
"""In a file larger than ``WAL_BOUND_SHARE * WAL_BOUND_BYTES`` (2 MiB) the
``-wal`` file's bound is this fraction of it (1/32: 3%)."""

WAL_CHECKPOINT_BYTES = 1024 * 1024
"""SQLite's own auto-checkpoint threshold (``PRAGMA wal_autocheckpoint``), a
backstop behind the store's bound: a commit leaving more than this in the
``-wal`` file checkpoints it inside the commit (see :func:`_bound_wal`). It
governs in files past 32 MiB, while calls come back to back (the store
checkpoints at a pause), and when the store's checkpoints cannot copy the log
(a reader holding it)."""

WAL_SIZE_LIMIT = 0
"""The size the ``-wal`` file is truncated to when the log starts again after
a checkpoint (``PRAGMA journal_size_limit``)."""

SYNCHRONOUS = ("normal", "full")
"""The ``synchronous`` option's values (``PRAGMA synchronous``): what a commit survives."""


def synchronous_mode(value: object) -> str:
    """``value`` as a ``synchronous`` mode, lower-case; ConfigurationError when it is none."""
    mode = str(value).strip().lower()  # URL query values arrive as text
    if mode not in SYNCHRONOUS:
        raise ConfigurationError(
            "synchronous must be normal (the default: every save survives a crash of the "
            "process) or full (a power cut or an OS crash too, at one fsync per save), "
            f"got {value!r}"
        )
    return mode


def connect(
    path: Path, busy_timeout: float, *, create: bool = True, synchronous: str = "normal"
) -> sqlite3.Connection:
    """Open ``path`` (creating its directory), set it up, migrate the schema.

    ``create=False`` opens only an outlast database that exists: no folder,
    file or schema is made, and StoreUnavailable says there is none.
    The connection is in autocommit mode (``isolation_level=None``): every
    transaction is opened explicitly, writes with ``BEGIN IMMEDIATE``.
    """
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the directory of SQLite database {str(path)!r} ({exc}); "
                "point the sqlite:// URL at a writable location"
            ) from exc
    elif not path.is_file():
        raise StoreUnavailable(_missing(path))
    # Opened, used and closed by the store's one worker thread only. mode=rw
    # never creates the file (a check above could race with a delete).
    target = str(path) if create else f"{path.as_uri()}?mode=rw"
    conn = sqlite3.connect(target, timeout=busy_timeout, isolation_level=None, uri=not create)
    try:
        if not create and _user_version(conn, path) == 0:
            raise StoreUnavailable(
                _missing(path) + " (the file exists but holds no outlast schema)"
            )
        conn.row_factory = sqlite3.Row
        # A new file's page size, set before WAL mode (or a table) writes its
        # header; a file that exists keeps its own. PRAGMA takes no
        # parameters; PAGE_SIZE is a constant int.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE:d}")
        # WAL: readers never block the writer and a commit is one append to the
        # log. synchronous=NORMAL under WAL keeps every committed transaction
        # across a process crash (kill -9), which is the failure model outlast
        # recovers from; only an OS crash or power cut may lose the last
        # commits (never corrupting the file). FULL, the option, adds an fsync
        # of the log to every commit so those survive too.
        _enable_wal(conn, busy_timeout)
        # PRAGMA takes no parameters; the mode is one of SYNCHRONOUS.
        conn.execute(f"PRAGMA synchronous={synchronous_mode(synchronous).upper()}")
        _bound_wal(conn)
        migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _bound_wal(conn: sqlite3.Connection) -> None:
    """Let the ``-wal`` file shrink after a checkpoint; set SQLite's backstop.

    The store checkpoints the log itself after a write that leaves it past
    its bound (:func:`wal_over_bound`, :func:`checkpoint`); SQLite's own
    auto-checkpoint, the same PASSIVE copy run inside the commit that crosses
    its threshold, is set to :data:`WAL_CHECKPOINT_BYTES` (SQLite's default is
    1,000 pages). The first write after a complete checkpoint starts the log
    again from its beginning and truncates the file to :data:`WAL_SIZE_LIMIT`:
    without that limit the file never shrinks from its largest size. A reader
    that keeps one snapshot open for long (not outlast: its reads are single
    short transactions) holds the log back until it ends.
    """
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    # PRAGMA takes no parameters; both values are computed ints.
    conn.execute(f"PRAGMA wal_autocheckpoint = {max(1, WAL_CHECKPOINT_BYTES // page_size):d}")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT:d}")


def wal_path(path: Path) -> Path:
    """The ``-wal`` file of the database at ``path``."""
    return path.with_name(path.name + "-wal")


def wal_size(path: Path) -> int:
    """The size of the database's ``-wal`` file; 0 when there is none."""
    return _size(wal_path(path))


def wal_over_bound(path: Path) -> bool:
    """Whether the ``-wal`` file holds more than its bound: the larger of
    :data:`WAL_BOUND_BYTES` and 1/:data:`WAL_BOUND_SHARE` of the database file.

    The bytes a run takes are its rows plus the log: a save writes three
    8 KiB pages to it (its row's, its index entry's, the run's row's), so
    SQLite's default of 1,000 pages, or even 1 MiB, is as much again as a
    1,000-message transcript. At 64 KiB a file with its log stays within
    ~1.2x of such a transcript's JSON, at the cost of a checkpoint every ~3
    saves: three fsyncs, after the save, once its caller pauses (see
    :func:`checkpoint` and ``SqliteFile``). A bound that grows with the file
    keeps the log as small a share of a large file while checkpointing it as
    rarely as that allows.

    Two stats (~2 µs each), after a write only. The ``-wal`` file's size is
    what the log holds: the file is truncated whenever the log starts over.
    """
    size = wal_size(path)
    return size > WAL_BOUND_BYTES and size > _size(path) // WAL_BOUND_SHARE


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the log into the database file, then start the log over.

    ``PRAGMA wal_checkpoint(PASSIVE)`` takes no lock a writer waits for and
    copies only frames no reader still needs. Saves append to the same few
    leaf pages, so it copies a handful of pages; it costs two fsyncs (the
    log's, then the file's: what makes the copy safe across a power cut).
    When it copied everything, the next write starts the log over from its
    beginning, truncating its file (``journal_size_limit``), and syncs the
    new log's header: a third fsync, which :func:`_restart_log` takes here
    rather than leave it to the next save.
    """
    busy, in_log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if busy == 0 and 0 < in_log == copied:  # else a reader still needs the log
        _restart_log(conn)


def _restart_log(conn: sqlite3.Connection) -> None:
    """A write of one page, which starts a completely copied log over.

    It writes ``user_version`` as it is (read under the write lock: another
    process may have upgraded the file), which changes nothing but page 1.
    Like any write it waits for another process's write transaction (up to
    busy_timeout); the next save would wait for that one all the same.
    """
    with write_transaction(conn):
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        # PRAGMA takes no parameters; version is an int read just now.
        conn.execute(f"PRAGMA user_version = {version:d}")


def _missing(path: Path) -> str:
    return (
        f"no SQLite database at {str(path)!r}; check the sqlite:// URL (a store opened "
        "with create=false uses an existing database only and creates nothing)"
    )


def _enable_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL, retrying while another connection holds it.

    Switching a new file to WAL needs an exclusive lock, and SQLite may answer
    "database is locked" at once, without its busy handler, when several
    connections open a brand-new file together; so retry until busy_timeout.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)  # on the store's worker thread, never the event loop


# Upgrades from each older version to the next. Version 1 (outlast 0.1) had
# no crash count and no incarnation: a run of theirs has crashed 0 times
# (crashes were not told apart) and the empty incarnation its checkpointers
# hold. Version 2 had no cancel request; version 3 no waiting runs (their
# wait, delivery) and no usage.
_UPGRADES: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE runs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN incarnation TEXT NOT NULL DEFAULT ''",
    ),
    2: ("ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",),
    3: (
        "ALTER TABLE runs ADD COLUMN wait TEXT",
        "ALTER TABLE runs ADD COLUMN delivery TEXT",
        "ALTER TABLE runs ADD COLUMN usage TEXT",
    ),
}


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create or upgrade the schema; idempotent and safe between processes."""
    if _user_version(conn, path) == SCHEMA_VERSION:
        return
    with write_transaction(conn):
        # Re-read under the write lock: another process may have migrated.
        version = _user_version(conn, path)
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            for statement in _SCHEMA:
                conn.execute(statement)
        else:
            for older in range(version, SCHEMA_VERSION):
                for statement in _UPGRADES[older]:
                    conn.execute(statement)
            log.info(
                "upgraded SQLite database %r from schema %d to %d",
                str(path),
                version,
                SCHEMA_VERSION,
            )
        # PRAGMA takes no parameters; SCHEMA_VERSION is a constant int.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")


def _user_version(conn: sqlite3.Connection, path: Path) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"SQLite database {str(path)!r} has schema version {version}, newer than "
            f"this outlast understands ({SCHEMA_VERSION}); upgrade outlast "
            "(`pip install -U outlast`) in every process that uses this file"
        )
    return version


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception.

    IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so
    two processes writing one file serialise instead of failing on a lock
    upgrade half-way through a transaction.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.execute("COMMIT")


@contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A consistent snapshot across several SELECTs (WAL readers never block)."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.rollback()


def translate(exc: sqlite3.Error, path: Path, busy_timeout: float) -> OutlastError:
    """The outlast error for a driver error, with what the user should do."""
    where = f"SQLite database {str(path)!r}"
    code = (exc.sqlite_errorcode or 0) & 0xFF  # the primary code of an extended one
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreUnavailable(
            f"{where} stayed locked by another connection for more than "
            f"busy_timeout={busy_timeout:g}s; retry, or raise the timeout "
            "(sqlite:///...?busy_timeout=30)"
        )
    if code == sqlite3.SQLITE_CANTOPEN:
        return StoreUnavailable(
            f"cannot open {where}; check that its directory exists and that this "
            "process may read and write it"
        )
    if code == sqlite3.SQLITE_NOTADB:
        return ConfigurationError(
            f"{str(path)!r} is not a SQLite database; point the sqlite:// URL at a new "
            "file or at an outlast database"
        )
    if code == sqlite3.SQLITE_READONLY:
        return StoreUnavailable(
            f"{where} is read-only; give this process write access to the file and its directory"
        )
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return StoreUnavailable(f"{where}: disk I/O failed ({exc}); check free space and the disk")
    if code == sqlite3.SQLITE_CORRUPT:
        return StoreError(f"{where} is damaged ({exc}); restore it from a backup")
    return StoreError(f"{where}: {exc}")


@dataclass(frozen=True, slots=True)
class RawRun:
    """A run's ``runs`` row and the rows of its progress, as stored: nothing decoded.

    Read inside a transaction by :func:`read_run`, decoded after it by
    :func:`decode_run`, so no lock (nor snapshot) is held while JSON is parsed.
    """

    row: sqlite3.Row
    phases: list[tuple[int, str | bytes]]
    messages: list[tuple[int, str | bytes]]


def run_row(conn: sqlite3.Connection, namespace: str, run_id: str) -> sqlite3.Row | None:
    """The run's ``runs`` row (the columns :func:`record_of` reads), or None."""
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {COLUMNS} FROM runs WHERE namespace = ? AND run_id = ?", (namespace, run_id)
    ).fetchone()
    return row


def read_run(conn: sqlite3.Connection, namespace: str, run_id: str) -> RawRun | None:
    """The run's row and progress rows, inside the caller's transaction."""
    row = run_row(conn, namespace, run_id)
    if row is None:
        return None
    phases, messages = read_progress(conn, namespace, run_id)
    return RawRun(row, phases, messages)


def read_progress(
    conn: sqlite3.Connection, namespace: str, run_id: str
) -> tuple[list[tuple[int, str | bytes]], list[tuple[int, str | bytes]]]:
    """The ``(position, body)`` rows of the run's phases and of its current
    segment's messages (those saved after the last completed phase), inside
    the caller's transaction; plain tuples, the bodies as stored."""
    key = (namespace, run_id)
    cursor = conn.cursor()
    cursor.row_factory = None  # tuples: no Row object per message
    try:
        phases: list[tuple[int, str | bytes]] = cursor.execute(
            "SELECT idx, body FROM phases WHERE namespace = ? AND run_id = ? ORDER BY idx", key
        ).fetchall()
        messages: list[tuple[int, str | bytes]] = cursor.execute(
            "SELECT seq, body FROM messages WHERE namespace = ? AND run_id = ? AND segment = ? "
            "ORDER BY seq",
            (*key, len(phases)),
        ).fetchall()
    finally:
        cursor.close()
    return phases, messages


def decode_run(raw: RawRun) -> tuple[RunRecord, CheckpointState]:
    """The record and progress of ``raw``; CorruptCheckpoint when any of it
    does not parse (UnknownFormat for a newer outlast's)."""
    record = record_of(raw.row)
    return record, decode_progress(record.run_id, raw.phases, raw.messages)


def decode_progress(
    run_id: str,
    phases: list[tuple[int, str | bytes]],
    messages: list[tuple[int, str | bytes]],
) -> CheckpointState:
    """The progress :func:`read_progress` read; CorruptCheckpoint when it does not parse."""
    decoded_phases = codec.decode_all(
        _in_order(phases, run_id, "phase"), run_id, codec.decode_phase
    )
    history = codec.decode_all(_in_order(messages, run_id, "message"), run_id, codec.decode_message)
    return CheckpointState(history, decoded_phases)


def _in_order(rows: Iterable[tuple[int, str | bytes]], run_id: str, what: str) -> list[str | bytes]:
    """The bodies of ``(position, body)`` rows, which must number 0, 1, 2, ..."""
    bodies: list[str | bytes] = []
    for position, (index, body) in enumerate(rows):
        if index != position:
            raise CorruptCheckpoint(run_id, f"{what} {position} is missing")
        bodies.append(body)
    return bodies


def record_of(row: sqlite3.Row) -> RunRecord:
    """A ``runs`` row as a RunRecord; CorruptCheckpoint when it does not parse."""
    run_id: str = row["run_id"]
    codec.check_version(row["format_version"], run_id)
    try:
        status = RunStatus(row["status"])
    except ValueError as exc:
        raise CorruptCheckpoint(run_id, f"unknown status {row['status']!r}") from exc
    result_text = row["result"]

    def json_of(column: str) -> JSON:
        text = row[column]
        return None if text is None else codec.loads(text, run_id)

    return RunRecord(
        run_id=run_id,
        namespace=row["namespace"],
        kind=row["kind"],
        input=codec.loads(row["input"], run_id),
        status=status,
        epoch=row["epoch"],
        attempts=row["attempts"],
        crashes=row["crashes"],
        owner=row["owner"],
        lease=row["lease_seconds"],
        lease_expires_at=row["lease_expires_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        result=None if result_text is None else codec.loads(result_text, run_id),
        error=row["error"],
        incarnation=row["incarnation"],
        cancel_requested=bool(row["cancel_requested"]),
        wait=json_of("wait"),
        delivery=json_of("delivery"),
        usage=json_of("usage"),
    )


def parseable_records(rows: Iterable[sqlite3.Row], limit: int) -> list[RunRecord]:
    """Up to ``limit`` records of ``rows``, skipping (and logging) corrupt ones."""
    records: list[RunRecord] = []
    for row in rows:
        if len(records) >= limit:
            break
        try:
            records.append(record_of(row))
        except CorruptCheckpoint as exc:
            log.warning(
                "skipping run %r in namespace %r: %s", exc.run_id, row["namespace"], exc.detail
            )
    return records


def sort_out(
    rows: Iterable[sqlite3.Row],
) -> tuple[list[RunRecord], list[tuple[str, CorruptCheckpoint]]]:
    """The records of ``rows`` that parse, and the (run id, error) of those that do not."""
    records: list[RunRecord] = []
    damaged: list[tuple[str, CorruptCheckpoint]] = []
    for row in rows:
        try:
            records.append(record_of(row))
        except CorruptCheckpoint as exc:
            damaged.append((row["run_id"], exc))
    return records, damaged
