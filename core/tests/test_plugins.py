"""Opening stores by URL, the plugin manager, events and password redaction."""

from __future__ import annotations

import importlib.metadata
import logging
import types
from collections.abc import Iterator
from typing import Any

import pytest

import outlast
import outlast.adapter
from outlast import (
    ConfigurationError,
    Event,
    EventKind,
    Executor,
    Message,
    ScriptedModel,
    UnknownBackend,
)
from outlast.plugins import broken_plugins, plugin_manager, reset_plugins
from outlast.runs import Agent
from outlast.stores.memory import MemoryStore


@pytest.fixture(autouse=True)
def fresh_plugins() -> Iterator[None]:
    reset_plugins()
    yield
    reset_plugins()


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, **modules: object) -> None:
    """Make the `outlast` entry-point group hold ``modules`` (name -> object or exception)."""

    class FakeEntryPoint:
        def __init__(self, name: str, target: object) -> None:
            self.name = name
            self.value = f"fake_{name}:plugin"
            self.target = target

        def load(self) -> object:
            if isinstance(self.target, BaseException):
                raise self.target
            return self.target

    real = importlib.metadata.entry_points

    def entry_points(**kwargs: Any) -> Any:
        if kwargs.get("group") == "outlast":
            return [FakeEntryPoint(name, target) for name, target in modules.items()]
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_default_url_is_the_local_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTLAST_URL", raising=False)
    assert outlast.DEFAULT_URL == "sqlite:///./.outlast/runs.db"


def test_outlast_url_environment_variable_picks_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAST_URL", "memory://from-env")
    store = outlast.open()
    assert isinstance(store.backend, MemoryStore) and store.backend.name == "from-env"


def test_unknown_scheme_names_scheme_installed_backends_and_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_entry_points(monkeypatch)  # only the built-in stores are installed
    with pytest.raises(UnknownBackend) as caught:
        outlast.open("postgresql://app:hunter2@db.internal/runs")
    message = str(caught.value)
    assert "'postgresql'" in message
    assert "memory, sqlite" in message
    assert "pip install outlast-postgres" in message
    assert "hunter2" not in message


def test_unknown_scheme_without_a_known_package() -> None:
    with pytest.raises(UnknownBackend, match=r"'mongodb'.*install the package that provides it"):
        outlast.open("mongodb://localhost/x")


@pytest.mark.parametrize("url", ["not a url", "/just/a/path", "sqlite:"])
def test_malformed_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError, match="is not a store URL"):
        outlast.open(url)


def test_unknown_option_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option.*colour"):
        outlast.open("memory://x?colour=blue")


def test_a_broken_plugin_is_reported_by_name_and_the_host_keeps_working(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_entry_points(monkeypatch, exploding=ImportError("No module named 'psycopg'"))
    with caplog.at_level(logging.WARNING, "outlast"):
        store = outlast.open("memory://still-works")
    assert isinstance(store.backend, MemoryStore)
    (broken,) = broken_plugins()
    assert broken.name == "exploding" and "No module named 'psycopg'" in broken.error
    assert any("exploding" in r.getMessage() for r in caplog.records)


def test_a_misspelled_hook_is_caught_and_the_plugin_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = types.ModuleType("typo_plugin")

    @outlast.hookimpl
    def outlast_opne(url: str, options: dict[str, Any]) -> None:  # the typo is the point
        return None

    module.outlast_opne = outlast_opne  # type: ignore[attr-defined]
    fake_entry_points(monkeypatch, typo=module)
    assert [b.name for b in outlast.backends()] == ["memory", "sqlite"]
    (broken,) = broken_plugins()
    assert broken.name == "typo" and "outlast_opne" in broken.error
    assert not plugin_manager().has_plugin("typo")


def test_a_third_party_backend_registers_through_the_same_hooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = types.ModuleType("third_party")
    opened: list[str] = []

    @outlast.hookimpl
    def outlast_open(url: str, options: dict[str, Any]) -> object:
        if not url.startswith("thirdparty://"):
            return None
        opened.append(url)
        return MemoryStore()

    @outlast.hookimpl
    def outlast_backends() -> list[outlast.BackendInfo]:
        return [outlast.BackendInfo("thirdparty", ("thirdparty",), "outlast-thirdparty", "9.9")]

    module.outlast_open = outlast_open  # type: ignore[attr-defined]
    module.outlast_backends = outlast_backends  # type: ignore[attr-defined]
    fake_entry_points(monkeypatch, thirdparty=module)
    assert isinstance(outlast.open("thirdparty://x").backend, MemoryStore)
    assert opened == ["thirdparty://x"]
    assert "thirdparty" in [b.name for b in outlast.backends()]


@pytest.mark.asyncio
async def test_observers_see_every_durable_event(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Event] = []
    module = types.ModuleType("observer")

    @outlast.hookimpl
    def outlast_event(event: Event) -> None:
        seen.append(event)
        raise RuntimeError("a broken observer must not break the run")

    module.outlast_event = outlast_event  # type: ignore[attr-defined]
    fake_entry_points(monkeypatch, observer=module)
    executor = Executor(outlast.open("memory://"))
    executor.register("k", Agent(ScriptedModel([Message.assistant("done")])))
    await executor.run("k", run_id="r1")
    assert [e.kind for e in seen] == [
        EventKind.BEGIN,
        EventKind.ATTEMPT_START,
        EventKind.MODEL_CALL,
        EventKind.SAVE,
        EventKind.COMPLETE,
        EventKind.ATTEMPT_END,
    ]
    assert all(e.run_id == "r1" and e.duration >= 0 and e.error is None for e in seen)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db/x", "postgresql://app:***@db/x"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://db/x?user=a&password=s3cret", "postgresql://db/x?user=a&password=***"),
        ("sqlite:///./runs.db", "sqlite:///./runs.db"),
    ],
)
def test_passwords_are_redacted(url: str, shown: str) -> None:
    assert outlast.adapter.redact(url) == shown
    assert "s3cret" not in outlast.adapter.redact(url)
