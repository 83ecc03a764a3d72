"""``outlast demo``: watch a run survive the death of its process.

A worker process runs a four-phase report agent (scripted model, no network)
on the store. In its third phase a tool call stalls; the demo sends that
process a real SIGTERM, the worker releases the run and exits. This process
then recovers the run: it skips the two finished phases, continues the
interrupted phase from its saved transcript, and completes the SAME durable
record (same run id, epoch 2).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Callable, Sequence

import click

from outlast.errors import Shutdown
from outlast.executor import Executor
from outlast.messages import JSON, JSONObject, Message, ToolCall
from outlast.model import ScriptedModel, Tool
from outlast.plugins import open as open_store
from outlast.ports import CheckpointerFactory, StoredRun
from outlast.runs import Phase, Plan
from outlast.urls import redact

KIND = "demo.report"
NAMESPACE = "outlast-demo"
STALL_ENV = "OUTLAST_DEMO_STALL"


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
        await asyncio.Event().wait()  # stands for a long tool call; SIGTERM ends it
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


def app(store: CheckpointerFactory) -> Executor:
    """The demo application, as ``outlast recover outlast.demo:app`` loads it."""
    executor = Executor(store, namespace=NAMESPACE, owner=f"demo-pid-{os.getpid()}", lease=10.0)
    executor.register(KIND, report_plan)
    return executor


async def _worker(url: str, run_id: str) -> int:
    store = open_store(url)
    executor = app(store)
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
    worker: asyncio.subprocess.Process,
) -> StoredRun:
    """Poll the store until ``condition`` holds (the caller bounds the wait)."""
    while True:
        stored = await store.load(run_id, NAMESPACE)
        if stored is not None and condition(stored):
            return stored
        if worker.returncode is not None:
            raise click.ClickException(f"the worker exited early with code {worker.returncode}")
        await asyncio.sleep(0.05)


async def run_demo(url: str, wait: float = 60.0) -> str:
    """The whole demo; returns the final answer. Raises ClickException on trouble.

    ``wait`` bounds each wait on the worker, in seconds.
    """
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    store = open_store(url)
    _say(f"outlast demo: store {redact(url)}, run {run_id}\n")
    _say("1. A worker process starts the run (a plan of 4 phases):")
    env = {**os.environ, STALL_ENV: "1", "PYTHONUNBUFFERED": "1"}
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "outlast.demo", "--worker", url, run_id, env=env
    )
    try:
        async with asyncio.timeout(wait):
            stalled = await _wait_for(
                store,
                run_id,
                lambda s: len(s.state.phases) == 2 and len(s.state.history) >= 6,
                worker,
            )
        _say(
            f"\n2. Mid-phase: {len(stalled.state.phases)} phases done, the 'draft' phase has "
            f"{len(stalled.state.history)} messages saved. Sending SIGTERM to the worker "
            f"(pid {worker.pid})..."
        )
        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(wait):
            code = await worker.wait()
    except TimeoutError as exc:
        raise click.ClickException(f"timed out after {wait}s waiting for the worker") from exc
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    released = await store.load(run_id, NAMESPACE)
    assert released is not None
    _say(
        f"   worker exited ({code}); the record is {released.record.status}, "
        f"epoch {released.record.epoch}, lease released: "
        f"{released.record.lease_expires_at is None}\n"
    )
    _say("3. This process recovers interrupted runs:")
    executor = app(store)
    report = await executor.recover()
    await store.close()
    if run_id not in {r.run_id for r in report.results}:
        problem = report.errors.get(run_id) or report.skipped.get(run_id)
        raise click.ClickException(f"the run was not recovered: {problem}")
    result = next(r for r in report.results if r.run_id == run_id)
    skipped = ", ".join(p.name for p in result.phases[: result.skipped_phases])
    _say(
        f"\n4. Done. Same durable record: run {result.run_id}, epoch {result.epoch}.\n"
        f"   Skipped finished phases: {skipped}; 'draft' continued from "
        f"{len(stalled.state.history)} saved messages (only the stalled tool call ran again).\n"
        f"   Final answer: {result.output}\n"
        f"   Inspect it: outlast runs show {run_id} --namespace {NAMESPACE}"
    )
    return str(result.output)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(asyncio.run(_worker(sys.argv[2], sys.argv[3])))
    sys.exit("usage: outlast demo (this module's --worker mode is internal)")
