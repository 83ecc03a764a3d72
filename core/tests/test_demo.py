"""The README's first command: `outlast demo`, end to end in a fresh directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

FINAL = "Final answer: Final report: save the delta, fence by epoch, resume by position."


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """`outlast demo`'s output, run once in a fresh directory, and that directory."""
    cwd = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if k != "OUTLAST_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "outlast.cli", "demo"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, cwd


def test_the_demo_uses_the_default_sqlite_file(demo: tuple[str, Path]) -> None:
    out, cwd = demo
    assert "store sqlite:///./.outlast/runs.db" in out
    assert (cwd / ".outlast" / "runs.db").exists()


def test_lease_and_epoch_are_explained_where_they_first_appear(demo: tuple[str, Path]) -> None:
    out, _ = demo
    first_lease = out.index("lease")
    first_epoch = out.index("epoch")
    assert out.index("(lease: how long a worker owns a run without renewing it") - first_lease < 200
    assert out.index("(epoch: counts the run's owners") - first_epoch < 200


def test_sigterm_releases_the_run_and_recovery_continues_it_at_once(
    demo: tuple[str, Path],
) -> None:
    graceful = demo[0].split("B. A crash")[0]
    assert "Sending SIGTERM to the worker" in graceful
    assert "run released for recovery" in graceful
    assert "the record is running, epoch 1, lease released: True" in graceful
    assert "Waiting" not in graceful  # a released run is taken at once
    assert "Skipped finished phases: research, outline" in graceful
    assert "continued from 7 saved messages" in graceful
    assert "model was not asked again: only that tool call ran again" in graceful
    assert "epoch 2" in graceful
    assert FINAL in graceful
    # The phases before the interruption ran once: their replies appear once.
    assert graceful.count("[outline] model:") == 1
    assert graceful.count("wrote section 'Checkpoints'") == 1


def test_kill_9_leaves_the_run_leased_and_recovery_waits_for_the_lease(
    demo: tuple[str, Path],
) -> None:
    crash = demo[0].split("B. A crash")[1]
    assert "with a 3-second lease" in crash
    assert "Sending SIGKILL (kill -9) to the worker" in crash
    leased = re.search(
        r"killed \(-9\) and released nothing: the record is running, epoch 1, "
        r"still leased to demo-pid-\d+ for (\d+\.\d) s",
        crash,
    )
    assert leased, crash
    assert 0.0 <= float(leased.group(1)) <= 3.0
    # Why recovery must wait, and for how long.
    assert "recover() right now: does not take it" in crash
    assert "nobody may take the run before its lease expires" in crash
    assert "recovery waits up to one lease" in crash
    assert f"Waiting {leased.group(1)} s for the lease to expire" in crash
    # Then the same record continues: epoch 2, one crash counted, finished phases skipped.
    assert "Skipped finished phases: research, outline" in crash
    assert "continued from 7 saved messages" in crash
    assert "epoch 2" in crash
    assert "Crashes counted: 1" in crash
    assert FINAL in crash
    assert crash.count("[outline] model:") == 1
    assert crash.count("wrote section 'Checkpoints'") == 1


def test_the_demo_says_how_to_inspect_both_runs(demo: tuple[str, Path]) -> None:
    out, cwd = demo
    shown = re.findall(r"outlast runs show (demo-[0-9a-f]{8}) --namespace outlast-demo", out)
    assert len(set(shown)) == 2
    env = {k: v for k, v in os.environ.items() if k != "OUTLAST_URL"}
    for run_id in shown:
        result = subprocess.run(  # noqa: S603 - our CLI, as the demo tells a user to run it
            [sys.executable, "-m", "outlast.cli", "runs", "show", run_id, "-n", "outlast-demo"],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "completed" in result.stdout
