"""``outlast demo``: watch a run survive the death of its process, twice.

A worker process runs a four-phase report agent (scripted model, no network)
on the store, and in its third phase a tool call stalls. The demo ends that
worker in the two ways a worker dies, and this process recovers the run each
time: it skips the two finished phases, continues the interrupted phase from
its saved transcript, and completes the SAME durable record (same run id,
epoch 2).

1. A graceful stop (SIGTERM, as in a deploy): the worker releases the run on
   its way out, and recovery takes it at once.
2. A crash (``kill -9``, as in an OOM kill): nothing is released, so recovery
   must wait for the run's lease to expire. The demo gives that worker a short
   lease (:data:`CRASH_LEASE`) so nobody waits long.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence

import click

from outlast.errors import Shutdown
from outlast.executor import Executor
from outlast.messages import JSON, JSONObject, Message, ToolCall
from outlast.model import ScriptedModel, Tool
from outlast.plugins import open as open_store
from outlast.ports import CheckpointerFactory, StoredRun
from outlast.runs import Phase, Plan, RunResult
from outlast.urls import redact

KIND = "demo.report"
NAMESPACE = "outlast-demo"
STALL_ENV = "OUTLAST_DEMO_STALL"
LEASE = 10.0
"""The lease of the graceful part's worker (a release makes its length moot)."""
CRASH_LEASE = 3.0
"""The lease of the crash part's worker: how long recovery waits after kill -9
(at most; Executor's default is 30 s)."""


def _call(call_id: str, tool: str, **arguments: JSON) -> Message:
    return Message.assistant(None, (ToolCall(call_id, tool, dict(arguments)),))


SCRIPT: dict[str, Sequence[Message]] = {
    "research": [
        _call("r1", "search", query="why agent runs die in production"),
        Message.assistant("Deploys, OOM kills and node drains end long runs mid-way."),
    ],
    "outline": [
        Message.assistant("1. The cost of a lost run  2. Checkpoints  3. Fencing"),
    ],
    "draft": [
        _call("d1", "write_section", title="The cost of a lost run"),
        _call("d2", "write_section", title="Checkpoints"),
        _call("d3", "write_section", title="Fencing"),
        Message.assistant("Draft complete: three sections written."),
    ],
    "review": [
        Message.assistant("Final report: save the delta, fence by epoch, resume by position."),
    ],
}


def _say(text: str) -> None:
    click.echo(text)


class NarratingModel(ScriptedModel):
    """The scripted model, printing each reply so a newcomer can follow."""

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        reply = await super().complete(messages, tools)
        phase = messages[0].meta.get("phase")
        what = ", ".join(f"{c.name}({c.arguments})" for c in reply.tool_calls) or reply.text
        _say(f"    [{phase}] model: {what}")
        return reply


async def _search(arguments: JSONObject) -> JSON:
    return {"results": [f"notes about {arguments.get('query')}"]}


async def _write_section(arguments: JSONObject) -> JSON:
    title = arguments.get("title")
    if title == "Fencing" and os.environ.get(STALL_ENV) == "1":
        _say("    [draft] tool: write_section('Fencing') is slow... (this worker stalls here)")
        sys.stdout.flush()
        await asyncio.Event().wait()  # stands for a long tool call; a signal ends it
    _say(f"    [draft] tool: wrote section {title!r}")
    return {"written": title}


def report_plan(_input: JSON) -> Plan:
    """The demo agent: research, outline, draft (with tools), review."""
    tools = [
        Tool("search", "search notes", _search),
        Tool("write_section", "write one section", _write_section),
    ]
    return Plan(
        model=NarratingModel(SCRIPT),
        system="You write short technical reports.",
        phases=[
            Phase("research", "Research the topic.", tools=tools),
            Phase("outline", "Outline the report."),
            Phase("draft", "Draft every section of the outline.", tools=tools),
            Phase("review", "Review the draft and give the final report."),
        ],
    )


