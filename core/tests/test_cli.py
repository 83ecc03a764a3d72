"""The outlast command line, end to end on a SQLite file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
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


def seed(url: str) -> None:
    """Three runs: one completed, one failed, one interrupted mid-plan."""

    async def go() -> None:
        store = outlast.open(url)
        done = await store.begin(RunStart("done", "k", None, owner="w", lease=30))
        await done.complete("the answer")
        failed = await store.begin(RunStart("failed", "k", None, owner="w", lease=30))
        await failed.fail("ModelError: out of replies")
        running = await store.begin(RunStart("half", "app.plan", {"q": 1}, owner="w", lease=30))
        state = CheckpointState(
            (Message.user("go"), Message.assistant("x")), (PhaseOutput("a", 1),)
        )
        await running.save(state)
        await running.release()
        await store.close()

    asyncio.run(go())


def test_backends_lists_memory_and_sqlite() -> None:
    result = CliRunner().invoke(main, ["backends"])
    assert result.exit_code == 0, result.output
    assert "memory" in result.output
    assert "sqlite://" in result.output


def test_runs_list_and_show(url: str) -> None:
    seed(url)
    runner = CliRunner()
    listed = runner.invoke(main, ["runs", "list", "--url", url])
    assert listed.exit_code == 0, listed.output
    assert [line.split()[0] for line in listed.output.splitlines()[1:]] == [
        "done",
        "failed",
        "half",
    ]
    only_failed = runner.invoke(main, ["runs", "list", "--url", url, "--status", "failed"])
    assert [line.split()[0] for line in only_failed.output.splitlines()[1:]] == ["failed"]
    shown = runner.invoke(main, ["runs", "show", "half", "--url", url])
    assert shown.exit_code == 0, shown.output
    assert "status:            running" in shown.output
    assert "epoch:             1" in shown.output
    assert "attempts:          1" in shown.output
    assert "completed phases:  a" in shown.output
    assert "transcript:        2 messages" in shown.output


def test_show_of_a_missing_run_is_an_error(url: str) -> None:
    result = CliRunner().invoke(main, ["runs", "show", "nope", "--url", url])
    assert result.exit_code == 1
    assert "no run 'nope'" in result.output


def test_delete_and_gc(url: str) -> None:
    seed(url)
    runner = CliRunner()
    assert runner.invoke(main, ["runs", "delete", "done", "--url", url]).exit_code == 0
    gc = runner.invoke(main, ["gc", "--url", url, "--older-than", "0s"])
    assert gc.exit_code == 0, gc.output
    assert "removed 1 terminal run(s)" in gc.output
    listed = runner.invoke(main, ["runs", "list", "--url", url])
    assert [line.split()[0] for line in listed.output.splitlines()[1:]] == ["half"]


def test_unknown_backend_is_a_clear_cli_error() -> None:
    result = CliRunner().invoke(main, ["runs", "list", "--url", "mongodb://:pw@localhost/0"])
    assert result.exit_code == 1
    assert "no installed outlast backend serves the URL scheme 'mongodb'" in result.output
    assert ":pw@" not in result.output


def test_migrate_on_a_store_without_a_schema_step() -> None:
    result = CliRunner().invoke(main, ["migrate", "memory://"])
    assert result.exit_code == 0
    assert "no schema to migrate" in result.output


def test_recover_claims_and_finishes_interrupted_runs_of_an_app(url: str, tmp_path: Path) -> None:
    seed(url)
    (tmp_path / "myapp.py").write_text(
        textwrap.dedent(
            """
            from outlast import Executor, Message, Phase, Plan, ScriptedModel

            def app(store):
                executor = Executor(store)
                model = ScriptedModel({"b": [Message.assistant("b done")]})
                executor.register("app.plan", Plan(model, [Phase("a", "A"), Phase("b", "B")]))
                return executor
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(  # noqa: S603 - our own CLI with fixed arguments
        [sys.executable, "-m", "outlast.cli", "recover", "myapp:app", "--url", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "half: recovered" in result.stdout
    assert "recovered 1, failed 0" in result.stdout
    shown = CliRunner().invoke(main, ["runs", "show", "half", "--url", url])
    assert "status:            completed" in shown.output
    assert "epoch:             2" in shown.output


def test_recover_rejects_a_bad_app_spec(url: str) -> None:
    result = CliRunner().invoke(main, ["recover", "no_colon_here", "--url", url])
    assert result.exit_code == 2
    assert "is not module:object" in result.output
