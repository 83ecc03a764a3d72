"""The README's code runs as printed (docs stay true to the code)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

import outlast

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


# Prepended to the README's example: the "write" phase's model call stalls (a
# slow model API), and a file says the run is mid-step, so the signal below
# lands inside the run, after its first phase was saved.
STALL_IN_WRITE = """
import asyncio, pathlib, outlast

_complete = outlast.ScriptedModel.complete


async def _slow(self, messages, tools):
    if messages and messages[0].meta.get("phase") == "write":
        pathlib.Path("mid-step").write_text("the write phase is waiting for the model")
        await asyncio.Event().wait()
    return await _complete(self, messages, tools)


outlast.ScriptedModel.complete = _slow
"""


def the_use_it_example() -> str:
    (code,) = [b for b in python_blocks(REPO / "README.md") if "handle_signals" in b]
    return code


async def reports(cwd: Path) -> list[outlast.StoredRun]:
    """Every run of the README example's namespace, in its default SQLite file."""
    async with outlast.open(f"sqlite:///{cwd / '.outlast' / 'runs.db'}") as store:
        page = await store.list("reports")
        loaded = [await store.load(r.run_id, "reports") for r in page.records]
    return [run for run in loaded if run is not None]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_readme_example_stopped_mid_run_exits_0_and_leaves_the_run_for_recovery(
    sig: signal.Signals, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUTLAST_URL"}
    example = subprocess.Popen(  # noqa: S603 - our interpreter running the README's own example
        [sys.executable, "-c", STALL_IN_WRITE + the_use_it_example()],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "mid-step").exists():
            assert example.poll() is None, example.communicate()
            assert time.monotonic() < deadline, "the example never reached its second phase"
            time.sleep(0.02)
        example.send_signal(sig)
        out, err = example.communicate(timeout=60)
    finally:
        if example.poll() is None:
            example.kill()
            example.wait()
    assert example.returncode == 0, err
    assert out.strip() == "stopped: the run is left for recovery; the next start continues it"
    assert "Traceback" not in err
    (released,) = asyncio.run(reports(tmp_path))
    assert released.record.status is outlast.RunStatus.RUNNING
    assert released.record.lease_expires_at is None  # released: claimable at once
    assert [p.name for p in released.state.phases] == ["research"]

    # The next start recovers it (then runs its own report): both complete.
    again = subprocess.run(  # noqa: S603 - as above
        [sys.executable, "-c", the_use_it_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "the report"
    runs = {run.record.run_id: run.record for run in asyncio.run(reports(tmp_path))}
    assert runs[released.record.run_id].status is outlast.RunStatus.COMPLETED
    assert runs[released.record.run_id].epoch == 2
    assert [r.status for r in runs.values()] == [outlast.RunStatus.COMPLETED] * 2


def test_the_adapter_guide_imports_exist() -> None:
    """The guide's one import block names what outlast.adapter really exports."""
    guide = REPO / "docs" / "writing-an-adapter.md"
    block = python_blocks(guide)[1]  # the block of section 0
    assert block.startswith("from outlast.adapter import")
    exec(compile(block, str(guide), "exec"), {})  # noqa: S102 - our own doc's import line


def test_the_adapter_guide_hook_module_runs_as_printed(tmp_path: Path) -> None:
    """Section 3's hook module imports everything it uses, and its hooks work."""
    guide = REPO / "docs" / "writing-an-adapter.md"
    (block,) = [b for b in python_blocks(guide) if "def outlast_backends" in b]
    hooks: dict[str, Any] = {}
    exec(compile(block, str(guide), "exec"), hooks)  # noqa: S102 - our own doc's example
    store = hooks["outlast_open"](f"jsondir:///{tmp_path}/runs", {})
    assert type(store).__name__ == "JsonDirStore"
    assert hooks["outlast_open"]("sqlite:///runs.db", {}) is None
    with pytest.raises(outlast.ConfigurationError, match="unknown"):
        hooks["outlast_open"]("jsondir:///runs?color=blue", {})
    (info,) = hooks["outlast_backends"]()
    assert (info.name, info.schemes, info.package) == ("jsondir", ("jsondir",), "outlast-jsondir")
    assert info.version == version("outlast-jsondir")


APP_GUIDE = REPO / "docs" / "writing-an-app.md"
TOOLS_GUIDE = REPO / "docs" / "tools.md"
GUIDES = (APP_GUIDE, TOOLS_GUIDE)


def examples_with_output(path: Path) -> list[tuple[str, str]]:
    """Each python block and the ```text block right after it: what it prints."""
    text = path.read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```\n\n```text\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.name)
def test_every_example_of_the_guides_shows_its_output(guide: Path) -> None:
    assert len(examples_with_output(guide)) == len(python_blocks(guide)) >= 2


@pytest.mark.parametrize(
    ("guide", "index"),
    [(guide, index) for guide in GUIDES for index in range(len(examples_with_output(guide)))],
    ids=lambda value: value.name if isinstance(value, Path) else str(value),
)
def test_guide_example_prints_what_the_guide_shows(guide: Path, index: int, tmp_path: Path) -> None:
    code, expected = examples_with_output(guide)[index]
    env = {k: v for k, v in os.environ.items() if k != "OUTLAST_URL"}
    result = subprocess.run(  # noqa: S603 - our interpreter running the guide's own example
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


IMPORT = re.compile(r"^\s*(?:from|import)\s+(outlast(?:\.[a-z_]+)*)\b", re.MULTILINE)
ALLOWED = {"outlast", "outlast.adapter", "outlast.models.openai", "outlast.models.anthropic"}
"""The user API, the adapter kit, and the model clients (optional extras)."""


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
