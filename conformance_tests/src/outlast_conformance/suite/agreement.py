"""The store agrees with outlast.transitions, the state machine written once.

Each step does one write on the store and the same transition on the record
the store held before it; the record the store holds after it must be the
one the transition computed (times compared with the store's own clock:
``updated_at`` is taken from the store, everything else must match).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import fields

import pytest

from outlast.adapter import (
    JSON,
    CheckpointerFactory,
    Claim,
    LeaseLost,
    RunRecord,
    RunStart,
    transitions,
)
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.support import (
    conversation,
    must_load,
    start,
    state,
    wait_interrupted,
)

TOLERANCE = 0.01
"""Seconds a stored lease expiry may differ from updated_at + lease (a store
that keeps milliseconds rounds)."""


def differences(actual: RunRecord, expected: RunRecord) -> list[str]:
    """What differs between two records, times aside (see the module docstring)."""
    found = []
    for field in fields(RunRecord):
        name = field.name
        if name in ("updated_at", "lease_expires_at", "created_at"):
            continue
        if getattr(actual, name) != getattr(expected, name):
            found.append(
                f"{name}: store has {getattr(actual, name)!r}, expected {getattr(expected, name)!r}"
            )
    if (actual.lease_expires_at is None) != (expected.lease_expires_at is None):
        found.append(
            f"lease_expires_at: store has {actual.lease_expires_at!r}, "
            f"expected {expected.lease_expires_at!r}"
        )
    elif (
        actual.lease_expires_at is not None
        and expected.lease_expires_at is not None
        and abs(actual.lease_expires_at - expected.lease_expires_at) > TOLERANCE
    ):
        found.append(
            f"lease_expires_at: store has updated_at + "
            f"{actual.lease_expires_at - actual.updated_at:.3f}s, expected + "
            f"{expected.lease_expires_at - actual.updated_at:.3f}s"
        )
    if abs(actual.created_at - expected.created_at) > TOLERANCE:
        found.append(f"created_at moved from {expected.created_at} to {actual.created_at}")
    return found


Model = Callable[[RunRecord, float], RunRecord | None]


class TransitionAgreementTests(StoreFixtures):
    """Every write leaves the record outlast.transitions computes."""

    async def _step(
        self,
        factory: CheckpointerFactory,
        namespace: str,
        run_id: str,
        what: str,
        write: Callable[[], Awaitable[object]],
        model: Model,
    ) -> object:
        """Do ``write`` on the store, check it against ``model`` (a transition)
        and return what the write returned."""
        before = (await must_load(factory, run_id, namespace)).record
        refused: LeaseLost | None = None
        outcome: object = None
        try:
            outcome = await write()
        except LeaseLost as exc:
            refused = exc
        after = (await must_load(factory, run_id, namespace)).record
        try:
            expected = model(before, after.updated_at)
        except LeaseLost:
            assert refused is not None, (
                f"{what}: transitions refuse it (LeaseLost), the store wrote"
            )
            assert differences(after, before) == [] and after.updated_at == before.updated_at, (
                f"{what}: a refused write changed the record"
            )
            return outcome
        assert refused is None, f"{what}: the store refused it ({refused}); transitions allow it"
        if expected is None:  # a claim or quarantine the transition refuses
            assert outcome in (None, False), f"{what}: transitions refuse it, the store did it"
            assert differences(after, before) == [], f"{what}: a refused write changed the record"
            return outcome
        problems = differences(after, expected)
        assert problems == [], f"{what}: the store's record disagrees with transitions: {problems}"
        assert after.updated_at >= before.updated_at, f"{what}: updated_at moved backwards"
        return outcome

    @pytest.mark.asyncio
    async def test_begin_save_renew_release_claim_and_fail_agree_with_transitions(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """One run through begin, save, renew, release, a claim (no crash), a
        stale writer, a refused claim of a live lease, a lease left to
        expire and claimed (a crash), fail, and writes after the end."""
        run: RunStart = start(namespace, kind="agree", input={"n": 1}, lease=3600)
        rid = run.run_id
        first = await factory.begin(run)
        begun = (await must_load(factory, rid, namespace)).record
        expected = transitions.begin(run, {"n": 1}, begun.updated_at, incarnation=begun.incarnation)
        assert differences(begun, expected) == [], differences(begun, expected)
        assert begun.incarnation, "begin must draw a non-empty incarnation"
        inc = begun.incarnation

        async def step(what: str, write: Callable[[], Awaitable[object]], model: Model) -> object:
            return await self._step(factory, namespace, rid, what, write, model)

        def claim(owner: str, lease: float) -> Callable[[], Awaitable[Claim | None]]:
            return lambda: factory.claim(rid, owner=owner, lease=lease, namespace=namespace)

        def claimed(owner: str, lease: float) -> Model:
            return lambda r, now: transitions.claim(r, owner=owner, lease=lease, now=now)

        await step(
            "save",
            lambda: first.save(state(conversation(2))),
            lambda r, now: transitions.save(r, 1, inc, now),
        )
        await step("renew", first.renew, lambda r, now: transitions.renew(r, 1, inc, now))
        await step("release", first.release, lambda r, now: transitions.release(r, 1, inc, now))
        second = await step("a claim of a released run", claim("b", 3600), claimed("b", 3600))
        assert isinstance(second, Claim)
        await step(
            "a stale save",
            lambda: first.save(state(conversation(3))),
            lambda r, now: transitions.save(r, 1, inc, now),
        )
        await step("a claim of a live lease", claim("c", 30), claimed("c", 30))
        await step(
            "a release",
            second.checkpointer.release,
            lambda r, now: transitions.release(r, 2, inc, now),
        )
        short = self.capabilities.lease_resolution
        third = await step("a claim with a short lease", claim("d", short), claimed("d", short))
        assert isinstance(third, Claim)
        await wait_interrupted(factory, rid, namespace, within=self.capabilities.wait_timeout)
        fourth = await step("a claim of an expired lease", claim("e", 3600), claimed("e", 3600))
        assert isinstance(fourth, Claim)
        record = (await must_load(factory, rid, namespace)).record
        assert (record.attempts, record.crashes, record.epoch) == (4, 1, 4), (
            "four begins/claims, one of them after a lease expired: attempts 4, crashes 1"
        )
        await step(
            "fail by a stale epoch",
            lambda: third.checkpointer.fail("stale"),
            lambda r, now: transitions.fail(r, 3, inc, "stale", now),
        )
        await step(
            "fail",
            lambda: fourth.checkpointer.fail("boom ✗"),
            lambda r, now: transitions.fail(r, 4, inc, "boom ✗", now),
        )
        await step(
            "a save after fail",
            lambda: fourth.checkpointer.save(state(conversation(4))),
            lambda r, now: transitions.save(r, 4, inc, now),
        )
        await step("a claim of a failed run", claim("g", 30), claimed("g", 30))

    @pytest.mark.asyncio
    async def test_complete_and_quarantine_agree_with_transitions(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """complete, writes after it, a quarantine refused for a live lease,
        and a quarantine of an interrupted run."""
        done = await factory.begin(start(namespace, lease=3600))
        inc = (await must_load(factory, done.run_id, namespace)).record.incarnation
        await self._step(
            factory,
            namespace,
            done.run_id,
            "complete",
            lambda: done.complete({"answer": [1, None]}),
            lambda r, now: transitions.complete(r, 1, inc, {"answer": [1, None]}, now),
        )
        await self._step(
            factory,
            namespace,
            done.run_id,
            "a release after complete",
            done.release,
            lambda r, now: transitions.release(r, 1, inc, now),
        )

        held = await factory.begin(start(namespace, lease=3600))
        await self._step(
            factory,
            namespace,
            held.run_id,
            "quarantine of a live lease",
            lambda: factory.quarantine(held.run_id, "CorruptCheckpoint: x", namespace),
            lambda r, now: transitions.quarantine(r, "CorruptCheckpoint: x", now),
        )
        await held.save(state(conversation(2)))
        await held.release()
        await self._step(
            factory,
            namespace,
            held.run_id,
            "quarantine of an interrupted run",
            lambda: factory.quarantine(held.run_id, "CorruptCheckpoint: y", namespace),
            lambda r, now: transitions.quarantine(r, "CorruptCheckpoint: y", now),
        )

    @pytest.mark.asyncio
    async def test_submit_claim_next_and_cancel_agree_with_transitions(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A submitted run, its first claim (a start: no crash), a cancel of
        the owned run (flagged), and a cancel of an unowned one (failed)."""
        run = start(namespace, kind="agree", input=[1, "two"], lease=3600)
        await factory.submit(run)
        queued = (await must_load(factory, run.run_id, namespace)).record
        expected = transitions.submit(
            run, [1, "two"], queued.updated_at, incarnation=queued.incarnation
        )
        assert differences(queued, expected) == [], differences(queued, expected)

        async def step(what: str, write: Callable[[], Awaitable[object]], model: Model) -> object:
            return await self._step(factory, namespace, run.run_id, what, write, model)

        claim = await step(
            "claim_next of a queued run",
            lambda: factory.claim_next(["agree"], owner="b", lease=3600, namespace=namespace),
            lambda r, now: transitions.claim(r, owner="b", lease=3600, now=now),
        )
        assert isinstance(claim, Claim)
        await step(
            "cancel of an owned run",
            lambda: factory.cancel(run.run_id, namespace),
            lambda r, now: transitions.cancel(r, now),
        )
        inc = queued.incarnation
        await step(
            "a release after the cancel request",
            claim.checkpointer.release,
            lambda r, now: transitions.release(r, 1, inc, now),
        )
        await step(
            "cancel of a released run",
            lambda: factory.cancel(run.run_id, namespace),
            lambda r, now: transitions.cancel(r, now),
        )

    @pytest.mark.asyncio
    async def test_wait_send_and_a_timed_out_wait_agree_with_transitions(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """A wait, a refused write of the parked checkpointer, a send and
        the claim after it; a wait that times out and its claim; a cancel
        of a waiting run."""
        run = start(namespace, kind="agree", lease=3600)
        cp = await factory.begin(run)
        inc = (await must_load(factory, run.run_id, namespace)).record.incarnation

        async def step(what: str, write: Callable[[], Awaitable[object]], model: Model) -> object:
            return await self._step(factory, namespace, run.run_id, what, write, model)

        request: JSON = {"ask": "approve?"}
        await step(
            "wait without a timeout",
            lambda: cp.wait(request, None),
            lambda r, now: transitions.wait(r, 1, inc, request, None, now),
        )
        await step(
            "a save of the parked checkpointer",
            lambda: cp.save(state(conversation(1))),
            lambda r, now: transitions.save(r, 1, inc, now),
        )
        await step(
            "send",
            lambda: factory.send(run.run_id, {"payload": 1}, namespace),
            lambda r, now: transitions.send(r, {"payload": 1}, now),
        )
        claim = await step(
            "claim after a send",
            lambda: factory.claim(run.run_id, owner="b", lease=3600, namespace=namespace),
            lambda r, now: transitions.claim(r, owner="b", lease=3600, now=now),
        )
        assert isinstance(claim, Claim)
        second = claim.checkpointer
        await step(
            "wait with a timeout",
            lambda: second.wait(request, 0.05),
            lambda r, now: transitions.wait(r, 2, inc, request, 0.05, now),
        )
        within = self.capabilities.wait_timeout
        await wait_interrupted(factory, run.run_id, namespace, within=within)
        claim = await step(
            "claim of a wait that timed out",
            lambda: factory.claim(run.run_id, owner="c", lease=3600, namespace=namespace),
            lambda r, now: transitions.claim(r, owner="c", lease=3600, now=now),
        )
        assert isinstance(claim, Claim)
        third = claim.checkpointer
        await step(
            "another wait",
            lambda: third.wait(request, None),
            lambda r, now: transitions.wait(r, 3, inc, request, None, now),
        )
        await step(
            "cancel of a waiting run",
            lambda: factory.cancel(run.run_id, namespace),
            lambda r, now: transitions.cancel(r, now),
        )
