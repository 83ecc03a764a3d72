"""Whole frameworks on the agent workload, one step at a time (workload.Gate).

An agent step is the model's reply calling one tool and the tool's ~1 KiB
result; the model and the tool are instant stand-ins, so a step's time is
the framework's own work plus its checkpointing. Every framework does what
it does by default for such a step:

* **outlast** -- ``Executor(store)`` running an ``Agent`` (as
  bench/executor_step.py, now with a store): the reply is saved before the
  tool runs and the result after it: two saves a step.
* **LangGraph** -- a ``StateGraph`` of two nodes, ``model`` and ``tools``
  (the shape of its prebuilt ReAct agent), each appending its message (an
  ``AIMessage`` with one tool call, a ``ToolMessage`` with the same ~1 KiB
  text) to the ``messages`` channel, compiled with ``AsyncPostgresSaver`` and
  run with ``durability="sync"`` (each super-step's checkpoint is written
  before the next starts, as outlast's saves are): two checkpoints a step.
  The channel is LangGraph's idiom, ``Annotated[list, add_messages]``, or,
  for ``langgraph delta``, the opt-in ``DeltaChannel`` with the messages
  reducer its documentation shows (``_messages_delta_reducer``; langgraph >=
  1.1, beta), which checkpoints each step's writes instead of the whole list
  (default ``snapshot_frequency``: a full snapshot every 100 updates).
* **DBOS** -- an async ``@DBOS.workflow`` with one ``@DBOS.step`` per agent
  step returning the reply and the result: one checkpoint a step (DBOS's
  agent examples often make the model call and the tool call two steps;
  one is the cheaper choice for DBOS).

Each repetition runs every target in a fresh place (a database of its own on
the private PostgreSQL for LangGraph and DBOS, a schema or SQLite file or
Redis prefix for outlast); the bytes a run added are measured after its last
tool step, while it is still running (outlast clears a completed run's
transcript; the others keep theirs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypedDict

import outlast
from bench.harness.workload import Gate, agent_reply, agent_result, text
from outlast import Agent, Executor, Message, Tool
from outlast.messages import JSON, JSONObject

NAMESPACE = "bench"


class AgentTarget:
    """One framework on one store: ``open``, ``run`` (gated), ``bytes_added``, ``close``."""

    name: str

    async def open(self) -> None:
        raise NotImplementedError

    def run(self, gate: Gate, steps: int, run_id: str) -> Awaitable[object]:
        raise NotImplementedError

    async def bytes_added(self) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class GatedModel:
    """Replies with one tool call per step, then a final answer; waits at the gate first."""

    def __init__(self, gate: Gate, steps: int) -> None:
        self.gate = gate
        self.steps = steps
        self.calls = 0

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        await self.gate.turn()
        self.calls += 1
        if self.calls > self.steps:
            return Message.assistant("done")
        return agent_reply(self.calls)


def search(arguments: JSONObject) -> JSON:
    query = arguments["query"]
    assert isinstance(query, str)
    return text(int(query[1:]))


class OutlastAgent(AgentTarget):
    def __init__(self, store: str, url: str, measure: Callable[[], int]) -> None:
        self.name = f"outlast {store}"
        self.url = url
        self.measure = measure
        self._store: outlast.Store | None = None
        self._before = 0

    async def open(self) -> None:
        self._store = outlast.open(self.url)
        await self._store.list(NAMESPACE)
        self._before = self.measure()

    def run(self, gate: Gate, steps: int, run_id: str) -> Awaitable[object]:
        executor = Executor(self._store, namespace=NAMESPACE, owner="bench")
        model = GatedModel(gate, steps)
        agent = Agent(model, [Tool("search", "", search)], max_steps=steps + 1, tool_concurrency=1)
        executor.register("bench", agent)
        return executor.run("bench", "go", run_id=run_id)

    async def bytes_added(self) -> int:
        return self.measure() - self._before

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()


class LangGraphAgent(AgentTarget):
    def __init__(self, url: str, delta: bool, measure: Callable[[], int]) -> None:
        self.name = "langgraph delta" if delta else "langgraph"
        self.url = url
        self.delta = delta
        self.measure = measure
        self._stack = contextlib.AsyncExitStack()
        self._saver: Any = None
        self._before = 0

    async def open(self) -> None:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        self._saver = await self._stack.enter_async_context(
            AsyncPostgresSaver.from_conn_string(self.url)
        )
        await self._saver.setup()
        self._before = self.measure()

    def run(self, gate: Gate, steps: int, run_id: str) -> Awaitable[object]:
        from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
        from langgraph.graph import END, START, StateGraph
        from langgraph.graph.message import add_messages

        if self.delta:
            from langgraph.channels.delta import DeltaChannel
            from langgraph.graph.message import _messages_delta_reducer

            channel: Any = Annotated[list, DeltaChannel(_messages_delta_reducer)]
        else:
            channel = Annotated[list, add_messages]
        # Functional syntax: the annotation must be the object, not a string to resolve.
        state_type = TypedDict("AgentState", {"messages": channel})  # type: ignore[misc]  # noqa: UP013

        def step_of(state: dict[str, list[Any]]) -> int:
            return (len(state["messages"]) - 1) // 2 + 1  # the user's message, then 2 a step

        async def model(state: dict[str, list[Any]]) -> dict[str, list[Any]]:
            await gate.turn()
            step = step_of(state)
            if step > steps:
                return {"messages": [AIMessage(content="done", id=f"m{step}")]}
            call = agent_reply(step).tool_calls[0]
            reply = AIMessage(
                content="",
                id=f"m{step}",
                tool_calls=[{"name": call.name, "args": call.arguments, "id": call.id}],
            )
            return {"messages": [reply]}

        async def tools(state: dict[str, list[Any]]) -> dict[str, list[Any]]:
            step = step_of(state)
            call_id = state["messages"][-1].tool_calls[0]["id"]
            result = agent_result(step)
            assert isinstance(result.content, str)
            return {
                "messages": [
                    ToolMessage(content=result.content, tool_call_id=call_id, id=f"t{step}")
                ]
            }

        def route(state: dict[str, list[Any]]) -> str:
            return "tools" if state["messages"][-1].tool_calls else END

        builder = StateGraph(state_type)
        builder.add_node("model", model)
        builder.add_node("tools", tools)
        builder.add_edge(START, "model")
        builder.add_conditional_edges("model", route, ["tools", END])
        builder.add_edge("tools", "model")
        graph = builder.compile(checkpointer=self._saver)
        config = {"configurable": {"thread_id": run_id}, "recursion_limit": 4 * steps + 10}
        opening = HumanMessage(content="go", id="m0")
        return graph.ainvoke({"messages": [opening]}, config, durability="sync")

    async def bytes_added(self) -> int:
        return self.measure() - self._before

    async def close(self) -> None:
        await self._stack.aclose()


class DbosAgent(AgentTarget):
    """DBOS is one per process (a global): one DbosAgent open at a time."""

    def __init__(self, url: str, measure: Callable[[], int]) -> None:
        self.name = "dbos"
        self.url = url
        self.measure = measure
        self._before = 0

    async def open(self) -> None:
        from bench.harness import peer_dbos

        await peer_dbos.launch(self.url)
        self._before = self.measure()

    def run(self, gate: Gate, steps: int, run_id: str) -> Awaitable[object]:
        from bench.harness import peer_dbos

        return peer_dbos.run(gate, steps, run_id)

    async def bytes_added(self) -> int:
        return self.measure() - self._before

    async def close(self) -> None:
        from bench.harness import peer_dbos

        await peer_dbos.destroy()


def peers_available() -> dict[str, str | None]:
    """Each peer's problem, or None when it can run here."""
    problems: dict[str, str | None] = {}
    try:
        import langgraph.checkpoint.postgres.aio
        import langgraph.graph
    except ImportError as exc:
        problems["langgraph"] = f"not installed ({exc})"
    else:
        problems["langgraph"] = None
    try:
        import langgraph.channels.delta  # noqa: F401
    except ImportError:
        problems["langgraph delta"] = "the installed langgraph has no DeltaChannel (>= 1.1)"
    else:
        problems["langgraph delta"] = problems["langgraph"]
    try:
        import dbos  # noqa: F401
    except ImportError as exc:
        problems["dbos"] = f"not installed ({exc})"
    else:
        problems["dbos"] = None
    return problems
