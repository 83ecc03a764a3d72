"""PostgreSQL test fixtures: the server's URL and schemas that are dropped afterwards.

``OUTLAST_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
names the server. When it cannot be reached the tests skip saying so, or fail
under ``OUTLAST_TEST_STRICT=1`` (CI). Every schema a test session creates is
named ``outlast_test_<hex>`` and dropped at the end of the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from password_server import password_server, server_binaries
from postgres_support import with_options
from psycopg import sql

from outlast.adapter import redact
from outlast_conformance.services import service_url, unavailable

URL_ENV = "OUTLAST_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL; skips (or fails when strict) if it cannot be reached."""
    url = service_url(URL_ENV, DEFAULT_URL)
    try:
        with psycopg.connect(url, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        unavailable(redact(f"PostgreSQL at {URL_ENV}={url} cannot be reached: {exc}"))
    return url


@pytest.fixture(scope="session")
def password_server_url() -> Iterator[str]:
    """A PostgreSQL of our own that checks passwords (see password_server.py)."""
    if server_binaries() is None:
        unavailable("no PostgreSQL server binaries (initdb, pg_ctl): cannot test wrong passwords")
    with password_server() as url:
        yield url


@pytest.fixture(scope="session")
def new_schema(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Call to get a fresh schema name; every one is dropped when the session ends."""
    names: list[str] = []

    def fresh() -> str:
        names.append(f"outlast_test_{uuid.uuid4().hex}")
        return names[-1]

    yield fresh
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def session_schema(new_schema: Callable[[], str]) -> str:
    """The schema the conformance suite shares (it uses unique namespaces and run ids)."""
    return new_schema()


@pytest.fixture
def schema(new_schema: Callable[[], str]) -> str:
    """A schema of this test's own (not created yet: the store migrates on first use)."""
    return new_schema()


@pytest.fixture
def store_url(postgres_url: str, schema: str) -> str:
    """The test server's URL pointed at this test's own schema."""
    return with_options(postgres_url, schema=schema)
