"""The synchronous facade: run, submit, result, send, cancel, inspect — from
plain functions, and from several threads at once (issue 12)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import outlast
from outlast import (
    Agent,
    AwaitInput,
    Message,
    NotWaiting,
    RunFailed,
    RunStatus,
    RunWaiting,
    ScriptedModel,
    Tool,
    ToolCall,
)
from outlast.messages import JSON, JSONObject
from outlast.sync import SyncExecutor


def agent(reply: str = "done") -> Agent:
    return Agent(ScriptedModel([Message.assistant(reply)]))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/runs.db"


def test_run_submit_result_and_inspect_without_asyncio(url: str) -> None:
    with SyncExecutor(url) as executor:
        executor.register("k", agent())
        result = executor.run("k", "go", run_id="r1")
        assert (result.output, result.durable) == ("done", True)
        assert executor.run("k", "go", run_id="r1").ran is False  # an idempotency key
        run_id = executor.submit("k", "later")
        assert executor.recover().results[0].run_id == run_id
        assert executor.result(run_id, timeout=10).output == "done"
        stored = executor.load("r1")
        assert stored is not None and stored.record.status is RunStatus.COMPLETED
        assert {r.run_id for r in executor.list(RunStatus.COMPLETED).records} == {"r1", run_id}
        assert executor.delete("r1") is True and executor.load("r1") is None


def test_a_waiting_run_is_sent_its_input_and_a_cancel_fails_a_run(url: str) -> None:
    def approve(arguments: JSONObject) -> JSON:
        raise AwaitInput("approve?")

    with SyncExecutor(url) as executor:
        executor.register(
            "k",
            Agent(
                ScriptedModel(
                    [
                        Message.assistant(None, (ToolCall("c1", "approve", {}),)),
                        Message.assistant("approved"),
                    ]
                ),
                [Tool("approve", "", approve)],
            ),
        )
        with pytest.raises(RunWaiting):
            executor.run("k", run_id="w1")
        executor.send("w1", True)
        with pytest.raises(NotWaiting):
            executor.send("w1", True)
        assert [r.output for r in executor.recover().results] == ["approved"]
        queued = executor.submit("k")
        assert executor.cancel(queued).status is RunStatus.FAILED
        with pytest.raises(RunFailed, match="Cancelled"):
            executor.result(queued)


def test_threads_share_one_facade(url: str) -> None:
    outputs: list[str] = []
    errors: list[BaseException] = []
    with SyncExecutor(url) as executor:
        executor.register("k", agent("ok"))

        def work(index: int) -> None:
            try:
                outputs.append(str(executor.run("k", index, run_id=f"t{index}").output))
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == [] and outputs == ["ok"] * 8


def test_a_facade_without_a_store_runs_but_cannot_inspect() -> None:
    with SyncExecutor(None) as executor:
        executor.register("k", agent())
        assert executor.run("k").durable is False
        with pytest.raises(ValueError, match="no store"):
            executor.load("x")


def test_a_store_passed_in_stays_open_and_a_closed_facade_refuses(url: str) -> None:
    store = outlast.open(url)
    executor = SyncExecutor(store)
    executor.register("k", agent())
    executor.run("k", run_id="r1")
    executor.close()
    executor.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        executor.run("k")
    with SyncExecutor(store) as again:  # the store was not closed by the first facade
        assert again.load("r1") is not None


SCRIPT = """
import asyncio, sys
from pathlib import Path
from outlast import Agent, Message, ScriptedModel, Tool, ToolCall
from outlast.sync import SyncExecutor

async def block(arguments):
    Path(sys.argv[2]).write_text("started")
    await asyncio.sleep(120)  # a long tool call

with SyncExecutor(sys.argv[1]) as executor:
    executor.register("k", Agent(ScriptedModel([
        Message.assistant(None, (ToolCall("c1", "block", {}),)), Message.assistant("x")]),
        [Tool("block", "", block)]))
    try:
        executor.run("k", run_id="r1")
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def test_ctrl_c_in_a_blocking_call_releases_the_run(url: str, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "started"
    process = subprocess.Popen(  # noqa: S603 - our interpreter running the script above
        [sys.executable, "-c", SCRIPT, url, str(marker)], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline, "never started"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert "interrupted" in out
    with SyncExecutor(url) as executor:
        stored = executor.load("r1")
    assert stored is not None
    assert (stored.record.status, stored.record.lease_expires_at) == (RunStatus.RUNNING, None)