def app(store: CheckpointerFactory, lease: float = LEASE) -> Executor:
    """The demo application, as ``outlast recover outlast.demo:app`` loads it."""
    executor = Executor(store, namespace=NAMESPACE, owner=f"demo-pid-{os.getpid()}", lease=lease)
    executor.register(KIND, report_plan)
    return executor


async def _worker(url: str, run_id: str, lease: float) -> int:
    store = open_store(url)
    executor = app(store, lease)
    try:
        with executor.handle_signals():
            await executor.run(KIND, {"topic": "durable agents"}, run_id=run_id)
    except Shutdown:
        _say("    worker: SIGTERM -> shutdown: run released for recovery; exiting")
        return 0
    except Exception as exc:  # noqa: BLE001 - the worker reports how its run ended
        _say(f"    worker: run ended with {type(exc).__name__}: {exc}")
        return 3
    finally:
        await store.close()
    return 0


async def _wait_for(
    store: CheckpointerFactory,
    run_id: str,
    condition: Callable[[StoredRun], bool],
    worker: asyncio.subprocess.Process | None = None,
) -> StoredRun:
    """Poll the store until ``condition`` holds (the caller bounds the wait)."""
    while True:
        stored = await store.load(run_id, NAMESPACE)
        if stored is not None and condition(stored):
            return stored
        if worker is not None and worker.returncode is not None:
            raise click.ClickException(f"the worker exited early with code {worker.returncode}")
        await asyncio.sleep(0.05)


def _mid_draft(stored: StoredRun) -> bool:
    """Two phases done and the draft's first two tool calls saved: the third stalls."""
    return len(stored.state.phases) == 2 and len(stored.state.history) >= 6


async def _interrupt(
    store: CheckpointerFactory,
    url: str,
    run_id: str,
    lease: float,
    sig: signal.Signals,
    wait: float,
) -> tuple[StoredRun, int]:
    """Start a worker on ``run_id``, send it ``sig`` mid-draft, wait for its exit.

    Returns what was saved when the signal went out and the worker's exit code.
    """
    env = {**os.environ, STALL_ENV: "1", "PYTHONUNBUFFERED": "1"}
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "outlast.demo", "--worker", url, run_id, str(lease), env=env
    )
    how = "SIGTERM" if sig is signal.SIGTERM else "SIGKILL (kill -9)"
    try:
        async with asyncio.timeout(wait):
            stalled = await _wait_for(store, run_id, _mid_draft, worker)
        _say(
            f"\n   Mid-phase: {len(stalled.state.phases)} phases done, the 'draft' phase has "
            f"{len(stalled.state.history)} messages saved. Sending {how} to the worker "
            f"(pid {worker.pid})..."
        )
        worker.send_signal(sig)
        async with asyncio.timeout(wait):
            code = await worker.wait()
    except TimeoutError as exc:
        raise click.ClickException(f"timed out after {wait}s waiting for the worker") from exc
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    return stalled, code


async def _recover(store: CheckpointerFactory, run_id: str) -> RunResult:
    """Recover interrupted runs in this process; the result of ``run_id``."""
    report = await app(store).recover()
    for result in report.results:
        if result.run_id == run_id:
            return result
    problem = report.errors.get(run_id) or report.skipped.get(run_id) or "it was not claimable"
    raise click.ClickException(f"run {run_id} was not recovered: {problem}")


def _done(result: RunResult, stalled: StoredRun) -> None:
    skipped = ", ".join(p.name for p in result.phases[: result.skipped_phases])
    _say(
        f"   Done. Same durable record: run {result.run_id}, epoch {result.epoch}.\n"
        f"   Skipped finished phases: {skipped}; 'draft' continued from "
        f"{len(stalled.state.history)} saved messages.\n"
        "   The reply that called the stalled tool was saved before the tool ran, so the\n"
        "   model was not asked again: only that tool call ran again.\n"
        f"   Final answer: {result.output}"
    )


