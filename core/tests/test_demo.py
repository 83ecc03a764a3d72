"""The README's first command: `outlast demo`, end to end in a fresh directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_interrupts_a_real_worker_and_recovers_the_same_record(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUTLAST_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "outlast.cli", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert "store sqlite:///./.outlast/runs.db" in out
    assert "Sending SIGTERM to the worker" in out
    assert "run released for recovery" in out
    assert "the record is running, epoch 1, lease released: True" in out
    assert "Skipped finished phases: research, outline" in out
    assert "continued from 6 saved messages" in out
    assert "epoch 2" in out
    assert "Final answer: Final report: save the delta, fence by epoch, resume by position." in out
    # The phases before the interruption ran once: their replies appear once.
    assert out.count("[outline] model:") == 1
    assert out.count("wrote section 'Checkpoints'") == 1
    assert (tmp_path / ".outlast" / "runs.db").exists()
