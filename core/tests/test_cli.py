"""The outlast command line, end to end on a SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
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
    assert "transcript:        2 messages since the last completed phase" in shown.output


def test_show_of_a_missing_run_is_an_error(url: str) -> None:
    seed(url)
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
    # As the demo says it: the phases it skipped, the messages it restored, the epoch.
    assert (
        "half: recovered (epoch 2): skipped 1 finished phase (a); restored 2 saved messages"
        in result.stdout
    )
    assert "recovered 1, failed 0" in result.stdout
    shown = CliRunner().invoke(main, ["runs", "show", "half", "--url", url])
    assert "status:            completed" in shown.output
    assert "epoch:             2" in shown.output


def test_recover_rejects_a_bad_app_spec(url: str) -> None:
    result = CliRunner().invoke(main, ["recover", "no_colon_here", "--url", url])
    assert result.exit_code == 2
    assert "is not module:object" in result.output


WORKER_APP = """
import asyncio

from outlast import Agent, Executor, Message, ScriptedModel, Tool, ToolCall


async def hold(arguments):
    await asyncio.Event().wait()  # held until the worker shuts down


def app(store):
    executor = Executor(store, lease=3600)
    executor.register("quick", Agent(ScriptedModel([Message.assistant("quick done")])))
    held = ScriptedModel([Message.assistant(None, (ToolCall("h1", "hold", {}),))])
    executor.register("held", Agent(held, tools=[Tool("hold", "waits", hold)]))
    return executor
"""


def submit(url: str, kind: str, run_id: str) -> None:
    async def go() -> None:
        store = outlast.open(url)
        await outlast.Executor(store).submit(kind, None, run_id=run_id)
        await store.close()

    asyncio.run(go())


def status_of(url: str, run_id: str) -> str:
    shown = CliRunner().invoke(main, ["runs", "show", run_id, "--url", url])
    line = next(line for line in shown.output.splitlines() if line.startswith("status:"))
    return line.split(":", 1)[1].strip()


def test_worker_serves_submitted_runs_and_exits_0_on_sigterm_releasing_its_run(
    url: str, tmp_path: Path
) -> None:
    (tmp_path / "workerapp.py").write_text(WORKER_APP)
    submit(url, "quick", "q1")
    submit(url, "held", "h1")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    worker = subprocess.Popen(  # noqa: S603 - our own CLI with fixed arguments
        [sys.executable, "-m", "outlast.cli", "worker", "workerapp:app", "--url", url, "-c", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        waited = CliRunner().invoke(main, ["runs", "wait", "q1", "--url", url, "--timeout", "60"])
        assert waited.exit_code == 0, waited.output
        assert "q1: completed (epoch 1): 'quick done'" in waited.output
        deadline = time.monotonic() + 60
        while (
            "epoch:             1"
            not in CliRunner().invoke(main, ["runs", "show", "h1", "--url", url]).output
        ):
            assert time.monotonic() < deadline, "the worker never started the held run"
            time.sleep(0.05)  # a plain (sync) test polling another process's progress
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    assert "releasing running runs" in err
    assert "claimed 2" in out
    assert status_of(url, "h1") == "running"
    shown = CliRunner().invoke(main, ["runs", "show", "h1", "--url", url]).output
    assert "lease expires:     -" in shown  # released, not left to expire


def test_runs_wait_reports_failures_and_timeouts_with_exit_codes(url: str) -> None:
    submit(url, "nobody", "queued")
    timed_out = CliRunner().invoke(
        main, ["runs", "wait", "queued", "--url", url, "--timeout", "0.2"]
    )
    assert timed_out.exit_code == 2
    assert "still running after 0.2s" in timed_out.output
    cancelled = CliRunner().invoke(main, ["runs", "cancel", "queued", "--url", url])
    assert cancelled.exit_code == 0
    assert "cancelled (nobody was running it)" in cancelled.output
    failed = CliRunner().invoke(main, ["runs", "wait", "queued", "--url", url])
    assert failed.exit_code == 1
    assert "Cancelled: cancelled by request" in failed.output
    again = CliRunner().invoke(main, ["runs", "cancel", "queued", "--url", url])
    assert again.exit_code == 1
    assert "already failed" in again.output
    listed = CliRunner().invoke(main, ["runs", "list", "--url", url])
    assert "failed" in listed.output


def test_runs_list_shows_queued_runs(url: str) -> None:
    submit(url, "nobody", "waiting-for-a-worker")
    listed = CliRunner().invoke(main, ["runs", "list", "--url", url])
    assert "waiting-for-a-worker" in listed.output and "queued" in listed.output
