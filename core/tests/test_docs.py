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


def test_the_adapter_guide_imports_exist() -> None:
    """The guide's one import block names what outlast.adapter really exports."""
    guide = REPO / "docs" / "writing-an-adapter.md"
    block = python_blocks(guide)[1]  # the block of section 0
    assert block.startswith("from outlast.adapter import")
    exec(compile(block, str(guide), "exec"), {})  # noqa: S102 - our own doc's import line


IMPORT = re.compile(r"^\s*(?:from|import)\s+(outlast(?:\.[a-z_]+)*)\b", re.MULTILINE)
ALLOWED = {"outlast", "outlast.adapter"}


def test_adapters_examples_and_docs_import_only_the_kit() -> None:
    """Adapters' and examples' code and the docs reach outlast only through
    `outlast.adapter` (and the user API `outlast`): one door for authors."""
    sources = [
        *REPO.glob("adapters/*/src/**/*.py"),
        *REPO.glob("examples/*/src/**/*.py"),
        *REPO.glob("docs/*.md"),
        *REPO.glob("adapters/*/README.md"),
        *REPO.glob("examples/*/README.md"),
    ]
    assert sources
    outside = sorted(
        f"{path.relative_to(REPO)}: {module}"
        for path in sources
        for module in IMPORT.findall(path.read_text(encoding="utf-8"))
        if module not in ALLOWED
    )
    assert outside == []
