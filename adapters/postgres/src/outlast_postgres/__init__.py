"""outlast-postgres: outlast's store on PostgreSQL (psycopg 3, async, pooled).

``outlast.open("postgresql://user:password@host/db")`` finds it through the
``outlast`` entry point; :class:`PostgresStore` is the factory itself and
:func:`migrate` creates or upgrades its schema.
"""

from typing import Any

from outlast_postgres.checkpointer import PostgresCheckpointer
from outlast_postgres.config import OPTIONS, SCHEMES, PostgresConfig
from outlast_postgres.schema import SCHEMA_VERSION
from outlast_postgres.store import PostgresStore


async def migrate(url: str, **options: Any) -> None:
    """Create or upgrade the schema of the store at ``url`` (idempotent), then close it."""
    store = PostgresStore(url, **options)
    try:
        await store.migrate()
    finally:
        await store.close()


__all__ = [
    "OPTIONS",
    "SCHEMA_VERSION",
    "SCHEMES",
    "PostgresCheckpointer",
    "PostgresConfig",
    "PostgresStore",
    "migrate",
]
