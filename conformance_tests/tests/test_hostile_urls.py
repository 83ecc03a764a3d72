"""The hostile-URL table against redact and the built-in stores (memory, SQLite).

Each adapter runs the same table in its own tests (test_*_secrets.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from outlast.adapter import redact
from outlast_conformance.hostile_urls import (
    PASSWORDS,
    HostileUrl,
    assert_no_secret,
    exercise,
    hostile_urls,
    secret_pieces,
)

SCHEMES = ("postgresql", "redis", "s3", "sqlite", "memory", "jsondir", "mystore")

EVERY_BASE = [
    "postgresql://postgres@127.0.0.1:1/db?connect_timeout=2",
    "redis://127.0.0.1:1/0",
    "s3://bucket/prefix?endpoint_url=http://127.0.0.1:1",
    "sqlite:///runs.db",
    "memory://name",
    "jsondir:///runs",
    "mystore://host:1/x",
]

SQLITE = hostile_urls("sqlite:///runs.db", bad_value="busy_timeout=soon")
MEMORY = hostile_urls("memory://hostile")


@pytest.mark.parametrize("base", EVERY_BASE)
def test_redact_hides_the_secret_of_every_hostile_url(base: str) -> None:
    for hostile in hostile_urls(base, bad_value="x=1"):
        assert_no_secret(redact(hostile.url), hostile.secret)


def test_the_table_puts_every_password_everywhere() -> None:
    table = hostile_urls("redis://h:1/0", bad_value="db=x")
    for password in PASSWORDS.values():
        assert sum(password in hostile.url for hostile in table) >= 10
    assert len({hostile.name for hostile in table}) == len(table)
    assert all(hostile.secret in hostile.url for hostile in table)


def test_assert_no_secret_finds_a_piece_of_the_secret() -> None:
    pieces = set(secret_pieces("Zx81qW%23Lm55vT"))
    assert {"Zx81qW%23Lm55vT", "Zx81qW#Lm55vT", "Zx81qW", "Lm55vT"} <= pieces
    with pytest.raises(AssertionError, match="Lm55vT"):
        assert_no_secret(["fine", "host 'Lm55vT@h' not found"], "Zx81qW#Lm55vT")
    assert_no_secret("redis://u:***@h", "Zx81qW#Lm55vT")


@pytest.mark.asyncio
@pytest.mark.parametrize("hostile", SQLITE, ids=str)
async def test_sqlite_never_shows_the_secret(
    hostile: HostileUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_no_secret(await exercise(hostile.url), hostile.secret)


@pytest.mark.asyncio
@pytest.mark.parametrize("hostile", MEMORY, ids=str)
async def test_memory_never_shows_the_secret(hostile: HostileUrl) -> None:
    assert_no_secret(await exercise(hostile.url), hostile.secret)
