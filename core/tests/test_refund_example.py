"""The refund example (examples/refund_approval) run as its README runs it:
a worker process, a submitting process, a human's `outlast runs send`, and a
`kill -9` of the worker while the payment is in flight."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import outlast
from outlast.tools import idempotency_key

REPO = Path(__file__).resolve().parents[2]
APP = "examples.refund_approval.app"
FAST_POLL = ("--poll-interval", "0.05")
WITHIN = 60.0
"""Seconds any one step may take before the test fails (it takes far less)."""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The example's environment: a SQLite file and a ledger folder in tmp_path."""
    inherited = {
        k: v for k, v in os.environ.items() if k not in ("OUTLAST_URL", "REFUND_LEDGER_STALL")
    }
    return {
        **inherited,
        "OUTLAST_URL": f"sqlite:///{tmp_path}/runs.db",
        "REFUND_LEDGER_DIR": str(tmp_path / "refunds"),
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``outlast ARGS`` from the repository's root, as the README types it."""
    return subprocess.run(  # noqa: S603 - our own CLI with fixed arguments
        [sys.executable, "-m", "outlast.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=WITHIN,
        check=False,
    )


def submit(env: dict[str, str]) -> str:
    """``python -m examples.refund_approval.app A-1001 25.00``: the run id."""
    submitted = subprocess.run(  # noqa: S603 - the example's own entry point
        [sys.executable, "-m", APP, "A-1001", "25.00"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=WITHIN,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip()


@contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """``outlast worker examples.refund_approval.app:build``, killed if a test leaves it."""
    with log.with_suffix(".out").open("w") as out, log.with_suffix(".err").open("w") as err:
        process = subprocess.Popen(  # noqa: S603 - our own CLI with fixed arguments
            [sys.executable, "-m", "outlast.cli", "worker", f"{APP}:build", *FAST_POLL],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=WITHIN)


def wait_until(condition: Callable[[], bool], what: str, *alive: subprocess.Popen[str]) -> None:
    """Poll ``condition`` (another process's progress) until it holds, while
    the processes ``alive`` stay alive; fail after WITHIN seconds."""
    deadline = time.monotonic() + WITHIN
    while not condition():
        for process in alive:
            assert process.poll() is None, f"the worker exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"not within {WITHIN}s: {what}"
        time.sleep(0.02)


def stored(env: dict[str, str], run_id: str) -> outlast.StoredRun:
    async def load() -> outlast.StoredRun | None:
        async with outlast.open(env["OUTLAST_URL"]) as store:
            return await store.load(run_id)

    found = asyncio.run(load())
    assert found is not None, f"no run {run_id}"
    return found


def status(env: dict[str, str], run_id: str) -> outlast.RunStatus:
    return stored(env, run_id).record.status


def ledger(env: dict[str, str]) -> list[dict[str, object]]:
    path = Path(env["REFUND_LEDGER_DIR"]) / "ledger.json"
    refunds: list[dict[str, object]] = json.loads(path.read_text(encoding="utf-8"))["refunds"]
    return refunds


def refund_key(run_id: str) -> str:
    """The refund call's idempotency key: the run's transcript is the user's
    request (0), the approve call (1), its answer (2), the refund call (3)."""
    return idempotency_key("default", run_id, 0, 3, 0)


def approve(env: dict[str, str], run_id: str, alive: subprocess.Popen[str]) -> None:
    """Wait until the run asks for approval, then give it as a human would."""
    wait_until(lambda: status(env, run_id) is outlast.RunStatus.WAITING, "it waits", alive)
    listed = cli(env, "runs", "list", "--status", "waiting")
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout
    assert stored(env, run_id).record.wait == {
        "call": "approve-1",
        "tool": "approve",
        "request": {
            "question": "Refund 25.00 for order A-1001?",
            "answer": {"approved": "true or false", "reason": "optional text"},
        },
        "timeout": None,
        "on_timeout": {"result": {"approved": False, "reason": "nobody answered in time"}},
    }
    sent = cli(env, "runs", "send", run_id, '{"approved": true}')
    assert sent.returncode == 0, sent.stderr


def test_a_refund_waits_for_approval_then_pays_once(env: dict[str, str], tmp_path: Path) -> None:
    with worker(env, tmp_path / "worker") as serving:
        run_id = submit(env)
        approve(env, run_id, serving)
        waited = cli(env, "runs", "wait", run_id, "--timeout", str(WITHIN))
        assert waited.returncode == 0, waited.stderr
        key = refund_key(run_id)
        assert f"Refunded 25.00 for order A-1001 (ledger key {key})." in waited.stdout
        shown = cli(env, "runs", "show", run_id)
        assert "status:            completed" in shown.stdout
        assert "usage:             input_tokens 540, output_tokens 75" in shown.stdout
        assert ledger(env) == [{"key": key, "order": "A-1001", "amount_cents": 2500, "requests": 1}]
        serving.send_signal(signal.SIGTERM)
        serving.wait(timeout=WITHIN)
    assert serving.returncode == 0, (tmp_path / "worker.err").read_text()
    assert "claimed 2 (completed 1, waiting 1)" in (tmp_path / "worker.out").read_text()


def test_a_worker_killed_mid_refund_is_reconciled_not_paid_twice(
    env: dict[str, str], tmp_path: Path
) -> None:
    stalled = tmp_path / "stalled"
    with worker({**env, "REFUND_LEDGER_STALL": str(stalled)}, tmp_path / "first") as first:
        run_id = submit(env)
        approve(env, run_id, first)
        # The ledger recorded the refund and the call hangs: its result is never saved.
        wait_until(stalled.exists, "the refund is in flight", first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=WITHIN)
    key = refund_key(run_id)
    paid_once = [{"key": key, "order": "A-1001", "amount_cents": 2500, "requests": 1}]
    assert ledger(env) == paid_once
    left = stored(env, run_id)
    assert left.record.status is outlast.RunStatus.RUNNING
    assert left.state.history[-1].role == "outlast"  # the refund's start, saved before the call

    with worker(env, tmp_path / "second") as second:
        waited = cli(env, "runs", "wait", run_id, "--timeout", str(WITHIN))
        assert waited.returncode == 0, waited.stderr
        assert f"(ledger key {key}); a worker died during the refund" in waited.stdout
        assert ledger(env) == paid_once  # reconciled by the key, not paid again
        record = stored(env, run_id).record
        assert (record.status, record.crashes) == (outlast.RunStatus.COMPLETED, 1)
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=WITHIN)
    assert second.returncode == 0, (tmp_path / "second.err").read_text()
