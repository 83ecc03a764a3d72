"""``outlast runs``: an empty listing points at the namespaces that have runs,
commands on stored runs never create a store, and ``show`` of a completed
run says what completion kept."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

import outlast
from outlast import Message
from outlast.adapter import CheckpointState, PhaseOutput, RunStart
from outlast.cli import main


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/runs.db"


def begin(url: str, run_id: str, namespace: str = "default", *, result: str | None = None) -> None:
    """A run that saved a phase and two messages; completed with ``result`` if given."""

    async def go() -> None:
        store = outlast.open(url)
        start = RunStart(run_id, "k", None, namespace=namespace, owner="w", lease=30)
        cp = await store.begin(start)
        state = CheckpointState(
            (Message.user("go"), Message.assistant("x")), (PhaseOutput("a", 1),)
        )
        await cp.save(state)
        if result is not None:
            await cp.complete(result)
        await store.close()

    asyncio.run(go())


# -- item: an empty listing points elsewhere -------------------------------------------


def test_an_empty_namespace_names_the_namespaces_that_have_runs(url: str) -> None:
    begin(url, "r1", "reports")
    begin(url, "r2", "reports")
    begin(url, "d1", "outlast-demo")
    listed = CliRunner().invoke(main, ["runs", "list", "--url", url])
    assert listed.exit_code == 0, listed.output
    assert f"no runs in namespace 'default' of {url}" in listed.output
    assert "namespaces with runs: 'outlast-demo' (1 run), 'reports' (2 runs)" in listed.output
    assert "-n NAMESPACE" in listed.output


def test_an_empty_listing_filtered_by_status_says_other_statuses_exist(url: str) -> None:
    begin(url, "r1")
    listed = CliRunner().invoke(main, ["runs", "list", "--url", url, "--status", "failed"])
    assert listed.exit_code == 0, listed.output
    assert "no failed runs in namespace 'default'" in listed.output
    assert "drop --status failed" in listed.output


def test_a_store_that_cannot_list_namespaces_says_how_to_look() -> None:
    listed = CliRunner().invoke(main, ["runs", "list", "--url", f"memory://{uuid.uuid4().hex}"])
    assert listed.exit_code == 0, listed.output
    assert "runs of another namespace are listed with -n NAMESPACE" in listed.output


# -- item: commands on stored runs never create a store ------------------------------------


@pytest.mark.parametrize(
    "words",
    [
        ("runs", "list"),
        ("runs", "show", "r1"),
        ("runs", "wait", "r1", "--timeout", "5"),
        ("runs", "cancel", "r1"),
        ("runs", "delete", "r1"),
        ("gc",),
    ],
    ids=" ".join,
)
def test_a_mistyped_sqlite_path_is_reported_and_not_created(
    tmp_path: Path, words: tuple[str, ...]
) -> None:
    missing = tmp_path / "typo" / "deeper" / "runs.db"
    result = CliRunner().invoke(main, [*words, "--url", f"sqlite:///{missing}"])
    assert result.exit_code == 1
    assert f"no SQLite database at {str(missing)!r}; check the sqlite:// URL" in result.output
    assert not (tmp_path / "typo").exists()


def test_an_existing_store_is_read_as_before(url: str) -> None:
    begin(url, "r1")
    shown = CliRunner().invoke(main, ["runs", "show", "r1", "--url", url])
    assert shown.exit_code == 0, shown.output
    assert "status:            running" in shown.output


# -- item: show of a completed run ------------------------------------------------------------


def test_show_of_a_completed_run_says_its_progress_was_cleared(url: str) -> None:
    begin(url, "done", result="the answer")
    shown = CliRunner().invoke(main, ["runs", "show", "done", "--url", url])
    assert shown.exit_code == 0, shown.output
    assert "status:            completed" in shown.output
    assert "attempts:          1" in shown.output
    assert "crashes:           0" in shown.output
    assert "progress:          cleared on completion" in shown.output
    assert "result:            'the answer'" in shown.output
    assert "0 messages" not in shown.output
    assert "completed phases:  -" not in shown.output


# -- a bad run id or namespace is a usage error ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "show", ""], "Invalid value for 'RUN_ID': run id must be a non-empty string"),
        (["runs", "list", "-n", ""], "namespace must be a non-empty string"),
        (["gc", "-n", ""], "namespace must be a non-empty string"),
    ],
)
def test_a_bad_run_id_or_namespace_is_a_usage_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, [*args, "--url", "memory://"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


# -- waiting runs: list, show, send (issue 11) ----------------------------------------


def park(url: str, run_id: str) -> None:
    """A run that saved a reply with usage and now waits for an approval."""

    async def go() -> None:
        store = outlast.open(url)
        cp = await store.begin(RunStart(run_id, "k", None, owner="w", lease=30))
        reply = Message.assistant("asking", usage={"input_tokens": 12, "output_tokens": 3})
        await cp.save(CheckpointState((Message.user("go"), reply)))
        await cp.wait({"call": "c1", "tool": "approve", "request": {"refund": 40}}, None)
        await store.close()

    asyncio.run(go())


def test_a_waiting_run_is_listed_shown_and_sent_its_input_once(url: str) -> None:
    park(url, "w1")
    begin(url, "r1")
    listed = CliRunner().invoke(main, ["runs", "list", "--url", url, "--status", "waiting"])
    assert listed.exit_code == 0, listed.output
    assert "w1" in listed.output and "r1" not in listed.output
    shown = CliRunner().invoke(main, ["runs", "show", "w1", "--url", url])
    assert shown.exit_code == 0, shown.output
    assert "waiting for:" in shown.output and "{'refund': 40} (tool 'approve')" in shown.output
    assert "wait times out:    never" in shown.output
    assert "usage:             input_tokens 12, output_tokens 3" in shown.output
    sent = CliRunner().invoke(main, ["runs", "send", "w1", '{"approved": true}', "--url", url])
    assert sent.exit_code == 0, sent.output
    assert "w1: input delivered" in sent.output
    again = CliRunner().invoke(main, ["runs", "send", "w1", '{"approved": true}', "--url", url])
    assert again.exit_code == 1
    assert "is not waiting for input (it is running)" in again.output


def test_send_refuses_what_is_not_json_and_unknown_runs(url: str) -> None:
    park(url, "w1")
    bad = CliRunner().invoke(main, ["runs", "send", "w1", "{approved: yes}", "--url", url])
    assert bad.exit_code == 2
    assert "not JSON" in bad.output and "quote it for the shell" in bad.output
    unknown = CliRunner().invoke(main, ["runs", "send", "nope", "1", "--url", url])
    assert unknown.exit_code == 1 and "no run 'nope'" in unknown.output
