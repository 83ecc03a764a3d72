"""The tables, and the versioned migration that creates them.

Migrations are numbered; ``schema_version`` records which ones ran. Applying
them is idempotent and safe when several processes start at once: they run in
one transaction holding an advisory lock keyed by the schema name, so a second
migrator waits, then finds nothing left to do. When the schema is already
current, a plain read says so and no lock or DDL is needed, so a user without
DDL rights can use a schema an administrator migrated (``outlast migrate URL``).

Why text and not jsonb for stored JSON: jsonb does not round-trip exactly (it
reorders keys, drops duplicate keys, rewrites numbers and rejects ``\\u0000``),
and outlast's contract is an exact round-trip. Every JSON column holds the text
:mod:`outlast.codec` produced, and every record carries a format version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

log = logging.getLogger("outlast_postgres")

_RUNS = """
CREATE TABLE {schema}.runs (
    namespace        text COLLATE "C" NOT NULL,
    run_id           text COLLATE "C" NOT NULL,
    kind             text NOT NULL,
    input            text NOT NULL,
    status           text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    epoch            bigint NOT NULL CHECK (epoch >= 1),
    owner            text NOT NULL,
    lease_seconds    double precision NOT NULL CHECK (lease_seconds > 0),
    lease_expires_at timestamptz,
    attempts         integer NOT NULL,
    result           text,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    format_version   integer NOT NULL,
    PRIMARY KEY (namespace, run_id)
)
"""

_MESSAGES = """
CREATE TABLE {schema}.messages (
    namespace text COLLATE "C" NOT NULL,
    run_id    text COLLATE "C" NOT NULL,
    segment   integer NOT NULL,
    seq       integer NOT NULL,
    body      text NOT NULL,
    PRIMARY KEY (namespace, run_id, segment, seq)
)
"""

_PHASES = """
CREATE TABLE {schema}.phases (
    namespace text COLLATE "C" NOT NULL,
    run_id    text COLLATE "C" NOT NULL,
    seq       integer NOT NULL,
    body      text NOT NULL,
    PRIMARY KEY (namespace, run_id, seq)
)
"""

# The boot-recovery work list of schema version 1: running runs, oldest lease first.
_INTERRUPTED_INDEX = """
CREATE INDEX runs_interrupted ON {schema}.runs (namespace, lease_expires_at NULLS FIRST, run_id)
WHERE status = 'running'
"""

# Retention (purge / `outlast gc`): terminal runs of a namespace by age.
_TERMINAL_INDEX = """
CREATE INDEX runs_terminal ON {schema}.runs (namespace, updated_at)
WHERE status <> 'running'
"""


# Version 2. Runs written at version 1 have crashed 0 times (crashes were not
# told apart from releases then) and hold the empty incarnation, which their
# checkpointers hold too. Adding a column with a constant default rewrites no
# rows. IF [NOT] EXISTS keeps each statement idempotent on its own, should a
# migrator ever meet a half-applied version (the advisory lock and the
# version check already serialise them).
_CRASHES = """
ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS crashes integer NOT NULL DEFAULT 0
"""

_INCARNATION = """
ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS incarnation text NOT NULL DEFAULT ''
"""

# The work list is now ordered by when a run became claimable (its lease's
# expiry, or its release: the last write), ties by run id. Live leases sort
# after every interrupted run, so an index scan stops after LIMIT rows.
_DROP_INTERRUPTED_INDEX_1 = """
DROP INDEX IF EXISTS {schema}.runs_interrupted
"""

_INTERRUPTED_ORDER_INDEX = """
CREATE INDEX IF NOT EXISTS runs_interrupted_order
ON {schema}.runs (namespace, (coalesce(lease_expires_at, updated_at)), run_id)
WHERE status = 'running'
"""


# Version 3: the fleet. A cancel request is a flag on the run (false for every
# run written before: nobody asked). A submitted run waits at epoch 0 until its
# first claim, so the epoch check allows 0. NOT VALID skips re-checking the
# rows already there (the old check, epoch >= 1, held for each of them) and
# so scanning the table under the ALTER's lock; every new or updated row is
# checked as before.
_CANCEL_REQUESTED = """
ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS cancel_requested boolean NOT NULL DEFAULT false
"""

_EPOCH_FROM_0 = """
ALTER TABLE {schema}.runs
    DROP CONSTRAINT IF EXISTS runs_epoch_check,
    ADD CONSTRAINT runs_epoch_check CHECK (epoch >= 0) NOT VALID
"""


# Version 4: waiting runs. A run may wait for outside input: the new status
# 'waiting', what it waits for (``wait``), the input delivered (``delivery``)
# and the token usage a completed run reported (``usage``), each the codec's
# JSON text, NULL for every run written before (none waited, none reported).
# Nullable columns without a default rewrite no rows. The status check is
# widened NOT VALID (every row already passed the narrower one), so nothing
# is scanned under the ALTER's lock.
_WAIT_COLUMNS = """
ALTER TABLE {schema}.runs
    ADD COLUMN IF NOT EXISTS wait text,
    ADD COLUMN IF NOT EXISTS delivery text,
    ADD COLUMN IF NOT EXISTS usage text
"""

_STATUS_WAITING = """
ALTER TABLE {schema}.runs
    DROP CONSTRAINT IF EXISTS runs_status_check,
    ADD CONSTRAINT runs_status_check
        CHECK (status IN ('running', 'waiting', 'completed', 'failed')) NOT VALID
