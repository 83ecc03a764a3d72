"""The embedded SQLite store: what is specific to a file shared by processes.

The generic store contract is the conformance suite's; these tests cover what
only a SQLite file can get wrong: the rows a save writes, transactions between
separate connections and processes, the schema version, URLs and driver errors.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import outlast
from outlast import codec
from outlast.errors import (
    CheckpointStateError,
    ConfigurationError,
    CorruptCheckpoint,
    LeaseLost,
    RunExists,
    StoreError,
    StoreUnavailable,
)
from outlast.messages import Message, PhaseOutput, ToolCall
from outlast.ports import CheckpointState, RunStart, RunStatus
from outlast.stores import sqlite_file, sqlite_schema
from outlast.stores.sqlite import SqliteStore, open_sqlite
from outlast.stores.sqlite_schema import (
    PAGE_SIZE,
    SCHEMA_VERSION,
    WAL_BOUND_BYTES,
    WAL_BOUND_SHARE,
    WAL_CHECKPOINT_BYTES,
    WAL_SIZE_LIMIT,
    RawRun,
    decode_run,
    wal_over_bound,
)

TIMEOUT = 30.0
Eventually = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


def url_of(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@pytest_asyncio.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[SqliteStore]:
    store = open_sqlite(url_of(db_path), {})
    yield store
    await store.close()


@pytest_asyncio.fixture
async def open_store(db_path: Path) -> AsyncIterator[Callable[..., SqliteStore]]:
    """Opens more stores on the same file (separate connections), closed afterwards."""
    opened: list[SqliteStore] = []

    def opener(**options: Any) -> SqliteStore:
        store = open_sqlite(url_of(db_path), options)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read or change the file through a connection of the test's own."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return [tuple(row) for row in conn.execute(sql, params)]


def start(run_id: str = "run-1", **fields: Any) -> RunStart:
    return RunStart(run_id=run_id, kind="demo", **fields)


def chat(n: int) -> tuple[Message, ...]:
    return tuple(Message.user(f"message {i}") for i in range(n))


# --- round trips -------------------------------------------------------------


@pytest.mark.asyncio
async def test_saved_progress_round_trips_exactly(sqlite_store: SqliteStore) -> None:
    big = "ünïcødé 日本語 🚀 \u0000 " + "x" * 3_000_000
    history = (
        Message.system("be brief"),
        Message.user(["a part", {"type": "image", "url": None, "alt": {"k": [1, 2.5, None]}}]),
        Message.assistant(None, (ToolCall("call-1", "search", {"q": "été", "n": None}),)),
        Message.tool("call-1", "search", big),
        Message("assistant", "done", meta={"nested": {"deep": [True, False, None, {}]}}),
    )
    phases = (PhaseOutput("plan", {"steps": ["a", None, {"b": "ß"}]}),)
    cp = await sqlite_store.begin(start(input={"topic": "ñ", "none": None, "list": [[]]}))
    await cp.save(CheckpointState(history, phases))

    stored = await sqlite_store.load("run-1")

    assert stored is not None
    assert stored.state == CheckpointState(history, phases)
    assert stored.record.input == {"topic": "ñ", "none": None, "list": [[]]}
    assert (stored.record.status, stored.record.epoch, stored.record.attempts) == (
        RunStatus.RUNNING,
        1,
        1,
    )


@pytest.mark.asyncio
async def test_load_returns_the_current_phase_transcript(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(3)))
    second_phase = (Message.user("phase two"),)
    await cp.save(CheckpointState(second_phase, (PhaseOutput("one", 1),)))

    stored = await sqlite_store.load("run-1")

    assert stored is not None
    assert stored.state.history == second_phase
    assert stored.state.phases == (PhaseOutput("one", 1),)
    segments = query(db_path, "SELECT segment, COUNT(*) FROM messages GROUP BY segment")
    assert segments == [(0, 3), (1, 1)]  # the first phase's rows were never rewritten


@pytest.mark.asyncio
async def test_begin_twice_raises_run_exists(sqlite_store: SqliteStore) -> None:
    await sqlite_store.begin(start())
    with pytest.raises(RunExists):
        await sqlite_store.begin(start())
    other = await sqlite_store.begin(start(namespace="elsewhere"))
    assert other.namespace == "elsewhere"


# --- the delta write -----------------------------------------------------------


@pytest.mark.asyncio
async def test_save_inserts_only_the_new_rows(sqlite_store: SqliteStore, db_path: Path) -> None:
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(3)))
    before = query(db_path, "SELECT rowid, seq, body FROM messages ORDER BY seq")
    statements: list[str] = []
    await sqlite_store.file.call(lambda conn: conn.set_trace_callback(statements.append))

    await cp.save(CheckpointState(chat(5)))
    await cp.save(CheckpointState((), (PhaseOutput("p", None),)))

    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 3  # messages 3 and 4, then the one phase
    assert not [s for s in statements if s.lstrip().upper().startswith("DELETE")]
    after = query(db_path, "SELECT rowid, seq, body FROM messages ORDER BY seq")
    assert after[:3] == before  # old rows untouched: same rowids, same bodies
    assert [seq for _, seq, _ in after] == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
async def test_saving_the_same_state_again_writes_no_rows(sqlite_store: SqliteStore) -> None:
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(2)))
    statements: list[str] = []
    await sqlite_store.file.call(lambda conn: conn.set_trace_callback(statements.append))

    await cp.save(CheckpointState(chat(2)))

    assert not [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    # ...but the epoch was still checked, in a write transaction of its own.
    assert any(s.startswith("UPDATE runs SET updated_at") for s in statements)


@pytest.mark.asyncio
async def test_a_save_that_rewrites_history_is_refused(sqlite_store: SqliteStore) -> None:
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(3)))
    with pytest.raises(CheckpointStateError):
        await cp.save(CheckpointState(chat(2)))
    stored = await sqlite_store.load("run-1")
    assert stored is not None
    assert stored.state.history == chat(3)


# --- fencing and claims ------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_fenced_checkpointer_changes_nothing(
    sqlite_store: SqliteStore, open_store: Callable[..., SqliteStore], db_path: Path
) -> None:
    stale = await sqlite_store.begin(start())
    await stale.save(CheckpointState(chat(2)))
    await stale.release()
    claim = await open_store().claim("run-1", owner="worker-b", lease=30)
    assert claim is not None
    assert claim.checkpointer.epoch == 2
    before = await sqlite_store.load("run-1")
    rows_before = query(db_path, "SELECT * FROM messages")

    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: stale.save(CheckpointState(chat(4))),
        lambda: stale.save(CheckpointState(chat(2))),  # even an empty delta is fenced
        lambda: stale.complete("stale result"),
        lambda: stale.fail("stale error"),
        lambda: stale.release(),
        lambda: stale.renew(),
    ]
    for write in writes:
        with pytest.raises(LeaseLost, match="epoch 2 owns it"):
            await write()

    assert await sqlite_store.load("run-1") == before
    assert query(db_path, "SELECT * FROM messages") == rows_before
    await claim.checkpointer.save(CheckpointState(chat(3)))  # the new owner still writes
    await claim.checkpointer.complete("fresh result")
    stored = await sqlite_store.load("run-1")
    assert stored is not None
    assert (stored.record.status, stored.record.result) == (RunStatus.COMPLETED, "fresh result")


@pytest.mark.asyncio
async def test_writes_after_the_end_raise_lease_lost(sqlite_store: SqliteStore) -> None:
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(2)))
    await cp.complete({"answer": 42})
    with pytest.raises(LeaseLost, match="completed"):
        await cp.save(CheckpointState(chat(3)))
    stored = await sqlite_store.load("run-1")
    assert stored is not None
    assert stored.state == CheckpointState()
    assert stored.record.result == {"answer": 42}
    assert stored.record.lease_expires_at is None


@pytest.mark.asyncio
async def test_fail_keeps_the_transcript(sqlite_store: SqliteStore) -> None:
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(2), (PhaseOutput("p", "out"),)))
    await cp.fail("model exploded")
    stored = await sqlite_store.load("run-1")
    assert stored is not None
    assert (stored.record.status, stored.record.error) == (RunStatus.FAILED, "model exploded")
    assert stored.state == CheckpointState(chat(2), (PhaseOutput("p", "out"),))
    assert await sqlite_store.claim("run-1", owner="b", lease=30) is None


@pytest.mark.asyncio
async def test_of_many_concurrent_claimers_on_separate_connections_one_wins(
    sqlite_store: SqliteStore, open_store: Callable[..., SqliteStore]
) -> None:
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(2)))
    await cp.release()
    claimers = [open_store() for _ in range(8)]

    claims = await asyncio.gather(
        *(store.claim("run-1", owner=f"w{i}", lease=30) for i, store in enumerate(claimers))
    )

    won = [claim for claim in claims if claim is not None]
    assert len(won) == 1
    assert won[0].resume.history == chat(2)
    stored = await sqlite_store.load("run-1")
    assert stored is not None
    assert (stored.record.epoch, stored.record.attempts) == (2, 2)
    assert stored.record.owner == won[0].record.owner


@pytest.mark.asyncio
async def test_a_claimed_run_continues_from_its_saved_progress(sqlite_store: SqliteStore) -> None:
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(2), (PhaseOutput("one", 1),)))
    await cp.release()
    assert [r.run_id for r in await sqlite_store.interrupted()] == ["run-1"]

    claim = await sqlite_store.claim("run-1", owner="b", lease=30)

    assert claim is not None
    assert claim.resume.history == chat(2)
    assert claim.resume.completed_phases == (PhaseOutput("one", 1),)
    assert claim.record.kind == "demo"
    await claim.checkpointer.save(CheckpointState(chat(3), (PhaseOutput("one", 1),)))
    stored = await sqlite_store.load("run-1")
    assert stored is not None
    assert stored.state.history == chat(3)
    assert await sqlite_store.interrupted() == []


@pytest.mark.asyncio
async def test_a_live_lease_cannot_be_claimed_but_an_expired_one_can(
    sqlite_store: SqliteStore, eventually: Eventually
) -> None:
    await sqlite_store.begin(start("live", lease=3600))
    short = await sqlite_store.begin(start("short", lease=0.001))
    assert await sqlite_store.claim("live", owner="b", lease=30) is None

    async def short_expired() -> bool:
        return [r.run_id for r in await sqlite_store.interrupted()] == ["short"]

    await eventually(short_expired)
    claim = await sqlite_store.claim("short", owner="b", lease=30)
    assert claim is not None
    with pytest.raises(LeaseLost):
        await short.renew()


@pytest.mark.asyncio
async def test_renew_extends_and_release_drops_the_lease(sqlite_store: SqliteStore) -> None:
    cp = await sqlite_store.begin(start(lease=60))
    first = await sqlite_store.load("run-1")
    await cp.renew()
    renewed = await sqlite_store.load("run-1")
    await cp.release()
    released = await sqlite_store.load("run-1")
    assert first is not None and renewed is not None and released is not None
    assert first.record.lease_expires_at is not None
    assert renewed.record.lease_expires_at is not None
    assert renewed.record.lease_expires_at >= first.record.lease_expires_at
    assert released.record.lease_expires_at is None
    assert released.record.status is RunStatus.RUNNING


# --- durability, processes -------------------------------------------------------


@pytest.mark.asyncio
async def test_progress_survives_a_fresh_store(db_path: Path) -> None:
    first = open_sqlite(url_of(db_path), {})
    cp = await first.begin(start())
    await cp.save(CheckpointState(chat(4), (PhaseOutput("p", [1]),)))
    await cp.release()
    await first.close()

    second = open_sqlite(url_of(db_path), {})
    try:
        claim = await second.claim("run-1", owner="after-restart", lease=30)
        assert claim is not None
        assert claim.resume.completed_phases == (PhaseOutput("p", [1]),)
        assert claim.resume.history == chat(4)
    finally:
        await second.close()


@pytest.mark.asyncio
async def test_concurrent_first_use_of_a_new_file(open_store: Callable[..., SqliteStore]) -> None:
    stores = [open_store() for _ in range(8)]
    await asyncio.gather(*(s.begin(start(f"run-{i}")) for i, s in enumerate(stores)))
    page = await stores[0].list()
    assert [r.run_id for r in page.records] == sorted(f"run-{i}" for i in range(8))


_CHILD_SAVES_THEN_IS_KILLED = """
import asyncio, os, signal, sys
from outlast.messages import Message
from outlast.ports import CheckpointState, RunStart
from outlast.stores.sqlite import open_sqlite

