"""outlast-jsondir's own tests: URL handling, registration, and claims raced
by separate OS processes (flock across processes)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

import outlast
from outlast import ConfigurationError, RunStart
from outlast_jsondir import JsonDirStore
from outlast_jsondir.plugin import directory_of

CLAIM_SCRIPT = """
import asyncio, sys
import outlast

async def main():
    store = outlast.open(sys.argv[1])
    claim = await store.claim(sys.argv[2], owner=sys.argv[3], lease=3600)
    print("won" if claim is not None else "lost")

asyncio.run(main())
"""


def test_backend_is_listed_with_its_scheme() -> None:
    """`outlast backends` (outlast.backends()) shows jsondir and its package."""
    found = {info.name: info for info in outlast.backends()}
    assert found["jsondir"].schemes == ("jsondir",)
    assert found["jsondir"].package == "outlast-jsondir"


def test_url_forms(tmp_path: Path) -> None:
    """Relative and absolute directory URLs, like sqlite:///."""
    assert directory_of(f"jsondir:///{tmp_path}") == tmp_path
    assert directory_of("jsondir:///runs") == Path.cwd() / "runs"
    store = outlast.open(f"jsondir:///{tmp_path}")
    assert isinstance(store, JsonDirStore) and store.root == tmp_path


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("jsondir://host/dir", {}, "names a directory, not a host"),
        ("jsondir:///", {}, "names no directory"),
        ("jsondir:///runs?colour=blue", {}, "unknown option(s) colour"),
        ("jsondir:///runs", {"fsync": False}, "unknown option(s) fsync"),
    ],
)
def test_bad_urls_say_what_to_write(url: str, options: dict[str, object], message: str) -> None:
    """A wrong URL or option raises ConfigurationError saying what is wrong."""
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        outlast.open(url, **options)


@pytest.mark.asyncio
async def test_claimers_in_separate_processes_exactly_one_wins(tmp_path: Path) -> None:
    """Four OS processes claim one released run at once: exactly one wins,
    because the epoch check holds an flock shared by every process."""
    url = f"jsondir:///{tmp_path}"
    store = outlast.open(url)
    cp = await store.begin(RunStart("contested", "k"))
    await cp.release()
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLAIM_SCRIPT,
            url,
            "contested",
            f"proc-{i}",
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(4)
    ]
    outputs = await asyncio.wait_for(
        asyncio.gather(*(p.communicate() for p in processes)), timeout=60
    )
    verdicts = sorted(out.decode().strip() for out, _ in outputs)
    assert verdicts == ["lost", "lost", "lost", "won"]
    stored = await store.load("contested")
    assert stored is not None and stored.record.epoch == 2
