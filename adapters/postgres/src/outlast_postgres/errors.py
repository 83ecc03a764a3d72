"""Translate psycopg's exceptions into outlast's, at the store's boundary.

Most specific first. Every message names the (redacted) URL and says what to
do; the password is scrubbed from the driver's text as a second line of
defence (libpq does not echo it, but a future version might).
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from outlast.adapter import StoreError, StoreUnavailable
from outlast_postgres.config import PostgresConfig


def translate(exc: psycopg.Error, action: str, config: PostgresConfig) -> StoreError:
    """The outlast error for ``exc``, raised while doing ``action`` (``raise ... from exc``)."""
    where = config.redacted_url
    detail = config.scrub(" ".join(str(exc).split()))
    if isinstance(exc, PoolTimeout):
        return StoreUnavailable(
            f"{action}: no connection to {where} within {config.pool_timeout:g}s "
            f"({detail}); the server may be down or every pooled connection busy: "
            "check the server, or raise pool_max_size / pool_timeout"
        )
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.InvalidSchemaName):
        return StoreError(
            f"{action}: outlast's tables are missing from schema {config.schema!r} at "
            f"{where} ({detail}); run `outlast migrate URL` to create them"
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return StoreError(
            f"{action}: permission denied at {where} ({detail}); grant the user access "
            f"to schema {config.schema!r}, or have its owner run `outlast migrate URL`"
        )
    if isinstance(exc, pg_errors.InvalidAuthorizationSpecification | pg_errors.InvalidPassword):
        return StoreUnavailable(
            f"{action}: PostgreSQL at {where} refused the credentials ({detail}); "
            "check the user and password in the URL"
        )
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable(
            f"{action}: cannot use PostgreSQL at {where} ({detail}); check that the server "
            "is running and the host, port, user, password and database in the URL"
        )
    return StoreError(f"{action} failed at {where}: {detail}")
