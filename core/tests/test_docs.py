"""The README's code runs as printed (docs stay true to the code)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(python_blocks(REPO / "README.md"))))
def test_readme_python_example_runs(index: int, tmp_path: Path) -> None:
    code = python_blocks(REPO / "README.md")[index]
    env = {k: v for k, v in os.environ.items() if k != "OUTLAST_URL"}
    result = subprocess.run(  # noqa: S603 - our interpreter running the README's own example
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the report"
