"""The shared hostile-URL table against jsondir: no secret in a repr, error or log."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlast_conformance.hostile_urls import HostileUrl, assert_no_secret, exercise, hostile_urls


@pytest.mark.asyncio
@pytest.mark.parametrize("hostile", hostile_urls("jsondir:///runs"), ids=str)
async def test_jsondir_never_shows_the_secret(
    hostile: HostileUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_no_secret(await exercise(hostile.url), hostile.secret)
