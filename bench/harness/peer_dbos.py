"""DBOS's side of the agent workload (imported only when dbos is installed).

An async workflow with one ``@DBOS.step`` per agent step; the step returns
the model's reply and the tool's result (the same JSON as outlast's
messages), which DBOS records as the step's output. DBOS is a process-wide
singleton: :func:`launch` configures it on a database of its own, with
DBOS's defaults but a quiet log, and :func:`destroy` shuts it down.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dbos import DBOS, SetWorkflowID

from bench.harness.workload import Gate, agent_reply, agent_result, as_dict
from outlast import Message

_gates: dict[str, Gate] = {}


@DBOS.step()
async def agent_step(step: int) -> list[dict[str, Any]]:
    return [as_dict(agent_reply(step)), as_dict(agent_result(step))]


@DBOS.workflow()
async def agent_run(run_id: str, steps: int) -> int:
    gate = _gates[run_id]
    transcript: list[dict[str, Any]] = [as_dict(Message.user("go"))]
    for step in range(1, steps + 1):
        await gate.turn()
        transcript.extend(await agent_step(step))
    await gate.turn()  # the final answer: the workflow's outcome
    return len(transcript)


async def launch(url: str) -> None:
    DBOS(
        config={
            "name": "outlast-bench",
            "system_database_url": url,
            "application_version": "bench",
            "log_level": "WARNING",
        }
    )
    await asyncio.to_thread(DBOS.launch)


async def run(gate: Gate, steps: int, run_id: str) -> object:
    _gates[run_id] = gate
    try:
        with SetWorkflowID(run_id):
            handle = await DBOS.start_workflow_async(agent_run, run_id, steps)
        return await handle.get_result()
    finally:
        _gates.pop(run_id, None)


async def destroy() -> None:
    DBOS.destroy()
    # DBOS made its thread pool the loop's default executor and shut it down:
    # give the loop a fresh one, or every later asyncio.to_thread fails.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor())
