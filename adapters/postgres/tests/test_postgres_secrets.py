"""Passwords never shown: the shared hostile-URL table, and passwords holding
``#`` or ``?`` that libpq reads as they are written."""

from __future__ import annotations

import uuid
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from password_server import PASSWORD
from postgres_support import with_options
from psycopg import sql

import outlast
from outlast.adapter import ConfigurationError, RunStart
from outlast_conformance.hostile_urls import (
    PASSWORDS,
    HostileUrl,
    assert_no_secret,
    exercise,
    hostile_urls,
)
from outlast_postgres import PostgresStore

REFUSED = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=2"
"""Nothing listens on port 1: every connection is refused at once."""


@pytest.mark.asyncio
@pytest.mark.parametrize("hostile", hostile_urls(REFUSED, bad_value="pool_timeout=soon"), ids=str)
async def test_no_secret_is_shown_when_the_server_is_unreachable(hostile: HostileUrl) -> None:
    assert_no_secret(await exercise(hostile.url), hostile.secret)


@pytest.mark.asyncio
async def test_no_secret_is_shown_when_the_server_refuses_the_password(
    password_server_url: str,
) -> None:
    for hostile in hostile_urls(password_server_url + "?connect_timeout=10"):
        assert_no_secret(await exercise(hostile.url), hostile.secret, case=hostile.name)


@pytest.mark.asyncio
@pytest.mark.parametrize("password", [PASSWORDS["hash"], PASSWORDS["question"]])
async def test_a_hash_or_question_mark_in_a_password_works_unencoded(
    password_server_url: str, password: str
) -> None:
    # libpq reads them as part of the password; outlast's options after them still apply.
    role = f"hostile_{uuid.uuid4().hex[:8]}"
    port = urlsplit(password_server_url).port
    admin = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    url = f"postgresql://{role}:{password}@127.0.0.1:{port}/postgres?schema=s{role}"
    store = outlast.open(url)
    try:
        checkpointer = await store.begin(RunStart(run_id="r", kind="k"))
        assert checkpointer.epoch == 1
        assert_no_secret(repr(store), password)
        assert f"schema='s{role}'" in repr(store)
    finally:
        await store.close()
    encoded = f"postgresql://{role}:{quote(password, safe='')}@127.0.0.1:{port}/postgres"
    store = outlast.open(with_options(encoded, schema=f"s{role}"))
    try:
        assert await store.load("r") is not None  # the same password, percent-encoded
    finally:
        await store.close()


@pytest.mark.parametrize("password", [PASSWORDS["at"], PASSWORDS["slash"]])
def test_an_unencoded_at_sign_or_slash_in_a_password_is_refused(password: str) -> None:
    # libpq would end the password at the '@' (or never see it for a '/') and
    # take the rest for a host name, which its errors quote.
    with pytest.raises(ConfigurationError, match="percent-encoded") as caught:
        PostgresStore(f"postgresql://u:{password}@db.example/app")
    assert_no_secret(str(caught.value), password)


def test_an_sslpassword_is_scrubbed_from_driver_texts() -> None:
    keyword = {"password": "Ab12Cd#34"}
    store = PostgresStore(REFUSED + "&sslpassword=Zx81qW%23Lm55vT", **keyword)
    for secret in ("Zx81qW#Lm55vT", "Ab12Cd#34"):
        assert store.config.scrub(f"libpq said {secret}") == "libpq said ***"
