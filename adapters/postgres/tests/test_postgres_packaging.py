"""The fast builds of psycopg are extras of outlast-postgres (what they buy: the README)."""

from __future__ import annotations

import importlib.metadata

from packaging.requirements import Requirement


def extra_requirements(extra: str) -> list[Requirement]:
    requirements = [Requirement(r) for r in importlib.metadata.requires("outlast-postgres") or []]
    return [r for r in requirements if r.marker is not None and r.marker.evaluate({"extra": extra})]


def test_the_binary_extra_installs_psycopg_with_its_precompiled_implementation() -> None:
    assert [(r.name, r.extras) for r in extra_requirements("binary")] == [("psycopg", {"binary"})]


def test_the_c_extra_installs_psycopg_with_its_locally_built_implementation() -> None:
    assert [(r.name, r.extras) for r in extra_requirements("c")] == [("psycopg", {"c"})]
