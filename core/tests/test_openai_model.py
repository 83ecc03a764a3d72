"""OpenAIModel through the real SDK over a real socket, against a chat
completions server these tests run on 127.0.0.1 (no mocks, no network), and
the example in examples/openai_compatible run against it as a user runs it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio

import outlast
from outlast import JSON, Agent, Executor, Message, ModelError, Tool, ToolCall
from outlast.models.openai import OpenAIModel

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "openai_compatible" / "agent.py"
KEY = "sk-outlast-test-KEY-4f1c9a2e7b"
"""A recognisable fake key: it must never show in a repr, an error or a log."""
WITHIN = 30.0
"""Seconds any one wait may take before the test fails (each takes far less)."""
CLEAN_ENV = (
    *("OPENAI_API_KEY", "OPENAI_ADMIN_KEY", "OPENAI_BASE_URL", "OPENAI_CUSTOM_HEADERS"),
    *("OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OUTLAST_URL"),
    *("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"),
)
"""The machine's settings a test must not inherit: keys, base URLs, proxies, the store."""
USAGE: dict[str, Any] = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": None},
    "prompt_cache_hit_tokens": 64,  # a server's own count (DeepSeek names it so)
}
USAGE_COUNTS = {
    "input_tokens": 120,
    "output_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details.cached_tokens": 64,
    "prompt_cache_hit_tokens": 64,
}

# -- the server --------------------------------------------------------------------------


def completion(
    content: str | None = None,
    *calls: tuple[str, str, str],
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A chat completion body; each call is (id, name, arguments as JSON text)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in calls
        ]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish or ("tool_calls" if calls else "stop"),
            }
        ],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@dataclass(frozen=True)
class Answer:
    """An answer given as is, before the script: an error, a malformed body."""

    status: int
    body: bytes | dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One request: its path, its headers (names in lower case) and its JSON body."""

    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]


class ChatServer:
    """``POST /v1/chat/completions`` on 127.0.0.1, served by a thread.

    Each request is answered by the next of ``answers`` if any is left, else
    by ``script[N]`` where N is the number of assistant messages in the
    request (as ScriptedModel picks, so a resumed run gets the next reply).
    A request of turn ``hold_turn`` waits for ``released`` before it is
    answered. Every request is kept in ``requests``.
    """

    def __init__(self, script: Sequence[dict[str, Any]] = ()) -> None:
        self.script = list(script)
        self.answers: deque[Answer] = deque()
        self.requests: list[Received] = []
        self.hold_turn: int | None = None
        self.released = threading.Event()
        self._arrived = threading.Condition()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [request.body for request in self.requests]

    def wait_for(self, count: int) -> None:
        """Block until ``count`` requests arrived (at most WITHIN seconds)."""
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.requests) >= count, WITHIN)
        assert arrived, f"{count} requests were expected, {len(self.requests)} arrived"

    def answer(self, path: str, headers: Mapping[str, str], raw: bytes) -> Answer:
        body = json.loads(raw)
        with self._arrived:
            self.requests.append(Received(path, dict(headers), body))
            self._arrived.notify_all()
        turn = sum(1 for message in body["messages"] if message["role"] == "assistant")
        if turn == self.hold_turn:
            self.released.wait(WITHIN)
        if self.answers:
            return self.answers.popleft()
        if path != "/v1/chat/completions" or turn >= len(self.script):
            error = {"message": f"no scripted reply for {path} turn {turn}"}
            return Answer(400, {"error": error})
        return Answer(200, self.script[turn])

    def close(self) -> None:
        self.released.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(WITHIN)


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = server.answer(self.path, headers, raw)
            body = answer.body
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(answer.status)
                for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client went away (a stopped process): nobody to answer
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

    return Handler


@pytest.fixture(autouse=True)
def no_ambient_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, base URL or proxy of the machine's environment reaches a test."""
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    chat = ChatServer()
    yield chat
    chat.close()


@pytest_asyncio.fixture
async def model(server: ChatServer) -> AsyncIterator[OpenAIModel]:
    async with OpenAIModel("test-model", base_url=server.base_url, api_key=KEY) as built:
        yield built