async def _graceful(store: CheckpointerFactory, url: str, wait: float) -> str:
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    _say("A. A graceful stop: SIGTERM, as a deploy or Ctrl-C sends it.\n")
    _say(
        f"1. A worker process starts run {run_id}, a plan of 4 phases. It holds the run\n"
        f"   at epoch 1 under a {LEASE:g}-second lease.\n"
        "   (lease: how long a worker owns a run without renewing it; it renews in the "
        "background.)\n"
        "   (epoch: counts the run's owners; the store refuses writes from an older epoch, "
        "so a\n    stale worker can never overwrite the new owner's progress.)"
    )
    stalled, code = await _interrupt(store, url, run_id, LEASE, signal.SIGTERM, wait)
    released = await store.load(run_id, NAMESPACE)
    assert released is not None
    _say(
        f"   The worker exited ({code}); the record is {released.record.status}, "
        f"epoch {released.record.epoch}, lease released: "
        f"{released.record.lease_expires_at is None}\n"
    )
    _say("2. This process recovers interrupted runs at once (a released run is free to take):")
    result = await _recover(store, run_id)
    _done(result, stalled)
    return run_id


async def _crash(store: CheckpointerFactory, url: str, wait: float) -> str:
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    _say("\nB. A crash: kill -9, as an OOM kill or a lost machine does it.\n")
    _say(
        f"3. A worker process starts run {run_id} with a {CRASH_LEASE:g}-second lease "
        "(the default is 30 s)."
    )
    stalled, code = await _interrupt(store, url, run_id, CRASH_LEASE, signal.SIGKILL, wait)
    killed = await store.load(run_id, NAMESPACE)
    assert killed is not None and killed.record.lease_expires_at is not None
    left = max(0.0, killed.record.lease_expires_at - time.time())
    _say(
        f"   The worker was killed ({code}) and released nothing: the record is "
        f"{killed.record.status}, epoch {killed.record.epoch}, still leased to "
        f"{killed.record.owner} for {left:.1f} s."
    )
    report = await app(store).recover()
    early = next((r for r in report.results if r.run_id == run_id), None)
    _say(
        f"   recover() right now: {'took it' if early else 'does not take it'}. To the store a "
        "killed worker looks like a slow one\n"
        "   that is still working, so nobody may take the run before its lease expires: "
        "after a crash,\n"
        "   recovery waits up to one lease (Executor(lease=...)). A shorter lease recovers "
        "sooner, but a\n"
        "   worker that cannot renew in time (a blocked event loop, a long pause) loses its "
        "runs.\n"
    )
    if early is None:
        _say(f"4. Waiting {left:.1f} s for the lease to expire, then recovering:")
        try:
            async with asyncio.timeout(wait):
                await _wait_for(store, run_id, _lease_expired)
        except TimeoutError as exc:
            raise click.ClickException(f"the lease of {run_id} did not expire in {wait}s") from exc
    result = early or await _recover(store, run_id)
    _done(result, stalled)
    recovered = await store.load(run_id, NAMESPACE)
    assert recovered is not None
    _say(
        f"   Crashes counted: {recovered.record.crashes} (a release is never a crash; a run "
        "whose workers crash\n"
        "   more than max_crashes times is failed as a PoisonRun instead of running again)."
    )
    return run_id


def _lease_expired(stored: StoredRun) -> bool:
    expires = stored.record.lease_expires_at
    return expires is None or expires <= time.time()


async def run_demo(url: str, wait: float = 60.0) -> str:
    """The whole demo; returns the final answer. Raises ClickException on trouble.

    ``wait`` bounds each wait on a worker or a lease, in seconds.
    """
    store = open_store(url)
    _say(f"outlast demo: store {redact(url)}\n")
    try:
        graceful = await _graceful(store, url, wait)
        crashed = await _crash(store, url, wait)
        final = await store.load(crashed, NAMESPACE)
    finally:
        await store.close()
    assert final is not None
    _say(
        f"\nInspect them: outlast runs show {graceful} --namespace {NAMESPACE}\n"
        f"              outlast runs show {crashed} --namespace {NAMESPACE}"
    )
    return str(final.record.result)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        sys.exit(asyncio.run(_worker(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
    sys.exit("usage: outlast demo (this module's --worker mode is internal)")
