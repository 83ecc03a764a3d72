"""``outlast recover``: leased runs, --wait, what it says per run, -v, signals,
an app that does not import, and where its progress bar goes."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from click.testing import CliRunner

import outlast
from outlast import Message
from outlast.adapter import CheckpointState, PhaseOutput, RunStart
from outlast.cli import main

TIMEOUT = 60.0

APP = """
import asyncio

from outlast import Agent, Executor, Message, Phase, Plan, ScriptedModel, Tool, ToolCall


async def hold(arguments):
    print("holding", flush=True)
    await asyncio.Event().wait()  # held until the process shuts down


def app(store):
    executor = Executor(store, lease=3600)
    model = ScriptedModel({"b": [Message.assistant("b done")]})
    executor.register("app.plan", Plan(model, [Phase("a", "A"), Phase("b", "B")]))
    held = ScriptedModel([Message.assistant(None, (ToolCall("h1", "hold", {}),))])
    executor.register("held", Agent(held, tools=[Tool("hold", "waits", hold)]))
    return executor
"""


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/runs.db"


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding ``recoverapp.py``, the working directory of the test."""
    (tmp_path / "recoverapp.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return tmp_path


def begin(url: str, run_id: str, kind: str, *, lease: float, release: bool) -> None:
    """A run begun by a worker that then released it (a clean shutdown) or
    died holding its lease (``kill -9``); a plan saved phase ``a`` and two
    messages of phase ``b`` first."""

    async def go() -> None:
        store = outlast.open(url)
        cp = await store.begin(RunStart(run_id, kind, None, owner="dead-worker", lease=lease))
        if kind == "app.plan":
            state = CheckpointState(
                (Message.user("go"), Message.assistant("x")), (PhaseOutput("a", 1),)
            )
            await cp.save(state)
        if release:
            await cp.release()
        await store.close()

    asyncio.run(go())


def cli(*args: str, cwd: Path, stderr: int = subprocess.PIPE) -> subprocess.Popen[str]:
    """``outlast ARGS`` in a process of its own, stdout piped."""
    return subprocess.Popen(  # noqa: S603 - our own CLI with fixed arguments
        [sys.executable, "-m", "outlast.cli", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd), "PYTHONUNBUFFERED": "1"},
    )


def show(url: str, run_id: str) -> str:
    return CliRunner().invoke(main, ["runs", "show", run_id, "--url", url]).output


class Lines:
    """A process's stdout lines, read by a thread, so a test can wait for one
    with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def wait_for(self, text: str) -> None:
        seen: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while not any(text in line for line in seen):
            try:
                seen.append(self._lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {TIMEOUT}s: {seen}") from None
        for line in seen:  # kept for rest()
            self._lines.put(line)

    def rest(self) -> str:
        """Everything the process printed, once it has exited."""
        self._reader.join(TIMEOUT)
        return "".join(self._lines.get() for _ in range(self._lines.qsize()))


@contextlib.contextmanager
def reaped(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Kill the process if the test left it running; close its pipes."""
    with process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


# -- item: leased runs after kill -9, and --wait --------------------------------------


def test_a_run_still_leased_by_a_killed_worker_is_counted_with_its_expiry(
    url: str, app_dir: Path
) -> None:
    begin(url, "half", "app.plan", lease=3600, release=False)  # its worker was kill -9'd
    result = CliRunner().invoke(main, ["recover", "recoverapp:app", "--url", url])
    assert result.exit_code == 0, result.output
    assert "0 claimable runs" in result.output
    assert "1 run still leased in namespace 'default'" in result.output
    assert re.search(r"The first lease expires in (59m \d+s|1h) \(at \d{4}-", result.output)
    assert "add --wait to wait for it" in result.output
    assert "status:            running" in show(url, "half")


def test_wait_recovers_a_run_once_its_lease_runs_out(url: str, app_dir: Path) -> None:
    begin(url, "half", "app.plan", lease=1.0, release=False)  # its worker was kill -9'd
    result = CliRunner().invoke(main, ["recover", "recoverapp:app", "--url", url, "--wait"])
    assert result.exit_code == 0, result.output
    assert "half: recovered (epoch 2)" in result.output
    assert "recovered 1, failed 0" in result.output
    shown = show(url, "half")
    assert "status:            completed" in shown
    assert "crashes:           1" in shown


def test_sigterm_while_waiting_stops_the_wait_and_exits_0(url: str, app_dir: Path) -> None:
    begin(url, "half", "app.plan", lease=3600, release=False)
    recover = cli(
        "recover", "recoverapp:app", "--url", url, "--wait",
        cwd=app_dir,
    )  # fmt: skip
    with reaped(recover):
        lines = Lines(recover)
        lines.wait_for("waiting up to")
        recover.send_signal(signal.SIGTERM)
        code = recover.wait(timeout=TIMEOUT)
        said = lines.rest()
        err = recover.stderr.read()  # type: ignore[union-attr]
    assert code == 0, err
    assert "stopped waiting: shutting down" in said
    assert "recovered 0, failed 0, released 0" in said