"""

# A waiting run whose wait times out becomes claimable at its timeout
# (lease_expires_at), so the work list's index holds those too, in the same
# order. A wait without a timeout (NULL) is never claimable and is left out,
# so however many runs wait for a human, no scan of the work list reads them.
_DROP_INTERRUPTED_ORDER_INDEX = """
DROP INDEX IF EXISTS {schema}.runs_interrupted_order
"""

_CLAIMABLE_ORDER_INDEX = """
CREATE INDEX IF NOT EXISTS runs_claimable_order
ON {schema}.runs (namespace, (coalesce(lease_expires_at, updated_at)), run_id)
WHERE status = 'running' OR (status = 'waiting' AND lease_expires_at IS NOT NULL)
"""


# Version 5: a save is a HOT update of its run's row. PostgreSQL updates a row
# in place (a heap-only tuple: no index entry written, the old version pruned
# on the page) only when no indexed column changes and the page has room. A
# save used to set updated_at, which runs_claimable_order (for released runs)
# and runs_terminal index, so every save wrote index entries and left a dead
# tuple for vacuum. Now a save sets ``saved_at``, which no index covers, and
# leaves updated_at as it is (updated_at: the last write that is not a save);
# a run's record reads the later of the two as its updated_at, so every write
# still moves it. A nullable column without a default rewrites no rows, and
# NULL (never saved since the upgrade) leaves updated_at as the record's time.
# A fill factor below 100 keeps room on each page for the new row versions;
# it applies to pages filled from now on (nothing is rewritten), and a row on
# a page already full moves once, by a non-HOT update, to one with room.
_SAVED_AT = """
ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS saved_at timestamptz
"""

_RUNS_FILLFACTOR = """
ALTER TABLE {schema}.runs SET (fillfactor = 80)
"""


# Version 6: a save that only appends messages does not update its run's row
# (statements._APPEND): each message row carries the time it was saved, and a
# record's updated_at is the latest of the row's and its last message's (a
# primary-key lookup). NULL on the rows saved before: nothing is rewritten.
_MESSAGES_SAVED_AT = """
ALTER TABLE {schema}.messages ADD COLUMN IF NOT EXISTS saved_at timestamptz
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, append-only messages and phases, recovery and retention indexes",
        (_RUNS, _MESSAGES, _PHASES, _INTERRUPTED_INDEX, _TERMINAL_INDEX),
    ),
    Migration(
        2,
        "runs count crashes and carry an incarnation; work list ordered by interrupted time",
        (_CRASHES, _INCARNATION, _DROP_INTERRUPTED_INDEX_1, _INTERRUPTED_ORDER_INDEX),
    ),
    Migration(
        3,
        "runs carry a cancel request; a submitted run waits at epoch 0",
        (_CANCEL_REQUESTED, _EPOCH_FROM_0),
    ),
    Migration(
        4,
        "runs may wait for outside input (wait, delivery) and keep their usage",
        (_WAIT_COLUMNS, _STATUS_WAITING, _DROP_INTERRUPTED_ORDER_INDEX, _CLAIMABLE_ORDER_INDEX),
    ),
    Migration(
        5,
        "a save is a HOT update: it sets runs.saved_at (no index covers it); runs fillfactor 80",
        (_SAVED_AT, _RUNS_FILLFACTOR),
    ),
    Migration(
        6,
        "a save of messages locks its run's row instead of updating it; messages.saved_at",
        (_MESSAGES_SAVED_AT,),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema version this package reads and writes."""


async def migrate(
    conn: AsyncConnection[TupleRow], schema: str, *, target: int = SCHEMA_VERSION
) -> int:
    """Bring ``schema`` up to version ``target`` (default: :data:`SCHEMA_VERSION`)
    on ``conn`` (autocommit); return the version it is at.

    Idempotent, and safe to run from several processes at once. A ``target``
    below the current version changes nothing (there are no down migrations).
    """
    if not 1 <= target <= SCHEMA_VERSION:
        raise ValueError(f"target must be a schema version from 1 to {SCHEMA_VERSION}")
    current = await _current_version(conn, schema)
    if current is not None and current >= target:
        if current > SCHEMA_VERSION:
            log.warning(
                "schema %r is at version %d, newer than this outlast-postgres knows (%d); "
                "upgrade outlast-postgres",
                schema,
                current,
                SCHEMA_VERSION,
            )
        return current
    async with conn.transaction():
        # Serialises concurrent migrators of this schema; released at commit.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"outlast_postgres.migrate:{schema}"]
        )
        exists = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])
        if await exists.fetchone() is None:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_version ("
                " version integer PRIMARY KEY,"
                " description text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(schema))
        )
        applied = await _current_version(conn, schema) or 0
        for migration in MIGRATIONS:
            if not applied < migration.version <= target:
                continue
            for statement in migration.statements:
                await conn.execute(sql.SQL(statement).format(schema=sql.Identifier(schema)))
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.schema_version (version, description) VALUES (%s, %s)"
                ).format(sql.Identifier(schema)),
                [migration.version, migration.description],
            )
            log.info("schema %r: applied migration %d", schema, migration.version)
    return max(applied, target)


async def _current_version(conn: AsyncConnection[TupleRow], schema: str) -> int | None:
    """The applied version, or None when ``schema_version`` does not exist yet."""
    table = sql.Identifier(schema, "schema_version").as_string(conn)
    found = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
    row = await found.fetchone()
    if row is None or not row[0]:
        return None
    result = await conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_version").format(
            sql.Identifier(schema)
        )
    )
    version = await result.fetchone()
    return int(str(version[0])) if version is not None else 0