async def main():
    store = open_sqlite(sys.argv[1], {})
    cp = await store.begin(RunStart("child-run", "demo", {"from": "child"}, owner="child"))
    await cp.save(CheckpointState((Message.user("saved by the child ✓"),)))
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no cleanup: kill -9 right after save

asyncio.run(main())
"""

_CHILD_CLAIMS = """
import asyncio, sys
from outlast.stores.sqlite import open_sqlite

async def main():
    store = open_sqlite(sys.argv[1], {})
    claim = await store.claim("run-1", owner=sys.argv[2], lease=3600)
    await store.close()
    print("won" if claim else "lost")

asyncio.run(main())
"""


async def run_child(code: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


@pytest.mark.asyncio
async def test_a_save_survives_its_process_being_killed(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    code, output = await run_child(_CHILD_SAVES_THEN_IS_KILLED, url_of(db_path))

    assert code == -signal.SIGKILL, output
    stored = await sqlite_store.load("child-run")
    assert stored is not None
    assert stored.record.owner == "child"
    assert stored.state.history == (Message.user("saved by the child ✓"),)


@pytest.mark.asyncio
async def test_of_claimers_in_separate_processes_one_wins(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    cp = await sqlite_store.begin(start())
    await cp.release()

    results = await asyncio.gather(
        *(run_child(_CHILD_CLAIMS, url_of(db_path), f"proc-{i}") for i in range(4))
    )

    assert all(code == 0 for code, _ in results), results
    assert sorted(out.strip() for _, out in results) == ["lost", "lost", "lost", "won"]
    stored = await sqlite_store.load("run-1")
    assert stored is not None
    assert stored.record.epoch == 2
    with pytest.raises(LeaseLost):
        await cp.save(CheckpointState(chat(1)))


# --- corrupt and foreign records -----------------------------------------------------

DECODE_SEAM = "outlast.stores.sqlite.decode_run"
"""Where the store decodes what a claim read (the record and the transcript)."""


@pytest.mark.asyncio
async def test_a_corrupt_transcript_is_never_claimed(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(2)))
    await cp.release()
    query(db_path, "UPDATE messages SET body = '{not json' WHERE seq = 0")

    with pytest.raises(CorruptCheckpoint, match="run-1"):
        await sqlite_store.load("run-1")
    with pytest.raises(CorruptCheckpoint, match="run-1"):
        await sqlite_store.claim("run-1", owner="b", lease=30)
    assert query(db_path, "SELECT epoch, attempts, owner FROM runs") == [(1, 1, "")]


@pytest.mark.asyncio
async def test_claim_next_quarantines_a_corrupt_transcript_with_its_claim_undone(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    """The claim is committed before the transcript is decoded; when it does
    not parse the claim is undone, so the quarantine finds the run as it was."""
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(2)))
    await cp.release()
    query(db_path, "UPDATE messages SET body = '{not json' WHERE seq = 1")

    assert await sqlite_store.claim_next(["demo"], owner="b", lease=30) is None

    rows = query(db_path, "SELECT status, epoch, attempts, crashes, owner, error FROM runs")
    assert [row[:5] for row in rows] == [("failed", 2, 1, 0, "")]
    assert rows[0][5].startswith("CorruptCheckpoint: ")


@pytest.mark.asyncio
async def test_a_failed_claim_is_not_undone_over_a_later_write(
    sqlite_store: SqliteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the claim's commit and its undo another connection wrote the
    run (here a cancel request): the undo is fenced and leaves that row."""
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(2)))
    await cp.release()
    query(db_path, "UPDATE messages SET body = '{not json' WHERE seq = 0")

    def decode_after_another_write(raw: RawRun) -> Any:
        query(db_path, "UPDATE runs SET cancel_requested = 1, updated_at = updated_at + 1")
        return decode_run(raw)

    monkeypatch.setattr(DECODE_SEAM, decode_after_another_write)
    with pytest.raises(CorruptCheckpoint, match="run-1"):
        await sqlite_store.claim("run-1", owner="b", lease=30)

    assert query(db_path, "SELECT epoch, attempts, owner, cancel_requested FROM runs") == [
        (2, 2, "b", 1)
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["claim", "claim_next"])
async def test_a_claim_decodes_the_transcript_without_holding_the_write_lock(
    sqlite_store: SqliteStore,
    open_store: Callable[..., SqliteStore],
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """While a claim decodes the transcript it took over, another connection
    (another process, in production) saves and begins runs: the claim's write
    transaction committed before the decoding began."""
    cp = await sqlite_store.begin(start("long"))
    await cp.save(CheckpointState(chat(50)))
    await cp.release()
    other = open_store()
    writer = await other.begin(start("other", lease=3600))
    decoding, written = threading.Event(), threading.Event()

    def held_decode(raw: RawRun) -> Any:
        decoding.set()
        assert written.wait(TIMEOUT), "the other connection never wrote"
        return decode_run(raw)

    monkeypatch.setattr(DECODE_SEAM, held_decode)
    if how == "claim":
        claiming = asyncio.ensure_future(sqlite_store.claim("long", owner="b", lease=30))
    else:
        claiming = asyncio.ensure_future(sqlite_store.claim_next(["demo"], owner="b", lease=30))
    try:
        assert await asyncio.to_thread(decoding.wait, TIMEOUT)
        # The decode is in progress (held above): were the write lock still
        # held, these would wait busy_timeout and raise StoreUnavailable.
        await writer.save(CheckpointState(chat(2)))
        await other.begin(start("third"))
        assert query(db_path, "SELECT epoch, owner FROM runs WHERE run_id = 'long'") == [(2, "b")]
    finally:
        written.set()
    claim = await claiming
    assert claim is not None and claim.record.run_id == "long"
    assert claim.resume.history == chat(50)


@pytest.mark.asyncio
async def test_a_missing_message_row_is_corrupt(sqlite_store: SqliteStore, db_path: Path) -> None:
    cp = await sqlite_store.begin(start())
    await cp.save(CheckpointState(chat(3)))
    query(db_path, "DELETE FROM messages WHERE seq = 1")
    with pytest.raises(CorruptCheckpoint, match="message 1 is missing"):
        await sqlite_store.load("run-1")


@pytest.mark.parametrize(
    ("damage", "reason", "quarantined"),
    [
        ("UPDATE runs SET input = '{not json' WHERE run_id = 'b'", "invalid JSON", True),
        ("UPDATE runs SET format_version = 99 WHERE run_id = 'b'", "upgrade outlast", False),
        ("UPDATE runs SET status = 'paused' WHERE run_id = 'b'", "unknown status", False),
    ],
    ids=["damaged-quarantined", "newer-format-left-alone", "unknown-status"],
)
@pytest.mark.asyncio
async def test_listing_and_recovery_skip_a_record_that_does_not_parse(
    sqlite_store: SqliteStore,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
    reason: str,
    quarantined: bool,
) -> None:
    for run_id in "abc":
        await (await sqlite_store.begin(start(run_id))).release()
    query(db_path, damage)

    with caplog.at_level(logging.WARNING, logger="outlast.stores.sqlite"):
        interrupted = await sqlite_store.interrupted()
        page = await sqlite_store.list(limit=2)

    assert sorted(r.run_id for r in interrupted) == ["a", "c"]
    assert [r.run_id for r in page.records] == ["a", "c"]
    assert page.next_cursor is None
    assert "'b'" in caplog.text and reason in caplog.text
    with pytest.raises(CorruptCheckpoint, match=reason):
        await sqlite_store.load("b")
    status, error = query(db_path, "SELECT status, error FROM runs WHERE run_id = 'b'")[0]
    if quarantined:  # failed in place, the damaged input kept for forensics
        assert status == "failed" and error.startswith("CorruptCheckpoint: ")
        assert query(db_path, "SELECT input FROM runs WHERE run_id = 'b'") == [("{not json",)]
    else:
        assert status in ("running", "paused") and error is None


# --- listing, deleting, retention ---------------------------------------------------


@pytest.mark.asyncio
async def test_list_pages_by_run_id_within_a_namespace(sqlite_store: SqliteStore) -> None:
    for run_id in ["e", "a", "d", "b", "c"]:
        await sqlite_store.begin(start(run_id))
    await sqlite_store.begin(start("z", namespace="other"))
    done = await sqlite_store.begin(start("f"))
    await done.complete(None)

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await sqlite_store.list(limit=2, cursor=cursor)
        seen += [r.run_id for r in page.records]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert seen == ["a", "b", "c", "d", "e", "f"]
    completed = await sqlite_store.list(status=RunStatus.COMPLETED)
    assert [r.run_id for r in completed.records] == ["f"]
    assert [r.run_id for r in (await sqlite_store.list("other")).records] == ["z"]


@pytest.mark.asyncio
async def test_delete_and_purge_remove_every_row_of_a_run(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    failed = await sqlite_store.begin(start("failed"))
    await failed.save(CheckpointState(chat(2), (PhaseOutput("p", 1),)))
    await failed.fail("boom")
    done = await sqlite_store.begin(start("done"))
    await done.complete("ok")
    running = await sqlite_store.begin(start("running"))
    await running.save(CheckpointState(chat(1)))
    other = await sqlite_store.begin(start("other", namespace="other"))
    await other.fail("kept: another namespace")

    assert await sqlite_store.purge(older_than=3600) == 0
    assert await sqlite_store.purge(older_than=0) == 2

    assert query(db_path, "SELECT namespace, run_id FROM runs ORDER BY run_id") == [
        ("other", "other"),
        ("default", "running"),
    ]
    assert query(db_path, "SELECT DISTINCT run_id FROM messages") == [("running",)]
    assert query(db_path, "SELECT COUNT(*) FROM phases") == [(0,)]
    assert await sqlite_store.delete("running") is True
    assert await sqlite_store.delete("running") is False
    assert query(db_path, "SELECT COUNT(*) FROM messages") == [(0,)]


# --- URLs and options ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_relative_url_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    opened = outlast.open("sqlite:///sub/dir/runs.db")
    other = outlast.open("sqlite:///./.outlast/runs.db")
    store, default = opened.backend, other.backend
    try:
        assert isinstance(store, SqliteStore) and isinstance(default, SqliteStore)
        assert store.path == tmp_path / "sub" / "dir" / "runs.db"
        assert default.path == tmp_path / ".outlast" / "runs.db"
        assert not store.path.parent.exists()  # opening a store touches nothing
        await store.begin(start())
        assert store.path.is_file()
        assert repr(store) == f"SqliteStore(path={str(store.path)!r})"
    finally:
        await opened.close()
        await other.close()


def test_absolute_url_and_options(tmp_path: Path) -> None:
    store = open_sqlite(f"sqlite:///{tmp_path}/my%20runs.db?busy_timeout=1.5", {})
    assert store.path == tmp_path / "my runs.db"
    assert store.busy_timeout == 1.5
    assert (
        open_sqlite(url_of(tmp_path / "x.db", "busy_timeout=1"), {"busy_timeout": 9}).busy_timeout
        == 9
    )
    assert open_sqlite(url_of(tmp_path / "x.db"), {}).busy_timeout == 5


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("sqlite://", {}, "names no database file"),
        ("sqlite:///", {}, "names no database file"),
        ("sqlite:///some/dir/", {}, "names no database file"),
        ("sqlite://host/runs.db", {}, "not a host"),
        ("sqlite:///:memory:", {}, "memory://"),
        ("sqlite:///runs.db?busy_timout=3", {}, "unknown option"),
        ("sqlite:///runs.db", {"retention": 3}, "unknown option"),
        ("sqlite:///runs.db?busy_timeout=soon", {}, "busy_timeout"),
        ("sqlite:///runs.db", {"busy_timeout": -1}, "busy_timeout"),
    ],
)
def test_bad_urls_and_options_are_configuration_errors(
    url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_sqlite(url, options)


# --- the file itself ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_newer_schema_asks_for_an_upgrade(sqlite_store: SqliteStore, db_path: Path) -> None:
    query(db_path, "PRAGMA user_version = 7")
    with pytest.raises(ConfigurationError, match="upgrade outlast"):
        await sqlite_store.begin(start())


@pytest.fixture
def not_a_database(db_path: Path) -> Path:
    db_path.write_bytes(b"certainly not sqlite " * 100)
    return db_path


@pytest.mark.asyncio
async def test_a_file_that_is_not_a_database_is_named(not_a_database: Path) -> None:
    db_path = not_a_database
    store = open_sqlite(url_of(db_path), {})
    try:
        with pytest.raises(ConfigurationError, match="is not a SQLite database") as info:
            await store.begin(start())
        assert str(db_path) in str(info.value)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_path_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("in the way")
    store = open_sqlite(url_of(tmp_path / "a-file" / "runs.db"), {})
    try:
        with pytest.raises(StoreUnavailable, match="writable location"):
            await store.begin(start())
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_path_that_is_a_directory_cannot_be_opened(tmp_path: Path) -> None:
    store = open_sqlite(url_of(tmp_path), {})
    try:
        with pytest.raises(StoreUnavailable, match="cannot open") as info:
            await store.begin(start())
        assert str(tmp_path) in str(info.value)
    finally:
        await store.close()


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.rollback()


@pytest.mark.asyncio
async def test_a_lock_held_past_busy_timeout_is_unavailable_then_recovers(
    open_store: Callable[..., SqliteStore], db_path: Path
) -> None:
    store = open_store(busy_timeout=0)
    await store.begin(start("first"))

    with write_lock_held(db_path):
        with pytest.raises(StoreUnavailable, match="busy_timeout"):
            await store.begin(start("second"))
        # Readers are never blocked by a writer under WAL.
        assert [r.run_id for r in (await store.list()).records] == ["first"]

    await store.begin(start("second"))
    assert [r.run_id for r in (await store.list()).records] == ["first", "second"]


@pytest.mark.asyncio
async def test_migrate_creates_the_schema_once(sqlite_store: SqliteStore, db_path: Path) -> None:
    await sqlite_store.migrate()
    await sqlite_store.migrate()
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    tables = query(db_path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    assert tables == [("messages",), ("phases",), ("runs",)]


@pytest.mark.asyncio
async def test_the_file_uses_wal(sqlite_store: SqliteStore, db_path: Path) -> None:
    await sqlite_store.begin(start())
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]


def wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def size_of(path: Path) -> int:
    """The file's size; 0 when there is none."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def tool_result(i: int) -> Message:
    """A ~1 KiB message."""
    return Message.tool(f"call-{i}", "search", f"result {i}: " + "x" * 1000)


FRAMES_PER_SAVE = 8
"""At most the pages a save of one ~1 KiB message writes to the log: its row,
its index entry and the run's row, and the parents of a leaf that split."""


async def pause(store: SqliteStore) -> None:
    """What an agent does between saves, for the store: its task yields to the
    loop without another store call (the store then queues a checkpoint its
    last write asked for); returns once the worker has run all it queued."""
    await asyncio.sleep(0)  # one pass of the loop: no timing involved
    await store.file.call(lambda conn: None)


@pytest.mark.asyncio
@pytest.mark.parametrize("page_size", [PAGE_SIZE, 4096], ids=["new-file", "4-KiB-file-of-before"])
async def test_the_wal_stays_bounded_after_many_saves(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, page_size: int
) -> None:
    """500 saves of one ~1 KiB message, with a pause after each, write well
    over 1,000 pages to the log (SQLite's default auto-checkpoint, which never
    shrinks the file): the -wal file never holds more than its bound (64 KiB,
    or 1/32 of a larger file) plus the save that crossed it, and the log
    starts over (its file truncated) after each checkpoint."""
    if page_size != PAGE_SIZE:  # the file is made as outlast made it before
        monkeypatch.setattr(sqlite_schema, "PAGE_SIZE", page_size)
        before = SqliteStore(db_path)
        await before.migrate()
        await before.close()
        monkeypatch.undo()
    store = SqliteStore(db_path)
    frame = 24 + page_size  # a WAL frame: its header and one page
    try:
        cp = await store.begin(start())
        settings = await store.file.call(
            lambda conn: [
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("page_size", "wal_autocheckpoint", "journal_size_limit")
            ]
        )
        assert settings == [page_size, WAL_CHECKPOINT_BYTES // page_size, WAL_SIZE_LIMIT]
        history: list[Message] = []
        sizes: list[int] = []
        for i in range(500):
            history.append(tool_result(i))
            await cp.save(CheckpointState(tuple(history)))
            await pause(store)
            wal = size_of(wal_of(db_path))
            bound = max(WAL_BOUND_BYTES, size_of(db_path) // WAL_BOUND_SHARE)
            assert wal <= bound + FRAMES_PER_SAVE * frame, f"save {i}: past the bound"
            sizes.append(wal)
    finally:
        await store.close()
    assert max(sizes) < WAL_CHECKPOINT_BYTES, "SQLite's backstop never steps in"
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    restarts = sum(later < earlier for earlier, later in itertools.pairwise(sizes))
    assert restarts >= 10, "the log did not start over after checkpoints"


@pytest.mark.asyncio
async def test_saves_back_to_back_leave_the_wal_to_sqlite_until_a_pause(
    sqlite_store: SqliteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saves issued back to back never wait for the store's checkpoint: the
    log is left to SQLite's own auto-checkpoint (within 1 MiB and a save).
    At the first pause the store checkpoints it on its worker, before its
    next job: everything is copied and the log started over, not left to
    the next save."""
    copied: list[int] = []

    def recorded(conn: sqlite3.Connection) -> None:
        sqlite_schema.checkpoint(conn)
        copied.append(size_of(wal_of(db_path)))

    monkeypatch.setattr(sqlite_file, "checkpoint", recorded)
    cp = await sqlite_store.begin(start())
    history: list[Message] = []
    sizes: list[int] = []
    for i in range(200):  # ~4.9 MB through the log
        history.append(tool_result(i))
        await cp.save(CheckpointState(tuple(history)))
        sizes.append(size_of(wal_of(db_path)))
    assert copied == []
    assert max(sizes) <= WAL_CHECKPOINT_BYTES + FRAMES_PER_SAVE * (24 + PAGE_SIZE)
    while not wal_over_bound(db_path):
        history.append(tool_result(len(history)))
        await cp.save(CheckpointState(tuple(history)))
    await pause(sqlite_store)
    # The log's header and one frame: the write of page 1 that restarted it.
    assert copied == [32 + 24 + PAGE_SIZE]
    stored = await sqlite_store.load("run-1")
    assert stored is not None and stored.state.history == tuple(history)


@pytest.mark.asyncio
async def test_a_failed_checkpoint_is_logged_and_saves_go_on(
    sqlite_store: SqliteStore,
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nobody awaits the checkpoint: its error is logged, and the next pause
    after a save past the bound tries again."""
    attempts: list[int] = []

    def failing(conn: sqlite3.Connection) -> None:
        attempts.append(1)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_file, "checkpoint", failing)
    cp = await sqlite_store.begin(start())
    history = [tool_result(i) for i in range(100)]
    with caplog.at_level(logging.WARNING, logger="outlast.stores.sqlite"):
        for end in range(1, len(history) + 1):
            await cp.save(CheckpointState(tuple(history[:end])))
            await pause(sqlite_store)
    assert len(attempts) > 1
    assert "checkpoint of the -wal file" in caplog.text and "disk I/O error" in caplog.text
    stored = await sqlite_store.load("run-1")
    assert stored is not None and stored.state.history == tuple(history)


@pytest.mark.asyncio
async def test_a_transcript_of_1_kib_messages_is_stored_in_at_most_1_2_times_its_bytes(
    db_path: Path,
) -> None:
    """1,000 messages of ~1 KiB, one save each and a pause after it (an
    agent's model call): what the run adds to the file and its -wal is at
    most 1.2x their JSON after each of the last 100 saves (8 KiB pages hold
    seven such rows, ~1.13x with the table's index; the log adds at most
    64 KiB and a save, ~0.08x), and the file alone once closed. 4 KiB pages
    held three rows, ~1.3x. Earlier the log's 64 KiB is a larger share:
    ~1.27x at 500 messages."""
    store = SqliteStore(db_path)
    history = tuple(tool_result(i) for i in range(1000))
    ratios: list[float] = []
    try:
        await store.migrate()
        empty = size_of(db_path) + size_of(wal_of(db_path))
        cp = await store.begin(start())
        for end in range(1, len(history) + 1):
            await cp.save(CheckpointState(history[:end]))
            await pause(store)  # an agent's model call; the sizes hold still after it
            if end > 900:
                added = size_of(db_path) + size_of(wal_of(db_path)) - empty
                ratios.append(added / sum(map(encoded_size, history[:end])))
    finally:
        await store.close()
    assert max(ratios) <= 1.2
    assert size_of(wal_of(db_path)) == 0
    assert size_of(db_path) <= 1.2 * sum(map(encoded_size, history))


def encoded_size(message: Message) -> int:
    """The message's own bytes: its JSON as the store encodes it, UTF-8."""
    return len(codec.encode_message(message).encode())


# --- closing ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_closed_store_says_so(db_path: Path) -> None:
    store = open_sqlite(url_of(db_path), {})
    cp = await store.begin(start())
    await store.close()
    await store.close()  # idempotent

    with pytest.raises(StoreError, match="closed"):
        await store.load("run-1")
    with pytest.raises(StoreError, match="closed"):
        await cp.save(CheckpointState(chat(1)))
    reopened = open_sqlite(url_of(db_path), {})
    try:
        assert await reopened.load("run-1") is not None
    finally:
        await reopened.close()


# --- schema upgrade ---------------------------------------------------------------

V1_RUNS = """
CREATE TABLE runs (
    namespace TEXT NOT NULL, run_id TEXT NOT NULL, kind TEXT NOT NULL, input TEXT NOT NULL,
    status TEXT NOT NULL, epoch INTEGER NOT NULL, attempts INTEGER NOT NULL,
    owner TEXT NOT NULL, lease_seconds REAL NOT NULL, lease_expires_at REAL,
    result TEXT, error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    format_version INTEGER NOT NULL, PRIMARY KEY (namespace, run_id))
"""


@pytest.mark.asyncio
async def test_a_schema_1_file_is_upgraded_and_its_runs_recover(db_path: Path) -> None:
    """outlast 0.1's file (no crash count, no incarnation) is upgraded on first
    use: its runs read 0 crashes, and an interrupted one is claimed and saved."""
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute(V1_RUNS)
        conn.execute(
            "CREATE TABLE messages (namespace TEXT, run_id TEXT, segment INTEGER, seq INTEGER, "
            "body TEXT, PRIMARY KEY (namespace, run_id, segment, seq))"
        )
        conn.execute(
            "CREATE TABLE phases (namespace TEXT, run_id TEXT, idx INTEGER, body TEXT, "
            "PRIMARY KEY (namespace, run_id, idx))"
        )
        conn.execute(
            "INSERT INTO runs VALUES ('default', 'old', 'k', 'null', 'running', 3, 3, 'w', 30, "
            "NULL, NULL, NULL, 1, 2, 1)"
        )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    store = SqliteStore(db_path)
    try:
        stored = await store.load("old")
        assert stored is not None
        assert (stored.record.epoch, stored.record.crashes, stored.record.incarnation) == (3, 0, "")
        claim = await store.claim("old", owner="new", lease=30)
        assert claim is not None and (claim.record.attempts, claim.record.crashes) == (4, 0)
        await claim.checkpointer.save(CheckpointState(chat(1)))
        await claim.checkpointer.complete("done")
        assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    finally:
        await store.close()


# --- durability: the synchronous option -----------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query_string", "options", "pragma"),
    [
        ("", {}, 1),  # the default: NORMAL, a save survives kill -9
        ("synchronous=full", {}, 2),  # FULL: a save survives a power cut too
        ("synchronous=FULL", {}, 2),
        ("", {"synchronous": "full"}, 2),
        ("synchronous=full", {"synchronous": "normal"}, 1),  # the keyword wins
    ],
)
async def test_synchronous_option_sets_what_a_commit_survives(
    db_path: Path, query_string: str, options: dict[str, Any], pragma: int
) -> None:
    store = outlast.open(url_of(db_path, query_string), **options)
    try:
        checkpointer = await store.begin(start())
        await checkpointer.save(CheckpointState(chat(2)))
        await checkpointer.complete("done")
        backend = store.backend
        assert isinstance(backend, SqliteStore)
        setting = await backend.file.call(
            lambda conn: int(conn.execute("PRAGMA synchronous").fetchone()[0])
        )
        assert setting == pragma
        assert query(db_path, "PRAGMA journal_mode") == [("wal",)]
    finally:
        await store.close()
    reopened = outlast.open(url_of(db_path))
    try:
        stored = await reopened.load("run-1")
        assert stored is not None and stored.record.result == "done"
    finally:
        await reopened.close()


@pytest.mark.parametrize("value", ["off", "extra", "", "1"])
def test_an_unknown_synchronous_mode_names_the_choices(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"synchronous must be normal .* or full"):
        open_sqlite(url_of(tmp_path / "runs.db", f"synchronous={value}"), {})
    with pytest.raises(ConfigurationError, match="synchronous must be"):
        SqliteStore(tmp_path / "runs.db", synchronous=value)


# --- create=false: only an existing database -----------------------------------------------


@pytest.mark.asyncio
async def test_create_false_makes_nothing_for_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "runs.db"
    store = outlast.open(url_of(missing, "create=false"))
    try:
        with pytest.raises(StoreUnavailable, match="no SQLite database at") as info:
            await store.list()
        assert str(missing) in str(info.value)
    finally:
        await store.close()
    assert not (tmp_path / "typo").exists()


@pytest.fixture
def empty_file(db_path: Path) -> Path:
    db_path.touch()
    return db_path


@pytest.mark.asyncio
async def test_create_false_makes_no_schema_in_an_empty_file(empty_file: Path) -> None:
    store = open_sqlite(url_of(empty_file), {"create": False})
    try:
        with pytest.raises(StoreUnavailable, match="holds no outlast schema"):
            await store.load("run-1")
    finally:
        await store.close()
    assert query(empty_file, "SELECT COUNT(*) FROM sqlite_master") == [(0,)]


@pytest.mark.asyncio
async def test_create_false_uses_an_existing_database(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    await sqlite_store.begin(start())
    existing = open_sqlite(url_of(db_path, "create=false"), {})
    try:
        assert [r.run_id for r in (await existing.list()).records] == ["run-1"]
        assert (await existing.cancel("run-1")).cancel_requested
    finally:
        await existing.close()


@pytest.mark.parametrize("value", ["maybe", ""])
def test_create_must_be_true_or_false(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigurationError, match="create must be true or false"):
        open_sqlite(url_of(tmp_path / "runs.db", f"create={value}"), {})


@pytest.mark.asyncio
async def test_namespaces_counts_the_runs_of_each(sqlite_store: SqliteStore) -> None:
    assert await sqlite_store.namespaces() == {}
    await sqlite_store.begin(start("a", namespace="reports"))
    await sqlite_store.begin(start("b", namespace="reports"))
    await sqlite_store.begin(start("c"))
    assert await sqlite_store.namespaces() == {"default": 1, "reports": 2}
