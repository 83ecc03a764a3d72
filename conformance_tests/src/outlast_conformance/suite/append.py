"""Append semantics: saves are cumulative states; the store keeps their sum."""

from __future__ import annotations

import pytest

from outlast.adapter import CheckpointerFactory, CheckpointStateError, Message, PhaseOutput
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.support import conversation, must_load, start, state

GROWING_SAVES = 40


class AppendTests(StoreFixtures):
    """Many saves of a growing transcript, phase boundaries, repeated saves."""

    @pytest.mark.asyncio
    async def test_growing_transcript_loads_back_exactly(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Forty saves, each adding one to three messages, load back as
        exactly the full transcript: nothing lost, duplicated or reordered."""
        cp = await factory.begin(start(namespace))
        history: list[Message] = []
        for step in range(GROWING_SAVES):
            history.extend(conversation(1 + step % 3, tag=f"s{step}-"))
            await cp.save(state(tuple(history)))
            if step % 10 == 9:
                stored = await must_load(factory, cp.run_id, namespace)
                assert stored.state.history == tuple(history)
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.state.history == tuple(history)
        assert len(history) == sum(1 + step % 3 for step in range(GROWING_SAVES))

    @pytest.mark.asyncio
    async def test_history_restarts_at_phase_boundary(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """When a phase completes the history starts empty again: load shows
        the completed phases and only the new phase's transcript."""
        cp = await factory.begin(start(namespace))
        first = conversation(4, tag="research-")
        await cp.save(state(first))
        done = (PhaseOutput("research", {"facts": 3}),)
        await cp.save(state((), done))
        stored = await must_load(factory, cp.run_id, namespace)
        assert (stored.state.phases, stored.state.history) == (done, ())
        second = conversation(2, tag="draft-")
        await cp.save(state(second, done))
        await cp.save(state((*second, *conversation(1, tag="more-")), done))
        stored = await must_load(factory, cp.run_id, namespace)
        assert stored.state.phases == done
        assert stored.state.history == (*second, *conversation(1, tag="more-"))

    @pytest.mark.asyncio
    async def test_phase_boundary_in_one_save(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A save that adds a phase and already holds messages of the next
        phase (no save in between) loads back as that state."""
        cp = await factory.begin(start(namespace))
        await cp.save(state(conversation(3, tag="a-")))
        phases = (PhaseOutput("a", 1), PhaseOutput("b", 2))
        history = conversation(2, tag="c-")
        await cp.save(state(history, phases))
        stored = await must_load(factory, cp.run_id, namespace)
        assert (stored.state.phases, stored.state.history) == (phases, history)

    @pytest.mark.asyncio
    async def test_saving_same_state_twice_is_harmless(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Saving an unchanged state again (and an empty state first) changes
        nothing: the transcript is not duplicated."""
        cp = await factory.begin(start(namespace))
        await cp.save(state())
        history = conversation(3)
        phases = (PhaseOutput("p", "out"),)
        await cp.save(state(history, phases))
        await cp.save(state(history, phases))
        await cp.save(state(history, phases))
        stored = await must_load(factory, cp.run_id, namespace)
        assert (stored.state.phases, stored.state.history) == (phases, history)

    @pytest.mark.asyncio
    async def test_rewriting_saved_history_is_refused(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A save with fewer messages (same phase) or fewer phases than were
        saved raises CheckpointStateError, and the saved state is unchanged."""
        cp = await factory.begin(start(namespace))
        phases = (PhaseOutput("p", 1),)
        history = conversation(4)
        await cp.save(state(history, phases))
        with pytest.raises(CheckpointStateError):
            await cp.save(state(history[:2], phases))
        with pytest.raises(CheckpointStateError):
            await cp.save(state(history, ()))
        stored = await must_load(factory, cp.run_id, namespace)
        assert (stored.state.phases, stored.state.history) == (phases, history)
