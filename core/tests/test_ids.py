"""Run ids and namespaces are checked once, in core, before any store sees them."""

from __future__ import annotations

import pytest

import outlast
from outlast import Executor
from outlast.adapter import RunStart, ids

BAD_IDS = {
    "empty": "",
    "NUL": "a\x00b",
    "newline": "a\nb",
    "DEL": "a\x7fb",
    "C1 control": "a\x85b",
    "lone surrogate": "a\ud800b",
    "too long": "x" * 256,
    "too long in UTF-8": "é" * 128,
}


@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_a_bad_run_id_is_a_value_error_stating_the_rule(bad: str) -> None:
    with pytest.raises(ValueError, match="run id") as caught:
        RunStart(bad, "kind")
    rule = str(caught.value)
    assert any(word in rule for word in ("non-empty", "control", "Unicode", "bytes"))


@pytest.mark.parametrize("good", ["x", "order-42", "日本語", "a b/c:{d}", "x" * 255, "é" * 127])
def test_good_run_ids_pass(good: str) -> None:
    assert RunStart(good, "kind").run_id == good


def test_namespaces_kinds_owners_and_leases_are_checked_too() -> None:
    with pytest.raises(ValueError, match="namespace"):
        RunStart("r", "k", namespace="n" * 129)
    with pytest.raises(ValueError, match="run kind"):
        RunStart("r", "")
    with pytest.raises(ValueError, match="owner"):
        RunStart("r", "k", owner="w\ud800")
    for lease in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="lease"):
            RunStart("r", "k", lease=lease)
    assert RunStart("r", "k", owner="").owner == ""


@pytest.mark.asyncio
async def test_the_store_front_refuses_bad_names_before_the_backend_sees_them() -> None:
    store = outlast.open("memory://")
    with pytest.raises(ValueError, match="run id"):
        await store.load("a\ud800")
    with pytest.raises(ValueError, match="run id"):
        await store.claim("", owner="w", lease=1)
    with pytest.raises(ValueError, match="namespace"):
        await store.interrupted("n\x00")
    with pytest.raises(ValueError, match="limit"):
        await store.list(limit=0)
    with pytest.raises(ValueError, match="limit"):
        await store.interrupted(limit=-1)
    with pytest.raises(ValueError, match="older_than"):
        await store.purge(-1)
    with pytest.raises(ValueError, match="run id"):
        await store.delete("x" * 300)


def test_an_executor_refuses_a_bad_namespace_or_owner() -> None:
    with pytest.raises(ValueError, match="namespace"):
        Executor(namespace="")
    with pytest.raises(ValueError, match="owner"):
        Executor(owner="w\n1")


def test_printable_escapes_lone_surrogates_only() -> None:
    assert ids.printable("ok ✓") == "ok ✓"
    assert ids.printable("bad \udc80") == "bad \\udc80"
