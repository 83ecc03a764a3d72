"""outlast-jsondir's own tests: URL handling, registration, and what only a
store of files has (old files, damaged bytes kept, leftovers of a crash).

Races across OS processes are the conformance suite's (Capabilities()
declares multi_process, so it starts racer processes on the URL)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import outlast
from outlast.adapter import CheckpointState, ConfigurationError, Message, RunStart, RunStatus
from outlast_conformance.support import clock_moves
from outlast_jsondir import JsonDirStore
from outlast_jsondir.plugin import directory_of
from outlast_jsondir.runfiles import DAMAGED_FILE, RUN_FILE


def backend(url: str) -> JsonDirStore:
    store = outlast.open(url).backend
    assert isinstance(store, JsonDirStore)
    return store


def history(count: int) -> tuple[Message, ...]:
    return tuple(Message.user(f"m{i}") for i in range(count))


def test_backend_is_listed_with_its_scheme() -> None:
    """`outlast backends` (outlast.backends()) shows jsondir and its package."""
    found = {info.name: info for info in outlast.backends()}
    assert found["jsondir"].schemes == ("jsondir",)
    assert found["jsondir"].package == "outlast-jsondir"


def test_url_forms(tmp_path: Path) -> None:
    """Relative and absolute directory URLs, like sqlite:///."""
    assert directory_of(f"jsondir:///{tmp_path}") == tmp_path
    assert directory_of("jsondir:///runs") == Path.cwd() / "runs"
    assert backend(f"jsondir:///{tmp_path}").root == tmp_path


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
async def test_files_of_outlast_jsondir_0_1_still_load_and_resume(tmp_path: Path) -> None:
    """A run.json written before crashes, incarnation, cancel_requested and
    waiting runs existed (its lease length under the same "lease" key) loads
    with crashes 0, incarnation "", and no wait, delivery or usage, and is
    claimed, parked, sent its input and completed like any other."""
    store = backend(f"jsondir:///{tmp_path}")
    cp = await store.begin(RunStart("old", "k", lease=30))
    await cp.save(CheckpointState(history(2)))
    await cp.release()
    path = store.files.folder("default", "old") / RUN_FILE
    document = json.loads(path.read_bytes())
    for key in ("crashes", "incarnation", "cancel_requested", "wait", "delivery", "usage"):
        del document[key]
    path.write_text(json.dumps(document))

    stored = await store.load("old")
    assert stored is not None and stored.state.history == history(2)
    record = stored.record
    assert (record.crashes, record.incarnation, record.lease) == (0, "", 30)
    assert (record.cancel_requested, record.wait, record.delivery, record.usage) == (
        False,
        None,
        None,
        None,
    )
    claim = await store.claim("old", owner="new", lease=30)
    assert claim is not None and claim.resume.history == history(2)
    await claim.checkpointer.wait({"ask": "go on?"}, None)
    await store.send("old", {"yes": True})
    claim = await store.claim("old", owner="newer", lease=30)
    assert claim is not None and claim.record.delivery == {"yes": True}
    await claim.checkpointer.complete("done", {"tokens": 3})
    stored = await store.load("old")
    assert stored is not None and stored.record.usage == {"tokens": 3}


@pytest.mark.asyncio
async def test_quarantine_keeps_the_damaged_run_json_beside_the_stub(tmp_path: Path) -> None:
    """An interrupted run whose run.json is not JSON at all: interrupted()
    puts a failed stub in its place, keeps the damaged bytes in
    run.json.damaged and leaves the transcript file alone."""
    store = backend(f"jsondir:///{tmp_path}")
    cp = await store.begin(RunStart("broken", "k"))
    await cp.save(CheckpointState(history(2)))
    await cp.release()
    folder = store.files.folder("default", "broken")
    transcript = (folder / "segment-0.jsonl").read_bytes()
    (folder / RUN_FILE).write_bytes(b"{not json")

    assert await store.interrupted() == []
    stored = await store.load("broken")
    assert stored is not None and stored.record.status is RunStatus.FAILED
    assert (stored.record.error or "").startswith("CorruptCheckpoint: ")
    assert (folder / DAMAGED_FILE).read_bytes() == b"{not json"
    assert (folder / "segment-0.jsonl").read_bytes() == transcript
    await clock_moves()  # so the stub is older than purge's "now"
    assert await store.purge(0) == 1 and not folder.exists()


@pytest.mark.asyncio
async def test_bytes_a_crashed_save_left_behind_are_never_read(tmp_path: Path) -> None:
    """A save that appended to the transcript but crashed before committing
    run.json leaves bytes past the committed offset: load ignores them and
    the next save writes over them."""
    store = backend(f"jsondir:///{tmp_path}")
    cp = await store.begin(RunStart("crashy", "k"))
    await cp.save(CheckpointState(history(2)))
    segment = store.files.segment("default", "crashy", 0)
    segment.write_bytes(segment.read_bytes() + b'{"half a message')

    stored = await store.load("crashy")
    assert stored is not None and stored.state.history == history(2)
    await cp.save(CheckpointState(history(3)))
    stored = await store.load("crashy")
    assert stored is not None and stored.state.history == history(3)


@pytest.mark.asyncio
async def test_a_run_id_too_long_for_a_file_name_says_so(tmp_path: Path) -> None:
    """Run ids may be 255 UTF-8 bytes; escaped as a file name some no longer
    fit in one. begin raises ValueError naming the limit, not an OSError."""
    store = backend(f"jsondir:///{tmp_path}")
    with pytest.raises(ValueError, match="too long for outlast-jsondir"):
        await store.begin(RunStart("/" * 100, "k"))