# -- item: SIGTERM to recover releases the run and exits 0 -----------------------------


def test_sigterm_releases_the_run_being_recovered_and_exits_0(url: str, app_dir: Path) -> None:
    begin(url, "h1", "held", lease=30, release=True)
    recover = cli(
        "recover", "recoverapp:app", "--url", url,
        cwd=app_dir,
    )  # fmt: skip
    with reaped(recover):
        lines = Lines(recover)
        lines.wait_for("holding")  # the recovered run is inside its tool call
        recover.send_signal(signal.SIGTERM)
        code = recover.wait(timeout=TIMEOUT)
        said = lines.rest()
        err = recover.stderr.read()  # type: ignore[union-attr]
    assert code == 0, err
    assert "h1: released (epoch 2)" in said
    assert "recovered 0, failed 0, released 1, left running 0" in said
    assert "Traceback" not in err
    shown = show(url, "h1")
    assert "status:            running" in shown
    assert "lease expires:     -" in shown  # released: claimable again at once


# -- item: -v shows the executor's INFO log ----------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_logs_every_durable_step_of_the_recovered_run(
    url: str, app_dir: Path, where: str
) -> None:
    begin(url, "half", "app.plan", lease=30, release=True)
    args = ["recover", "recoverapp:app", "--url", url]
    args = ["-v", *args] if where == "before" else [*args, "-v"]
    recover = cli(*args, cwd=app_dir)
    with reaped(recover):
        out, err = recover.communicate(timeout=TIMEOUT)
    assert recover.returncode == 0, err
    assert "INFO outlast.events: run half epoch 2: claim" in err
    assert "INFO outlast.events: run half epoch 2: complete" in err
    assert "recovered 1" in out


# -- item: an app that does not import -----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected", "line"),
    [
        ("import os\n\ndef app(store:\n    pass\n", "SyntaxError: '(' was never closed", 3),
        ("import os\nimport no_such_module_here\n", "ModuleNotFoundError: No module named", 2),
        ("x = 1\nraise RuntimeError('boom at import')\n", "RuntimeError: boom at import", 2),
    ],
    ids=["syntax", "import", "raises"],
)
def test_an_app_that_does_not_import_is_one_line_and_exit_2(
    url: str, app_dir: Path, source: str, expected: str, line: int, request: pytest.FixtureRequest
) -> None:
    name = f"brokenapp_{request.node.callspec.id}"
    (app_dir / f"{name}.py").write_text(source)
    importlib.invalidate_caches()
    result = CliRunner().invoke(main, ["recover", f"{name}:app", "--url", url])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"cannot import {name!r}: {expected}" in result.output
    assert f"({app_dir / name}.py:{line})" in result.output


def test_a_missing_module_or_object_is_named(url: str, app_dir: Path) -> None:
    runner = CliRunner()
    missing_module = runner.invoke(main, ["recover", "no_app_module_here:app", "--url", url])
    assert missing_module.exit_code == 2
    assert "no module named 'no_app_module_here'" in missing_module.output
    typo = runner.invoke(main, ["recover", "recoverapp:ap", "--url", url])
    assert typo.exit_code == 2
    assert "'recoverapp'" in typo.output
    assert "has no attribute 'ap'; did you mean 'app'?" in typo.output
    assert "Traceback" not in missing_module.output + typo.output


# -- item: progress on stderr, only on a terminal ----------------------------------------------


def test_progress_goes_to_stderr_only_when_it_is_a_terminal(url: str, app_dir: Path) -> None:
    begin(url, "half", "app.plan", lease=30, release=True)
    terminal, stderr_side = pty.openpty()
    recover = cli(
        "recover", "recoverapp:app", "--url", url,
        cwd=app_dir, stderr=stderr_side,
    )  # fmt: skip
    os.close(stderr_side)
    with reaped(recover):
        out, _ = recover.communicate(timeout=TIMEOUT)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    assert recover.returncode == 0, shown
    assert "half: recovered" in out
    assert "recovering" not in out  # stdout is the report only
    assert b"recovering" in shown


def test_no_progress_bar_when_stderr_is_not_a_terminal(url: str, app_dir: Path) -> None:
    begin(url, "half", "app.plan", lease=30, release=True)
    recover = cli(
        "recover", "recoverapp:app", "--url", url,
        cwd=app_dir,
    )  # fmt: skip
    with reaped(recover):
        out, err = recover.communicate(timeout=TIMEOUT)
    assert recover.returncode == 0, err
    assert "recovering" not in out + err
    assert "half: recovered" in out
