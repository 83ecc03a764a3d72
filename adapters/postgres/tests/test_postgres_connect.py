"""Connection failures: a clear StoreUnavailable within connect_timeout, password redacted."""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_asyncio
from password_server import PASSWORD
from postgres_support import unused_port, with_options

from outlast.adapter import ConfigurationError, RunStart, StoreError, StoreUnavailable
from outlast_postgres import PostgresStore

SECRET = "pa55-w0rd-never-shown"  # noqa: S105 - a fake password the tests look for
HANG_GUARD = 30.0
"""Seconds after which a hung connect fails the test instead of blocking the run."""


def url_with(postgres_url: str, *, user: str | None = None, database: str | None = None) -> str:
    """The test server's URL with the password SECRET, and another user or database."""
    parts = urlsplit(postgres_url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user or parts.username or 'postgres'}:{SECRET}@{host}"
    return urlunsplit(
        parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path)
    )


async def failure_of(store: PostgresStore) -> StoreUnavailable:
    try:
        async with asyncio.timeout(HANG_GUARD):
            with pytest.raises(StoreUnavailable) as caught:
                await store.begin(RunStart(run_id="r", kind="k"))
    finally:
        await store.close()
    return caught.value


def assert_secret_hidden(
    error: BaseException, store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert SECRET not in str(error)
    assert SECRET not in "".join(traceback.format_exception(error))  # the causes too
    assert SECRET not in repr(store)
    for record in caplog.records:
        assert SECRET not in record.getMessage()


@pytest_asyncio.fixture
async def silent_server() -> AsyncIterator[int]:
    """A loopback port that accepts connections and never answers."""
    accepted: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for writer in accepted:
        writer.close()
    await server.wait_closed()


@pytest.mark.asyncio
async def test_opening_never_connects() -> None:
    store = PostgresStore(f"postgresql://u:{SECRET}@127.0.0.1:{unused_port()}/db")
    await store.close()  # nothing was ever opened, nothing failed


@pytest.mark.asyncio
async def test_an_unreachable_host_is_store_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = PostgresStore(
        f"postgresql://postgres:{SECRET}@127.0.0.1:{unused_port()}/test?connect_timeout=2"
    )
    error = await failure_of(store)
    assert "cannot use PostgreSQL" in str(error)
    assert "postgres:***@127.0.0.1" in str(error)
    assert_secret_hidden(error, store, caplog)


@pytest.mark.asyncio
async def test_a_missing_database_is_store_unavailable(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    missing = f"outlast_missing_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(url_with(postgres_url, database=missing))
    error = await failure_of(store)
    assert f'database "{missing}" does not exist' in str(error)
    assert_secret_hidden(error, store, caplog)


@pytest.mark.asyncio
async def test_wrong_credentials_are_store_unavailable(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = f"outlast_nobody_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(url_with(postgres_url, user=user))
    error = await failure_of(store)
    assert user in str(error)
    assert_secret_hidden(error, store, caplog)


@pytest.mark.asyncio
async def test_a_server_that_never_answers_fails_within_connect_timeout(
    silent_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = PostgresStore(
        f"postgresql://postgres:{SECRET}@127.0.0.1:{silent_server}/test",
        connect_timeout=2,
        sslmode="disable",
    )
    error = await failure_of(store)  # the hang guard fails the test if the timeout is ignored
    assert "timeout" in str(error).lower()
    assert_secret_hidden(error, store, caplog)


@pytest.mark.asyncio
async def test_a_closed_store_says_so(store_url: str) -> None:
    store = PostgresStore(store_url)
    await store.begin(RunStart(run_id="r", kind="k"))
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.load("r")


@pytest.mark.asyncio
async def test_the_password_can_come_from_a_keyword(postgres_url: str) -> None:
    store = PostgresStore(with_options(postgres_url, schema="x"), password=SECRET)
    assert SECRET not in repr(store)
    assert store.config.scrub(f"oops {SECRET}") == "oops ***"
    await store.close()


def test_a_key_value_dsn_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError, match="postgresql://") as caught:
        PostgresStore(f"host=127.0.0.1 user=postgres password={SECRET}")
    assert SECRET not in str(caught.value)


@pytest.mark.asyncio
async def test_libpq_parameters_in_the_url_reach_the_server(store_url: str) -> None:
    store = PostgresStore(store_url + "&options=-c%20statement_timeout%3D4321&application_name=w7")
    async with store.database.connection("checking settings") as conn:
        cursor = await conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('application_name')"
        )
        assert await cursor.fetchone() == ("4321ms", "w7")
    await store.close()


@pytest.mark.asyncio
async def test_a_wrong_password_is_store_unavailable_with_the_password_hidden(
    password_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(with_options(url_with(password_server_url), connect_timeout=10))
    error = await failure_of(store)
    assert "password authentication failed" in str(error)
    assert_secret_hidden(error, store, caplog)


@pytest.mark.asyncio
async def test_the_right_password_works(password_server_url: str) -> None:
    parts = urlsplit(password_server_url)
    url = urlunsplit(parts._replace(netloc=f"postgres:{PASSWORD}@{parts.hostname}:{parts.port}"))
    store = PostgresStore(url)
    try:
        checkpointer = await store.begin(RunStart(run_id="r", kind="k"))
        assert checkpointer.epoch == 1
    finally:
        await store.close()
