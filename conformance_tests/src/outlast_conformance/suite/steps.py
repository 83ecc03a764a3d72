"""Write-ahead steps end to end: a worker killed mid-tool, a stalled worker, a
parked run.

The model's reply is durable before any of its tools runs, so a worker that
dies in the middle of a tool (a real SIGKILL of a real process here) leaves
a run the next worker finishes without asking the model again: a retryable
tool runs again with the same idempotency key, a ``retry=False`` one is
reconciled instead (or reported as of unknown outcome). A worker that stalls
until another took its run over starts no tool. A tool asking for input
parks the run until a send, and the worker that continues it gives the
input as that tool's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from outlast import (
    Executor,
    LeaseLost,
    NotWaiting,
    RunResult,
    RunStatus,
    RunWaiting,
)
from outlast.adapter import (
    JSON,
    Checkpointer,
    CheckpointerFactory,
    CheckpointState,
    RunStart,
    redact,
)
from outlast.messages import MARKER, Message
from outlast.steps import UNKNOWN_OUTCOME
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.flaky import FlakyCheckpointer, FlakyStore
from outlast_conformance.step_worker import (
    APPROVAL,
    CHARGE_CALL,
    FINAL,
    INPUT,
    KIND,
    RECONCILED,
    SCRIPT,
    Charge,
    Journal,
    agent,
)
from outlast_conformance.support import must_load, unique, wait_for, wait_interrupted

PAYLOAD: JSON = {"approved": True, "by": "ann ünïcödé", "limit": [40, None]}
USAGE = {"output_tokens": sum((reply.usage or {})["output_tokens"] for reply in SCRIPT)}
"""The usage of an uninterrupted run: every reply counted once."""


def calls_the_charge(message: Message | None) -> bool:
    return message is not None and any(call.id == CHARGE_CALL for call in message.tool_calls)


def last_reply(history: Sequence[Message]) -> Message | None:
    return next((m for m in reversed(history) if m.role == "assistant"), None)


def only_result(results: list[RunResult], run_id: str, report: object) -> RunResult:
    ran = [result.run_id for result in results]
    assert ran == [run_id], f"recovery should have completed run {run_id!r} alone: {report}"
    return results[0]


@contextlib.asynccontextmanager
async def worker_process(
    config: dict[str, JSON], stderr: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A :mod:`~outlast_conformance.step_worker` process given ``config``,
    its stderr to a file; SIGKILLed and reaped when the block ends, whatever
    happened."""
    errors = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "outlast_conformance.step_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=errors,
        )
    finally:
        os.close(errors)  # the child has its own copy
    try:
        assert process.stdin is not None
        process.stdin.write(json.dumps(config).encode() + b"\n")
        await process.stdin.drain()
        process.stdin.close()
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


class StallAfterReply(FlakyCheckpointer):
    """The store's checkpointer; once the reply calling the charge is saved,
    the whole worker stalls (as in a stop-the-world pause) until released."""

    def __init__(self, inner: Checkpointer, store: FlakyStore) -> None:
        super().__init__(inner, store)
        self.stalled = asyncio.Event()
        self.stalled_at = 0.0
        self.released = asyncio.Event()

    async def save(self, state: CheckpointState) -> bool:
        cancel_requested = await super().save(state)
        if not self.stalled.is_set() and calls_the_charge(last_reply(state.history)):
            self.stalled_at = time.monotonic()
            self.stalled.set()
            await self.released.wait()
        return cancel_requested


