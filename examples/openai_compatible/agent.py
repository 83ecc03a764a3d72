"""An agent on any OpenAI-compatible server, durable on the SQLite store.

    python examples/openai_compatible/agent.py "How many hours from 2024-02-01 to 2024-03-01?"

The model is named by the environment (README.md): ``OUTLAST_MODEL_NAME``
(required), ``OUTLAST_MODEL_BASE_URL`` (the server, e.g.
``http://localhost:11434/v1``; default OpenAI's API) and ``OPENAI_API_KEY``
(any value for a server that checks none; ``unused`` is sent when it is not
set and a base URL is). The runs go to ``$OUTLAST_URL``, by default the
SQLite file ``./.outlast/runs.db``.

It answers with two tools, ``calculate`` (arithmetic) and ``days_between``
(calendar dates). Ctrl-C (or SIGTERM) releases the run in flight and exits
0; the next start, with or without a question, continues it first.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import datetime
import operator
import os
import sys
import uuid
from collections.abc import Callable, Sequence

import outlast
from outlast import JSON, Agent, Executor, Tool, ToolError
from outlast.models.openai import OpenAIModel

NAMESPACE = "openai-compatible"
KIND = "ask"
SYSTEM = (
    "You answer questions briefly. Use the calculate tool for every piece of arithmetic and "
    "the days_between tool for every count of days between dates; never work them out "
    "yourself. Answer in one or two sentences."
)

# -- the tools -------------------------------------------------------------------------

_OPERATORS: dict[type[ast.AST], Callable[..., float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST) -> float:
    """An arithmetic expression's value: numbers and + - * / // % ** only."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    value: float
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise ToolError("True and False are not numbers here")
        value = node.value
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        value = _OPERATORS[type(node.op)](_evaluate(node.operand))
    elif isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ToolError("exponents above 64 are not calculated")
        value = _OPERATORS[type(node.op)](left, right)
    else:
        raise ToolError(
            f"only numbers and + - * / // % ** ( ) are allowed, not {ast.dump(node):.60}"
        )
    if isinstance(value, complex) or abs(value) > 1e100:
        raise ToolError("the result is not a real number below 1e100")
    return value


def calculate(arguments: dict[str, JSON]) -> JSON:
    expression = arguments.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("give the expression as a string, e.g. {'expression': '2340 * 0.17'}")
    try:
        value = _evaluate(ast.parse(expression.replace(",", ""), mode="eval"))
    except SyntaxError:
        raise ToolError(f"{expression!r} is not an arithmetic expression") from None
    except (ZeroDivisionError, OverflowError) as exc:
        raise ToolError(f"{expression!r} cannot be calculated: {exc}") from None
    return int(value) if float(value).is_integer() else round(value, 10)


def days_between(arguments: dict[str, JSON]) -> JSON:
    try:
        start = datetime.date.fromisoformat(str(arguments.get("start")))
        end = datetime.date.fromisoformat(str(arguments.get("end")))
    except ValueError:
        raise ToolError("give both dates as YYYY-MM-DD, e.g. {'start': '2024-02-01'}") from None
    return (end - start).days


TOOLS = [
    Tool(
        "calculate",
        "Evaluate an arithmetic expression (numbers, + - * / // % ** and parentheses).",
        calculate,
        parameters={
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. 2340 * 0.17"}},
            "required": ["expression"],
        },
    ),
    Tool(
        "days_between",
        "The number of days from one date to another (negative if the end is earlier).",
        days_between,
        parameters={
            "type": "object",
            "properties": {
                "start": {"type": "string", "description": "YYYY-MM-DD"},
                "end": {"type": "string", "description": "YYYY-MM-DD"},
            },
            "required": ["start", "end"],
        },
    ),
]

# -- the app ----------------------------------------------------------------------------


def model_from_environment() -> OpenAIModel:
    """The model the environment names (README.md); ConfigurationError when it names none."""
    name = os.environ.get("OUTLAST_MODEL_NAME")
    if not name:
        raise outlast.ConfigurationError(
            "set OUTLAST_MODEL_NAME to the model to ask (e.g. gpt-4o-mini on OpenAI, "
            "qwen2.5:7b on Ollama), and OUTLAST_MODEL_BASE_URL to the server's base URL "
            "unless it is OpenAI's"
        )
    base_url = os.environ.get("OUTLAST_MODEL_BASE_URL") or None
    # A local server checks no key, but the SDK insists on one.
    api_key = "unused" if base_url and not os.environ.get("OPENAI_API_KEY") else None
    return OpenAIModel(name, base_url=base_url, api_key=api_key)


def usage_text(usage: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(usage.items())) or "none reported"


async def ask(question: str | None, run_id: str) -> int:
    """Continue any run a stop left behind, then answer ``question``; the exit status."""
    try:
        model = model_from_environment()
    except outlast.ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store = outlast.open()  # $OUTLAST_URL, default sqlite:///./.outlast/runs.db
    executor = Executor(store, namespace=NAMESPACE)
    executor.register(KIND, Agent(model, tools=TOOLS, system=SYSTEM, max_steps=12))
    try:
        with executor.handle_signals():  # SIGTERM/SIGINT -> shutdown -> release
            report = await executor.recover()  # what a stopped or dead start left behind
            for recovered in report.results:
                print(f"continued run {recovered.run_id}: {recovered.output}")
            for failed, error in report.errors.items():
                print(f"run {failed} failed: {error}", file=sys.stderr)
            if executor.shutting_down:
                print("stopped: the runs are left for recovery", file=sys.stderr)
                return 0
            if question is None:
                return 0
            result = await executor.run(KIND, question, run_id=run_id)
        print(result.output)
        print(f"run {result.run_id}; usage: {usage_text(result.usage)}", file=sys.stderr)
        return 0
    except outlast.Shutdown:  # Ctrl-C or SIGTERM: the run was released, not lost
        print(
            f"stopped: run {run_id} is left for recovery; start the agent again to continue it",
            file=sys.stderr,
        )
        return 0
    except outlast.RunError as exc:  # the model failed, a step limit...: the run is failed
        print(f"run {run_id} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        await model.aclose()
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Ask an agent on an OpenAI-compatible server; runs are durable (README.md)."
    )
    parser.add_argument(
        "question", nargs="?", help="what to ask (none: only continue stopped runs)"
    )
    parser.add_argument("--run-id", default=None, help="the run's id (default: a new one)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(ask(args.question, args.run_id or uuid.uuid4().hex))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were set, or after
        return 130


if __name__ == "__main__":
    sys.exit(main())