SYSTEM = Message.system("You are terse.")
QUESTION = Message.user("Weather in Oslo, and 2+2?")
CITY: dict[str, JSON] = {"type": "object", "properties": {"city": {"type": "string"}}}
FORECAST_SPEC: dict[str, JSON] = {
    "name": "forecast",
    "description": "Today's forecast for a city.",
    "parameters": CITY,
}


def forecast(arguments: dict[str, JSON]) -> JSON:
    return {"city": arguments["city"], "forecast": "4 °C, sleet"}


def add(arguments: dict[str, JSON]) -> JSON:
    a, b = arguments["a"], arguments["b"]
    assert isinstance(a, int) and isinstance(b, int)
    return a + b


TOOLS = [
    Tool("forecast", "Today's forecast for a city.", forecast, CITY),
    Tool("add", "a + b.", add, {"type": "object", "properties": {"a": {}, "b": {}}}),
]


# -- conversion ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_tool_calling_round_trip(server: ChatServer, model: OpenAIModel) -> None:
    server.script = [
        completion(None, ("call_1", "forecast", '{"city": "Oslo"}'), usage=USAGE),
        completion("Oslo: 4 °C and sleet."),
    ]
    first = await model.complete([SYSTEM, QUESTION], [FORECAST_SPEC])

    assert first == Message.assistant(
        None, (ToolCall("call_1", "forecast", {"city": "Oslo"}),), usage=USAGE_COUNTS
    )
    result = Message.tool("call_1", "forecast", '{"city":"Oslo","forecast":"4 °C, sleet"}')
    final = await model.complete([SYSTEM, QUESTION, first, result], [FORECAST_SPEC])

    assert (final.text, final.tool_calls) == ("Oslo: 4 °C and sleet.", ())
    assert final.usage == {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    assert [r.path for r in server.requests] == ["/v1/chat/completions"] * 2
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert server.bodies[1] == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Oslo, and 2+2?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "forecast", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": '{"city":"Oslo","forecast":"4 °C, sleet"}',
            },
        ],
        "tools": [{"type": "function", "function": FORECAST_SPEC}],
    }


@pytest.mark.asyncio
async def test_parts_names_and_refusals_convert_exactly_and_survive_a_store(
    server: ChatServer, model: OpenAIModel
) -> None:
    image: dict[str, JSON] = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
    }
    refused = completion("Partly:")
    refused["choices"][0]["message"]["refusal"] = "I cannot describe faces."
    server.script = [refused]
    asked = [
        Message("developer", "Describe images.", name="ops"),
        Message.user(["What is in", image, {"type": "text", "text": "this picture?"}], seen=1),
        Message.started("call_0", "add"),  # the executor's bookkeeping: never sent
    ]
    reply = await model.complete(asked, [])

    assert reply.content == [
        {"type": "text", "text": "Partly:"},
        {"type": "refusal", "refusal": "I cannot describe faces."},
    ]
    assert server.bodies[0] == {
        "model": "test-model",
        "messages": [
            {"role": "developer", "content": "Describe images.", "name": "ops"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in"},
                    image,
                    {"type": "text", "text": "this picture?"},
                ],
            },
        ],
    }  # no tools: left out; meta and the bookkeeping note: not sent
    transcript = [*asked, reply, Message.user("Go on.")]
    restored = [Message.from_json(json.loads(json.dumps(m.to_json()))) for m in transcript]
    assert model.request(restored, [FORECAST_SPEC]) == model.request(transcript, [FORECAST_SPEC])
    assert model.request(restored, [])["messages"][2] == {
        "role": "assistant",
        "content": reply.content,
    }


@pytest.mark.asyncio
async def test_options_go_with_every_request_and_those_the_model_sends_are_refused(
    server: ChatServer,
) -> None:
    server.script = [completion("ok")]
    options = {"temperature": 0.0, "max_completion_tokens": 64, "extra_body": {"top_k": 5}}
    async with OpenAIModel(
        "test-model", base_url=server.base_url, api_key=KEY, options=options
    ) as model:
        await model.complete([QUESTION], [])
    assert server.bodies[0]["temperature"] == 0.0
    assert (server.bodies[0]["max_completion_tokens"], server.bodies[0]["top_k"]) == (64, 5)
    with pytest.raises(outlast.ConfigurationError, match="max_retries must be 0 or more"):
        OpenAIModel("test-model", base_url=server.base_url, api_key=KEY, max_retries=-1)
    refusals: list[dict[str, Any]] = [{"messages": []}, {"model": "other"}, {"stream": True}]
    for refused in refusals:
        with pytest.raises(outlast.ConfigurationError, match="options may not set"):
            OpenAIModel("test-model", base_url=server.base_url, api_key=KEY, options=refused)


