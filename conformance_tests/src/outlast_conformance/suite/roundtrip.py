"""State round-trips: what is saved loads back equal, whatever it holds."""

from __future__ import annotations

import pytest

from outlast.adapter import JSON, CheckpointerFactory, Message, PhaseOutput, RunStatus
from outlast_conformance.fixtures import Reopen, StoreFixtures
from outlast_conformance.support import conversation, must_load, start, state, tool_exchange

MULTI_MEGABYTE = 3 * 1024 * 1024


class RoundTripTests(StoreFixtures):
    """Messages, phases, inputs and results come back exactly as saved."""

    @pytest.mark.asyncio
    async def test_unicode_and_nulls_round_trip(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Non-ASCII text (CJK, emoji, RTL, combining marks, NUL-free control
        characters) and null content/fields load back unchanged."""
        history = (
            Message.system("Réponds en français, s'il te plaît. 日本語もOK 🚀"),
            Message.user('مرحبا — שלום — Ελληνικά — e\u0301 — tab\tnew\nline "quoted" \\'),
            Message.assistant(None),
            Message("assistant", "", name=None, meta={"note": None, "emoji": "🧪"}),
        )
        cp = await factory.begin(start(namespace))
        await cp.save(state(history))
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.state.history == history

    @pytest.mark.asyncio
    async def test_nested_json_and_multimodal_content_round_trip(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Content given as a list of parts and deeply nested ``meta`` JSON
        (numbers, booleans, nulls, empty containers) round-trip exactly."""
        parts: list[object] = [
            {"type": "text", "text": "look at this"},
            {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
            {"type": "data", "value": [1, 2.5, -3e-7, True, False, None, [], {}]},
        ]
        meta = {"trace": {"spans": [{"id": 1, "tags": {"k": ["v", None]}}]}, "big": 2**53}
        message = Message("user", parts, meta=meta)  # type: ignore[arg-type]  # JSON parts
        cp = await factory.begin(start(namespace))
        await cp.save(state((message,)))
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.state.history == (message,)
        assert stored.state.history[0].meta["big"] == 2**53

    @pytest.mark.asyncio
    async def test_tool_calls_round_trip(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """An assistant message with tool calls and the tool's reply (call id,
        tool name, nested arguments) load back unchanged."""
        history = (Message.user("find it"), *tool_exchange("call-ü"))
        cp = await factory.begin(start(namespace))
        await cp.save(state(history))
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.state.history == history
        call = stored.state.history[1].tool_calls[0]
        assert (call.id, call.name) == ("call-ü", "lookup")
        assert stored.state.history[2].tool_call_id == "call-ü"

    @pytest.mark.asyncio
    async def test_multi_megabyte_message_round_trips(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A 3 MiB message (multi-byte characters included) saves and loads intact."""
        big = ("outlast ✓ " * (MULTI_MEGABYTE // 10))[:MULTI_MEGABYTE]
        history = (Message.user("summarise"), Message.tool("c1", "read_file", big))
        cp = await factory.begin(start(namespace))
        await cp.save(state(history))
        stored = await must_load(factory, cp.run_id, namespace)
        assert len(stored.state.history) == 2
        assert stored.state.history[1].content == big

    @pytest.mark.asyncio
    async def test_phases_round_trip(self, factory: CheckpointerFactory, namespace: str) -> None:
        """Completed phase outputs (JSON outputs, summaries or None, repeated
        names) load back in order, with the current phase's transcript."""
        phases = (
            PhaseOutput("research", {"facts": ["a", "b"], "score": 0.5}, "found two facts"),
            PhaseOutput("research", None, None),
            PhaseOutput("draft", "plain text output"),
        )
        history = conversation(3, tag="write")
        cp = await factory.begin(start(namespace))
        await cp.save(state(history, phases))
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.state.phases == phases
        assert stored.state.history == history

    @pytest.mark.asyncio
    async def test_kind_input_and_result_round_trip(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """The run's kind and JSON input are stored with its record, and a
        completed run keeps its JSON result."""
        run_input: JSON = {"topic": "durability ✓", "depth": 3, "tags": ["a", None], "opts": {}}
        result: JSON = {"answer": "42", "citations": [{"n": 1}], "ok": True}
        cp = await factory.begin(start(namespace, kind="report.v2", input=run_input))
        loaded = await must_load(factory, cp.run_id, namespace)
        assert (loaded.record.kind, loaded.record.input) == ("report.v2", run_input)
        await cp.complete(result)
        finished = await must_load(factory, cp.run_id, namespace)
        assert finished.record.status is RunStatus.COMPLETED
        assert finished.record.result == result
        assert finished.record.input == run_input

    @pytest.mark.asyncio
    async def test_load_of_unknown_run_is_none(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Loading a run id that was never begun returns None (no error)."""
        assert await factory.load("never-begun", namespace) is None

    @pytest.mark.outlast_requires("durable")
    @pytest.mark.asyncio
    async def test_saved_state_is_durable_across_reopen(
        self, factory: CheckpointerFactory, namespace: str, reopened: Reopen
    ) -> None:
        """What one factory saved, a brand-new factory on the same storage
        loads: record, phases and transcript."""
        phases = (PhaseOutput("plan", {"steps": 2}),)
        history = (*conversation(4), *tool_exchange())
        cp = await factory.begin(start(namespace, kind="durable", input={"n": 1}))
        await cp.save(state(history, phases))
        fresh = await reopened()
        stored = await must_load(fresh, cp.run_id, namespace)
        assert stored.state.phases == phases
        assert stored.state.history == history
        assert (stored.record.kind, stored.record.input) == ("durable", {"n": 1})
        assert (stored.record.status, stored.record.epoch) == (RunStatus.RUNNING, 1)