class StepCrashTests(StoreFixtures):
    """A reply is never asked for twice; a lost worker starts no tool; input
    parks a run."""

    async def _killed_while_charging(
        self, factory: CheckpointerFactory, namespace: str, journal: Journal, charge: Charge
    ) -> str:
        """Run the charge agent in a worker process on the store's URL, SIGKILL
        it while its charge is in flight, wait until the run is interrupted;
        its run id."""
        run_id = unique("run")
        lease = max(0.5, self.capabilities.lease_resolution)
        config: dict[str, JSON] = {
            "url": self.url(factory),
            "namespace": namespace,
            "run_id": run_id,
            "journal": str(journal.folder),
            "charge": charge,
            "lease": lease,
        }
        stderr = journal.folder / "worker.stderr"
        async with worker_process(config, stderr) as process:

            async def charging() -> bool:
                if process.returncode is not None:
                    raise AssertionError(
                        f"the worker process exited ({process.returncode}) before its charge "
                        f"was in flight; its stderr:\n{stderr.read_text(errors='replace')[-3000:]}"
                    )
                return bool(journal.tool_calls("charge"))

            await wait_for(
                charging,
                within=3 * self.capabilities.wait_timeout,  # a cold start imports the adapter
                what=f"the worker process on {redact(str(config['url']))!r} to start its charge",
            )
            stored = await must_load(factory, run_id, namespace)
            history = stored.state.history
            assert calls_the_charge(last_reply(history)), (
                "the charge tool is running but the store's transcript does not end with the "
                f"reply calling it: {[m.role for m in history]} (the reply must be durable "
                "before its tools run)"
            )
            if charge != "retryable":
                assert (history[-1].role, history[-1].tool_call_id) == (MARKER, CHARGE_CALL), (
                    "a retry=False tool is running but the store's transcript does not end "
                    f"with the note that it started: {[m.role for m in history]}"
                )
            process.kill()  # SIGKILL: no release, no finally, no flush; the lease runs out
            await asyncio.wait_for(process.wait(), self.capabilities.wait_timeout)
        await wait_interrupted(
            factory, run_id, namespace, within=self.capabilities.wait_timeout + lease
        )
        return run_id

    async def _recovered(
        self,
        factory: CheckpointerFactory,
        namespace: str,
        run_id: str,
        journal: Journal,
        charge: Charge,
    ) -> RunResult:
        """Recover the killed run in this process with the same agent."""
        executor = Executor(factory, namespace=namespace, owner="worker-b", lease=3600)
        executor.register(KIND, agent(journal, charge))
        report = await asyncio.wait_for(executor.recover(), self.capabilities.wait_timeout)
        return only_result(report.results, run_id, report)

    async def _assert_completed(
        self, factory: CheckpointerFactory, namespace: str, run_id: str, result: RunResult
    ) -> None:
        assert (result.run_id, result.output) == (run_id, FINAL)
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.result) == (RunStatus.COMPLETED, FINAL), (
            f"the recovered run ended {record.status} with {record.result!r} {record.error!r}"
        )
        assert record.crashes == 1, (
            f"a killed worker is one crash; the record says {record.crashes}"
        )
        assert record.usage == USAGE, (
            f"usage {record.usage!r}: every reply counts once, those saved before the kill too"
        )

    def _assert_model_asked_once_per_reply(self, journal: Journal, pids: tuple[int, int]) -> None:
        asked = [(entry["pid"], entry["turn"]) for entry in journal.read("model")]
        expected = [(pids[0], 0), (pids[0], 1), (pids[1], 2)]
        assert asked == expected, (
            f"the model was asked for (process, reply) {asked}; an uninterrupted run asks "
            f"{len(SCRIPT)} times, and the reply saved before the kill must not be asked for "
            f"again: {expected}"
        )
        shown = {role for entry in journal.read("model") for role in entry["roles"]}
        assert MARKER not in shown, f"the model was shown the executor's {MARKER!r} notes"

    @pytest.mark.outlast_requires("multi_process")
    @pytest.mark.asyncio
    async def test_step_killed_in_a_retryable_tool_runs_it_again_with_the_same_key(
        self, factory: CheckpointerFactory, namespace: str, tmp_path: Path
    ) -> None:
        """A worker process is SIGKILLed while a retryable tool is in flight
        (its reply saved): the worker that recovers the run runs that tool
        again with the same idempotency key, does not ask the model for the
        saved reply again, does not re-run the step before, and completes
        the run with the uninterrupted answer."""
        journal = Journal(tmp_path / "journal")
        run_id = await self._killed_while_charging(factory, namespace, journal, "retryable")
        result = await self._recovered(factory, namespace, run_id, journal, "retryable")
        await self._assert_completed(factory, namespace, run_id, result)
        charges = journal.tool_calls("charge")
        assert len(charges) == 2, f"the interrupted charge ran {len(charges)} times, not twice"
        killed, recovering = charges[0]["pid"], charges[1]["pid"]
        assert killed != recovering
        assert charges[0]["key"] == charges[1]["key"], (
            f"the retried call got idempotency key {charges[1]['key']!r}, the killed one "
            f"{charges[0]['key']!r}: a retry must get the same key"
        )
        assert [c["attempt"] for c in charges] == [1, 2], "the claim is the run's attempt 2"
        assert [c["pid"] for c in journal.tool_calls("look_up")] == [killed], (
            "a tool whose result was saved before the kill ran again"
        )
        self._assert_model_asked_once_per_reply(journal, (killed, recovering))

    async def _assert_not_charged_again(
        self, factory: CheckpointerFactory, namespace: str, tmp_path: Path, charge: Charge
    ) -> tuple[Journal, int, str]:
        """Kill a worker during a retry=False charge and recover the run; the
        journal, the recovering pid, and what the model saw as the charge's
        result."""
        journal = Journal(tmp_path / "journal")
        run_id = await self._killed_while_charging(factory, namespace, journal, charge)
        result = await self._recovered(factory, namespace, run_id, journal, charge)
        await self._assert_completed(factory, namespace, run_id, result)
        charges = journal.tool_calls("charge")
        assert len(charges) == 1, (
            f"a retry=False tool in flight when its worker died was called again: {charges}"
        )
        model = journal.read("model")
        recovering = model[-1]["pid"]
        self._assert_model_asked_once_per_reply(journal, (charges[0]["pid"], recovering))
        seen: str = model[-1]["results"].get(CHARGE_CALL)
        return journal, recovering, seen

    @pytest.mark.outlast_requires("multi_process")
    @pytest.mark.asyncio
    async def test_step_killed_in_a_never_retry_tool_is_reconciled_not_run_again(
        self, factory: CheckpointerFactory, namespace: str, tmp_path: Path
    ) -> None:
        """A worker process is SIGKILLed while a retry=False tool is in
        flight: the recovering worker does not call it again; it asks its
        reconcile hook once, with the same idempotency key, and the model
        gets the hook's answer as the tool's result."""
        journal, recovering, seen = await self._assert_not_charged_again(
            factory, namespace, tmp_path, "reconciled"
        )
        reconciled = journal.read("reconcile")
        key = journal.tool_calls("charge")[0]["key"]
        assert [(r["pid"], r["key"], r["reconciling"]) for r in reconciled] == [
            (recovering, key, True)
        ], f"the reconcile hook should be asked once, with key {key!r}: {reconciled}"
        assert seen == RECONCILED, f"the model saw {seen!r} as the charge's result"

    @pytest.mark.outlast_requires("multi_process")
    @pytest.mark.asyncio
    async def test_step_killed_in_a_never_retry_tool_without_reconcile_is_unknown(
        self, factory: CheckpointerFactory, namespace: str, tmp_path: Path
    ) -> None:
        """A worker process is SIGKILLed while a retry=False tool without a
        reconcile hook is in flight: the recovering worker does not call it
        again, and the model is told that its outcome is unknown."""
        journal, _, seen = await self._assert_not_charged_again(
            factory, namespace, tmp_path, "unreconciled"
        )
        assert journal.read("reconcile") == []
        assert seen == UNKNOWN_OUTCOME, f"the model saw {seen!r} as the charge's result"

    @pytest.mark.asyncio
    async def test_step_of_a_stalled_worker_whose_run_was_taken_over_never_starts(
        self, factory: CheckpointerFactory, namespace: str, tmp_path: Path
    ) -> None:
        """A worker stalls right after its reply is saved (a stop-the-world
        pause: no save, no renewal) until its lease expired and another
        worker claimed the run. Released, it must not start the reply's tool
        (its renewal before the tool raises LeaseLost) and must leave the
        new owner's record alone; the new owner runs the tool once, without
        asking the model for the saved reply again."""
        lease = self.capabilities.lease_resolution
        run_id = unique("run")
        begun = await factory.begin(RunStart(run_id, KIND, INPUT, namespace, "worker-a", lease))
        stalling = StallAfterReply(begun, FlakyStore(factory))
        first = Journal(tmp_path / "worker-a")
        worker_a = Executor(
            factory, namespace=namespace, owner="worker-a", lease=lease, renew_interval=3600
        )
        worker_a.register(KIND, agent(first, "retryable"))
        task = asyncio.create_task(worker_a.run(KIND, INPUT, checkpointer=stalling))
        try:
            await asyncio.wait_for(stalling.stalled.wait(), self.capabilities.wait_timeout)
            await wait_interrupted(
                factory, run_id, namespace, within=self.capabilities.wait_timeout
            )
            claim = await factory.claim(run_id, owner="worker-b", lease=3600, namespace=namespace)
            assert claim is not None, "the run whose lease expired could not be claimed"
            assert calls_the_charge(last_reply(claim.resume.history)), (
                "the claim does not hand over the reply the stalled worker saved"
            )

            # The worker counts its lease from when it got the run, a moment after the
            # store started it: its own clock must see the lease run out too.
            async def lease_ran_out_for_the_stalled_worker() -> bool:
                return time.monotonic() >= stalling.stalled_at + lease

            await wait_for(
                lease_ran_out_for_the_stalled_worker,
                within=self.capabilities.wait_timeout,
                what="the stalled worker's own clock to pass its lease",
            )
        except BaseException:
            stalling.released.set()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        stalling.released.set()
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(task, self.capabilities.wait_timeout)
        assert first.tool_calls("charge") == [], (
            "the stalled worker started the charge of a run another worker had claimed: "
            "before a tool starts, an expired lease must be renewed, and the store must "
            "refuse that renewal (LeaseLost) once the run was claimed at a later epoch"
        )
        stored = await must_load(factory, run_id, namespace)
        record = stored.record
        assert (record.status, record.epoch, record.owner) == (RunStatus.RUNNING, 2, "worker-b")
        assert stored.state.history == claim.resume.history, "the stalled worker wrote again"

        second = Journal(tmp_path / "worker-b")
        worker_b = Executor(factory, namespace=namespace, owner="worker-b", lease=3600)
        worker_b.register(KIND, agent(second, "retryable"))
        result = await asyncio.wait_for(
            worker_b.run(
                KIND,
                INPUT,
                resume=claim.resume,
                checkpointer=claim.checkpointer,
                claimed=claim.record,
            ),
            self.capabilities.wait_timeout,
        )
        assert result.output == FINAL
        assert len(second.tool_calls("charge")) == 1
        assert [entry["turn"] for entry in second.read("model")] == [2], (
            "the new owner asked the model again for the reply the stalled worker saved"
        )
        assert len(first.tool_calls("look_up")) == 1 and second.tool_calls("look_up") == []

    @pytest.mark.asyncio
    async def test_step_awaiting_input_parks_the_run_until_a_send_continues_it(
        self, factory: CheckpointerFactory, namespace: str, tmp_path: Path
    ) -> None:
        """A tool raising AwaitInput parks the run: Executor.run raises
        RunWaiting, the record is ``waiting`` with the request and no lease,
        and recovery leaves it alone. Executor.send delivers once (a second
        send raises NotWaiting); a worker then continues the run with the
        payload as the tool's result, without calling the tool or asking the
        model for the parked reply again."""
        run_id = unique("run")
        first = Journal(tmp_path / "worker-a")
        worker_a = Executor(factory, namespace=namespace, owner="worker-a")
        worker_a.register(KIND, agent(first, "awaits_input"))
        with pytest.raises(RunWaiting) as waiting:
            await worker_a.run(KIND, INPUT, run_id=run_id)
        assert (waiting.value.run_id, waiting.value.request) == (run_id, APPROVAL)
        stored = await must_load(factory, run_id, namespace)
        record = stored.record
        assert (record.status, record.lease_expires_at, record.delivery) == (
            RunStatus.WAITING,
            None,
            None,
        )
        assert record.wait == {
            "call": CHARGE_CALL,
            "tool": "charge",
            "request": APPROVAL,
            "timeout": None,
            "on_timeout": {"fail": True},
        }
        assert calls_the_charge(last_reply(stored.state.history))

        second = Journal(tmp_path / "worker-b")
        worker_b = Executor(factory, namespace=namespace, owner="worker-b")
        worker_b.register(KIND, agent(second, "awaits_input"))
        early = await asyncio.wait_for(worker_b.recover(), self.capabilities.wait_timeout)
        assert (early.results, early.errors, early.waiting) == ([], {}, []), (
            f"recovery took a run that waits for input: {early}"
        )
        sent = await worker_a.send(run_id, PAYLOAD)
        assert (sent.status, sent.delivery) == (RunStatus.RUNNING, {"payload": PAYLOAD})
        with pytest.raises(NotWaiting):
            await worker_a.send(run_id, {"approved": False})
        report = await asyncio.wait_for(worker_b.recover(), self.capabilities.wait_timeout)
        result = only_result(report.results, run_id, report)
        assert result.output == FINAL
        assert [entry["turn"] for entry in second.read("model")] == [2], (
            "the model was asked again for the parked reply, or not asked for the answer"
        )
        assert len(first.tool_calls("charge")) == 1 and second.tool_calls("charge") == [], (
            "the tool that asked for input was called again instead of given the delivery"
        )
        seen = second.read("model")[0]["results"].get(CHARGE_CALL)
        assert json.loads(seen) == PAYLOAD, f"the model saw {seen!r} as the tool's result"
        record = (await must_load(factory, run_id, namespace)).record
        assert (record.status, record.result, record.crashes) == (RunStatus.COMPLETED, FINAL, 0)
