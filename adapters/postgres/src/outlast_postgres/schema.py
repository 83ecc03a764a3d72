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

# The boot-recovery work list: running runs of a namespace, oldest lease first.
_INTERRUPTED_INDEX = """
CREATE INDEX runs_interrupted ON {schema}.runs (namespace, lease_expires_at NULLS FIRST, run_id)
WHERE status = 'running'
"""

# Retention (purge / `outlast gc`): terminal runs of a namespace by age.
_TERMINAL_INDEX = """
CREATE INDEX runs_terminal ON {schema}.runs (namespace, updated_at)
WHERE status <> 'running'
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
)

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema version this package reads and writes."""


async def migrate(conn: AsyncConnection[TupleRow], schema: str) -> int:
    """Bring ``schema`` up to :data:`SCHEMA_VERSION` on ``conn`` (autocommit); return it.

    Idempotent, and safe to run from several processes at once.
    """
    current = await _current_version(conn, schema)
    if current is not None and current >= SCHEMA_VERSION:
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
            if migration.version <= applied:
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
    return SCHEMA_VERSION if applied < SCHEMA_VERSION else applied


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