@pytest.mark.asyncio
async def test_a_client_of_your_own_is_used_and_left_open(server: ChatServer) -> None:
    server.script = [completion("from your client")]
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=5)
    model = OpenAIModel("test-model", client=client)
    assert model.max_retries == 5
    assert (await model.complete([QUESTION], [])).text == "from your client"
    await model.aclose()
    assert not client.is_closed()
    await client.close()
    with pytest.raises(outlast.ConfigurationError, match="either client= or base_url="):
        OpenAIModel("test-model", client=client, base_url=server.base_url)


# -- through the executor ------------------------------------------------------------------


def weather_script() -> list[dict[str, Any]]:
    return [
        completion(
            None,
            ("call_f", "forecast", '{"city": "Oslo"}'),
            ("call_a", "add", '{"a": 2, "b": 2}'),
            usage=USAGE,
        ),
        completion(None, ("call_b", "add", '{"a": 4, "b": 1}')),
        completion("Oslo: 4 °C and sleet; 2+2 is 4, plus 1 is 5."),
    ]


@pytest.mark.asyncio
async def test_a_multi_step_run_through_the_executor_on_sqlite(
    server: ChatServer, model: OpenAIModel, tmp_path: Path
) -> None:
    server.script = weather_script()
    async with outlast.open(f"sqlite:///{tmp_path}/runs.db") as store:
        executor = Executor(store)
        executor.register("weather", Agent(model, tools=TOOLS, system="You are terse."))
        result = await executor.run("weather", "Weather in Oslo, and 2+2?", run_id="w-1")
        stored = await store.load("w-1")

    assert result.output == "Oslo: 4 °C and sleet; 2+2 is 4, plus 1 is 5."
    assert len(server.requests) == 3  # one request per step
    assert [m["role"] for m in server.bodies[2]["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
    ]
    results = {
        m["tool_call_id"]: m["content"] for m in server.bodies[2]["messages"] if m["role"] == "tool"
    }
    assert results == {
        "call_f": '{"city":"Oslo","forecast":"4 °C, sleet"}',
        "call_a": "4",
        "call_b": "5",
    }
    assert result.usage == {
        "input_tokens": 140,
        "output_tokens": 40,
        "total_tokens": 180,
        "prompt_tokens_details.cached_tokens": 64,
        "prompt_cache_hit_tokens": 64,
    }
    assert stored is not None and stored.record.status is outlast.RunStatus.COMPLETED


RESUMED_ANSWER = "Oslo: 4 °C and sleet; and 4 + 1 is 5."


def resume_script() -> list[dict[str, Any]]:
    return [
        completion(None, ("call_f", "forecast", '{"city": "Oslo"}'), usage=USAGE),
        completion(None, ("call_b", "add", '{"a": 4, "b": 1}')),
        completion(RESUMED_ANSWER),
    ]


@pytest.mark.asyncio
async def test_a_run_stopped_at_a_tool_resumes_through_a_fresh_client_with_the_same_requests(
    tmp_path: Path,
) -> None:
    """Run until a tool, stop the executor (release), recover with a fresh
    executor and a fresh client: the server sees exactly the requests of a
    run that was never stopped, each step asked once."""
    entered = asyncio.Event()

    async def stalls(arguments: dict[str, JSON]) -> JSON:
        entered.set()
        await asyncio.Event().wait()  # until the shutdown cancels it
        return None

    stalling = [Tool("forecast", "Today's forecast for a city.", stalls, CITY), TOOLS[1]]
    url = f"sqlite:///{tmp_path}/runs.db"
    stopped, uninterrupted = ChatServer(resume_script()), ChatServer(resume_script())
    try:
        async with (
            outlast.open(url) as store,
            OpenAIModel("test-model", base_url=stopped.base_url, api_key=KEY) as first,
        ):
            executor = Executor(store)
            executor.register("weather", Agent(first, tools=stalling, system="You are terse."))
            running = asyncio.create_task(executor.run("weather", QUESTION.text, run_id="w-1"))
            await asyncio.wait_for(entered.wait(), WITHIN)
            executor.shutdown()
            with pytest.raises(outlast.Shutdown):
                await running
        assert len(stopped.requests) == 1

        async with (
            outlast.open(url) as store,
            OpenAIModel("test-model", base_url=stopped.base_url, api_key=KEY) as second,
        ):
            executor = Executor(store)
            executor.register("weather", Agent(second, tools=TOOLS, system="You are terse."))
            report = await executor.recover()
        (resumed,) = report.results
        assert (resumed.resumed, resumed.output) == (True, RESUMED_ANSWER)
        assert len(stopped.requests) == 3  # one per step: the first was not asked again

        async with (
            outlast.open(f"sqlite:///{tmp_path}/other.db") as store,
            OpenAIModel("test-model", base_url=uninterrupted.base_url, api_key=KEY) as third,
        ):
            executor = Executor(store)
            executor.register("weather", Agent(third, tools=TOOLS, system="You are terse."))
            await executor.run("weather", QUESTION.text, run_id="w-1")
        assert stopped.bodies == uninterrupted.bodies  # the restored transcript, exactly
        assert resumed.usage == {
            "input_tokens": 140,
            "output_tokens": 40,
            "total_tokens": 180,
            "prompt_tokens_details.cached_tokens": 64,
            "prompt_cache_hit_tokens": 64,
        }  # the first reply, paid before the stop, counted once
    finally:
        stopped.close()
        uninterrupted.close()


# -- malformed replies --------------------------------------------------------------------


def replaced(body: dict[str, Any], path: Sequence[str | int], value: JSON) -> bytes:
    """``body`` as JSON with the value at ``path`` replaced (or removed when None)."""
    copy = json.loads(json.dumps(body))
    here = copy
    for step in path[:-1]:
        here = here[step]
    if value is None:
        del here[path[-1]]
    else:
        here[path[-1]] = value
    return json.dumps(copy).encode()


CALL = completion(None, ("call_1", "forecast", '{"city": "Oslo"}'))
MALFORMED = {
    "not JSON": (b"<html>Bad gateway</html>", "not JSON"),
    "a JSON list": (b"[1, 2]", "not a chat completion"),
    "no choices": (replaced(CALL, ["choices"], []), "has no choices"),
    "choices missing": (replaced(CALL, ["choices"], None), "has no choices"),
    "no message": (replaced(CALL, ["choices", 0, "message"], None), "has no message"),
    "no text, no call": (
        replaced(CALL, ["choices", 0, "message", "tool_calls"], None),
        "neither text nor a tool call",
    ),
    "arguments not JSON": (
        replaced(CALL, ["choices", 0, "message", "tool_calls", 0, "function", "arguments"], "{ci"),
        "tool 'forecast' with arguments that are not JSON",
    ),
    "arguments a list": (
        replaced(CALL, ["choices", 0, "message", "tool_calls", 0, "function", "arguments"], "[1]"),
        "arguments that are not a JSON object",
    ),
    "a call without a name": (
        replaced(CALL, ["choices", 0, "message", "tool_calls", 0, "function", "name"], None),
        "names no function",
    ),
    "content a number": (
        replaced(CALL, ["choices", 0, "message", "content"], 7),
        "neither text nor parts",
    ),
    "cut off": (
        replaced(completion("The answer is"), ["choices", 0, "finish_reason"], "length"),
        "raise max_completion_tokens",
    ),
    "filtered": (
        replaced(completion("..."), ["choices", 0, "finish_reason"], "content_filter"),
        "content_filter",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
@pytest.mark.asyncio
async def test_a_malformed_reply_is_a_model_error(
    case: str, server: ChatServer, model: OpenAIModel
) -> None:
    body, expected = MALFORMED[case]
    server.answers.append(Answer(200, body))
    with pytest.raises(ModelError, match=expected) as caught:
        await model.complete([QUESTION], [FORECAST_SPEC])
    assert server.base_url in str(caught.value)
    assert len(server.requests) == 1  # a malformed reply is not asked again


@pytest.mark.asyncio
async def test_an_unknown_finish_reason_and_empty_arguments_are_accepted(
    server: ChatServer, model: OpenAIModel
) -> None:
    server.script = [
        completion(None, ("", "add", ""), finish="eos_token"),  # TGI's reason, no id, no args
    ]
    reply = await model.complete([QUESTION], [])
    assert reply.tool_calls == (ToolCall("", "add", {}),)  # the loop numbers a missing id


# -- errors ------------------------------------------------------------------------------

RETRY_NOW = {"retry-after-ms": "1"}
"""Asks the SDK to retry after a millisecond (its policy honours it), not its backoff."""


@pytest.mark.parametrize("status", [429, 500, 503])
@pytest.mark.asyncio
async def test_rate_limits_and_server_errors_are_retried_by_the_sdk(
    status: int, server: ChatServer, model: OpenAIModel
) -> None:
    server.script = [completion("made it")]
    busy = Answer(status, {"error": {"message": "busy, try again"}}, RETRY_NOW)
    server.answers.extend([busy, busy])
    assert model.max_retries == openai.DEFAULT_MAX_RETRIES == 2
    assert (await model.complete([QUESTION], [])).text == "made it"
    assert len(server.requests) == 3
    assert server.bodies[0] == server.bodies[1] == server.bodies[2]


@pytest.mark.asyncio
async def test_retries_run_out_into_a_model_error(server: ChatServer) -> None:
    server.answers.extend([Answer(429, {"error": {"message": "slow down"}}, RETRY_NOW)] * 2)
    async with OpenAIModel(
        "test-model", base_url=server.base_url, api_key=KEY, max_retries=1
    ) as model:
        with pytest.raises(ModelError) as caught:
            await model.complete([QUESTION], [])
    assert len(server.requests) == 2
    assert "answered 429" in str(caught.value) and "slow down" in str(caught.value)
    assert "after 1 retry (max_retries=1)" in str(caught.value)


REFUSALS = {
    # A server that echoes the key it was sent: the error must still not show it.
    401: ({"error": {"message": f"Incorrect API key provided: {KEY}"}}, "check the API key"),
    400: ({"error": {"message": "tools are not supported"}}, "supports tool calls"),
    404: ({"error": {"message": "model 'test-model' not found"}}, "check the model name"),
}


@pytest.mark.parametrize("status", REFUSALS)
@pytest.mark.asyncio
async def test_a_refusal_is_a_model_error_that_says_what_to_check_and_hides_the_key(
    status: int,
    server: ChatServer,
    model: OpenAIModel,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    body, hint = REFUSALS[status]
    server.answers.append(Answer(status, body, {"x-request-id": "req_42"}))
    async with outlast.open(f"sqlite:///{tmp_path}/runs.db") as store:
        executor = Executor(store)
        executor.register("ask", Agent(model, tools=TOOLS))
        with pytest.raises(ModelError) as caught:
            await executor.run("ask", "hello", run_id="r-1")
        stored = await store.load("r-1")

    text = str(caught.value)
    assert f"answered {status} (request id req_42)" in text
    assert server.base_url in text and hint in text
    assert len(server.requests) == 1  # not retried
    assert stored is not None and stored.record.status is outlast.RunStatus.FAILED
    seen = [
        text,
        "".join(traceback.format_exception(caught.value)),
        repr(model),
        str(stored.record.error),
        caplog.text,
    ]
    assert caplog.text  # the SDK's own logging was captured
    for where in seen:
        assert KEY not in where
    if status == 401:  # the SDK's exception quotes the key: it is not chained
        assert "Incorrect API key provided: ***" in text
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    else:  # for the debugger: the SDK's own exception
        assert isinstance(caught.value.__cause__, openai.APIStatusError)


@pytest.mark.asyncio
async def test_a_long_answer_is_cut_where_no_part_of_the_key_is_left(
    server: ChatServer, model: OpenAIModel
) -> None:
    echoed = "x" * 495 + KEY  # a cut at 500 characters would fall inside the key
    server.answers.append(Answer(403, {"error": {"message": echoed}}))
    arguments = json.dumps({"note": "y" * 180 + KEY})[:-1]  # not JSON, and quoted
    server.answers.append(Answer(200, completion(None, ("c", "add", arguments))))
    for _ in range(2):
        with pytest.raises(ModelError) as caught:
            await model.complete([QUESTION], [])
        assert KEY[:6] not in str(caught.value) and "***" in str(caught.value)


@pytest.mark.asyncio
async def test_an_unreachable_server_is_a_model_error_naming_the_base_url() -> None:
    closed = ChatServer()
    closed.close()  # the port is free again: nothing listens there
    async with OpenAIModel(
        "test-model", base_url=closed.base_url, api_key=KEY, max_retries=0
    ) as model:
        with pytest.raises(ModelError, match=r"cannot reach .* check the base URL") as caught:
            await model.complete([QUESTION], [])
    assert closed.base_url in str(caught.value) and KEY not in str(caught.value)


def test_no_key_is_a_configuration_error_and_the_repr_shows_no_secret() -> None:
    with pytest.raises(outlast.ConfigurationError, match=r"OPENAI_API_KEY.*api_key='unused'"):
        OpenAIModel("test-model", base_url="http://127.0.0.1:9/v1")
    model = OpenAIModel(
        "test-model", base_url=f"http://user:{KEY}@127.0.0.1:9/v1?api-key={KEY}", api_key=KEY
    )
    assert repr(model).startswith("OpenAIModel(model='test-model', base_url='http://user:***@")
    assert KEY not in repr(model)
    asyncio.run(model.aclose())


# -- the example ---------------------------------------------------------------------------

EXAMPLE_SCRIPT = [
    completion(None, ("call_1", "calculate", '{"expression": "2340 * 17 / 100"}')),
    completion(None, ("call_2", "days_between", '{"start": "2024-02-01", "end": "2024-03-01"}')),
    completion("17% of 2,340 is 397.8, and February 2024 had 29 days."),
]


def example_env(server: ChatServer) -> dict[str, str]:
    """The example's environment, as its README sets it, naming the test server."""
    inherited = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return {
        **inherited,
        "OUTLAST_MODEL_BASE_URL": server.base_url,
        "OUTLAST_MODEL_NAME": "test-model",
        "OPENAI_API_KEY": KEY,
    }


def run_example(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the example, run as its README runs it
        [sys.executable, str(EXAMPLE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=WITHIN,
        check=False,
    )


def test_the_example_answers_with_its_tools(server: ChatServer, tmp_path: Path) -> None:
    server.script = EXAMPLE_SCRIPT
    done = run_example(example_env(server), tmp_path, "What is 17% of 2,340?")

    assert done.returncode == 0, done.stderr
    assert done.stdout == "17% of 2,340 is 397.8, and February 2024 had 29 days.\n"
    assert "usage: input_tokens 30, output_tokens 15, total_tokens 45" in done.stderr
    assert (tmp_path / ".outlast" / "runs.db").exists()  # the default SQLite store
    first = server.bodies[0]
    assert first["model"] == "test-model"
    assert [tool["function"]["name"] for tool in first["tools"]] == ["calculate", "days_between"]
    assert [m["content"] for m in server.bodies[2]["messages"] if m["role"] == "tool"] == [
        "397.8",
        "29",
    ]
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_the_example_stops_on_ctrl_c_and_continues_on_its_next_start(
    server: ChatServer, tmp_path: Path
) -> None:
    server.script = EXAMPLE_SCRIPT
    server.hold_turn = 1  # the second step's model call hangs until Ctrl-C
    env = example_env(server)
    with (tmp_path / "out").open("w+") as out, (tmp_path / "err").open("w+") as err:
        process = subprocess.Popen(  # noqa: S603 - the example, run as its README runs it
            [sys.executable, str(EXAMPLE), "What is 17% of 2,340?", "--run-id", "q-1"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
        try:
            server.wait_for(2)
            process.send_signal(signal.SIGINT)
            assert process.wait(WITHIN) == 0, (tmp_path / "err").read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(WITHIN)
    assert "stopped: run q-1 is left for recovery" in (tmp_path / "err").read_text()
    assert (tmp_path / "out").read_text() == ""
    server.hold_turn = None
    server.released.set()

    resumed = run_example(env, tmp_path)  # no question: it only continues what stopped
    assert resumed.returncode == 0, resumed.stderr
    answer = "17% of 2,340 is 397.8, and February 2024 had 29 days."
    assert resumed.stdout == f"continued run q-1: {answer}\n"
    assert len(server.requests) == 4  # the interrupted step is asked again, once
    assert server.bodies[2] == server.bodies[1]  # from the restored transcript, identical
