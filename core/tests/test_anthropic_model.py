"""AnthropicModel against a local server that speaks ``POST /v1/messages``.

The real SDK over a real socket: the server is the standard library's
``http.server`` in a thread on 127.0.0.1, answering from a script and
recording every request it gets. No mocks, no network.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import anthropic
import pytest
import pytest_asyncio

import outlast
from outlast import (
    Agent,
    ConfigurationError,
    Executor,
    Message,
    ModelError,
    RunStatus,
    Shutdown,
    Tool,
    ToolCall,
    ToolError,
)
from outlast.messages import JSON, MARKER, JSONObject
from outlast.models.anthropic import DEFAULT_MAX_TOKENS, AnthropicModel

MODEL = "claude-test-1"
KEY = "sk-ant-test-RECOGNISABLE-0123456789abcdef"
"""A fake key that must show up in the server's headers and nowhere else."""

Wire = dict[str, Any]


# -- the server --------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One scripted HTTP answer (a dict body is sent as JSON)."""

    body: Wire | bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class FakeAnthropic:
    """A messages API on 127.0.0.1: answers POSTs from ``answers``, in order,
    and records each request in ``received``."""

    def __init__(self) -> None:
        self.answers: list[Answer | Wire] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._http = _Server(("127.0.0.1", 0), _Handler)
        self._http.fake = self
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def bodies(self) -> list[Any]:
        return [request.body for request in self.received]

    def _serve(self) -> None:
        self._http.serve_forever(poll_interval=0.02)  # how soon stop() is noticed

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        with self._lock:
            self.received.append(Received(path, headers, body))
            if path != "/v1/messages":
                return error_answer(404, "not_found_error", f"no route {path}")
            if not self.answers:
                return error_answer(418, "test_error", "the test scripted no more answers")
            scripted = self.answers.pop(0)
        return scripted if isinstance(scripted, Answer) else Answer(scripted)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeAnthropic


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # the name http.server calls
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        fake = cast(_Server, self.server).fake
        answer = fake.answer(self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
        data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("content-type", answer.content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # quiet: the test asserts on what was received


def error_answer(status: int, kind: str, message: str, **headers: str) -> Answer:
    body: Wire = {"type": "error", "error": {"type": kind, "message": message}}
    return Answer(body, status, headers=dict(headers))


def retry_soon(status: int, kind: str, message: str) -> Answer:
    """An answer the SDK retries, asking it to wait a millisecond."""
    return error_answer(status, kind, message, **{"retry-after-ms": "1"})


def reply(
    *content: Wire, stop: str | None = "end_turn", usage: Wire | None = None, **fields: Any
) -> Wire:
    """A messages API reply body."""
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": list(content),
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage if usage is not None else {"input_tokens": 10, "output_tokens": 5},
        **fields,
    }


def text(value: str) -> Wire:
    return {"type": "text", "text": value}


def tool_use(call_id: str, name: str, arguments: Any) -> Wire:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


@pytest.fixture(autouse=True)
def hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads its key, base URL and headers from the environment:
    each test sets what it needs."""
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
        "ANTHROPIC_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_server() -> Iterator[Callable[[], FakeAnthropic]]:
    started: list[FakeAnthropic] = []

    def make() -> FakeAnthropic:
        fake = FakeAnthropic()
        fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def server(make_server: Callable[[], FakeAnthropic]) -> FakeAnthropic:
    return make_server()


@pytest_asyncio.fixture
async def model(server: FakeAnthropic) -> AsyncIterator[AnthropicModel]:
    async with AnthropicModel(MODEL, api_key=KEY, base_url=server.url) as built:
        yield built


ORDER = Tool(
    "order_status",
    "The status of an order.",
    lambda arguments: {"status": "shipped"},
    parameters={"type": "object", "properties": {"order": {"type": "string"}}},
)


# -- conversion ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_tool_call_round_trip(server: FakeAnthropic, model: AnthropicModel) -> None:
    arguments: JSONObject = {"order": "A-17", "lines": [1, 2.5, None], "note": "héllo 🌍"}
    server.answers = [
        reply(
            text("Let me look."),
            tool_use("toolu_1", "order_status", arguments),
            stop="tool_use",
            usage={
                "input_tokens": 31,
                "output_tokens": 12,
                "cache_read_input_tokens": 7,
                "cache_creation_input_tokens": None,
                "server_tool_use": {"web_search_requests": 2},
                "service_tier": "standard",
            },
        ),
        reply(text("Shipped "), text("on Monday."), usage={"input_tokens": 50, "output_tokens": 4}),
    ]
    transcript = [Message.system("You are support."), Message.user("Where is A-17?")]

    first = await model.complete(transcript, [ORDER.spec])
    assert first == Message.assistant(
        "Let me look.",
        (ToolCall("toolu_1", "order_status", arguments),),
        usage={
            "input_tokens": 31,
            "output_tokens": 12,
            "cache_read_input_tokens": 7,
            "server_tool_use.web_search_requests": 2,
        },
    )
    transcript += [first, Message.tool("toolu_1", "order_status", '{"status":"shipped"}')]
    second = await model.complete(transcript, [ORDER.spec])
    assert second == Message.assistant(
        "Shipped on Monday.", usage={"input_tokens": 50, "output_tokens": 4}
    )

    assert [r.path for r in server.received] == ["/v1/messages", "/v1/messages"]
    spec = {
        "name": "order_status",
        "description": "The status of an order.",
        "input_schema": {"type": "object", "properties": {"order": {"type": "string"}}},
    }
    question = {"role": "user", "content": "Where is A-17?"}
    assert server.bodies[0] == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": "You are support.",
        "messages": [question],
        "tools": [spec],
    }
    assert server.bodies[1] == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": "You are support.",
        "messages": [
            question,
            {
                "role": "assistant",
                "content": [text("Let me look."), tool_use("toolu_1", "order_status", arguments)],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": '{"status":"shipped"}',
                    }
                ],
            },
        ],
        "tools": [spec],
    }
    assert all(
        KEY in r.headers.values() or f"Bearer {KEY}" in r.headers.values() for r in server.received
    )


IMAGE: JSONObject = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
}


def busy_transcript() -> list[Message]:
    return [
        Message.system("Rule one."),
        Message.user(["Look at this:", IMAGE], phase="triage"),
        Message.assistant(None, (ToolCall("t1", "a", {"x": 1}), ToolCall("t2", "b", {}))),
        Message.started("t2", "b"),
        Message.tool("t1", "a", "one"),
        Message("tool", [text("two"), IMAGE], tool_call_id="t2", name="b"),
        Message.user("And now?"),
        Message.system("Rule two."),
        Message.assistant("Done.", note="meta stays local"),
        Message.user("Thanks."),
    ]


def test_results_are_grouped_system_joined_and_bookkeeping_skipped() -> None:
    model = AnthropicModel(MODEL, api_key=KEY, base_url="http://127.0.0.1:9")
    assert model.request(busy_transcript(), []) == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": "Rule one.\n\nRule two.",
        "messages": [
            {"role": "user", "content": [text("Look at this:"), IMAGE]},
            {
                "role": "assistant",
                "content": [tool_use("t1", "a", {"x": 1}), tool_use("t2", "b", {})],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
                    {"type": "tool_result", "tool_use_id": "t2", "content": [text("two"), IMAGE]},
                    text("And now?"),
                ],
            },
            {"role": "assistant", "content": [text("Done.")]},
            {"role": "user", "content": "Thanks."},
        ],
    }


@pytest.mark.asyncio
async def test_the_server_gets_what_request_builds(
    server: FakeAnthropic, model: AnthropicModel
) -> None:
    server.answers = [reply(text("ok"))]
    await model.complete(busy_transcript(), [ORDER.spec])
    assert server.bodies == [model.request(busy_transcript(), [ORDER.spec])]


def test_a_restored_transcript_builds_the_identical_request() -> None:
    model = AnthropicModel(MODEL, api_key=KEY, base_url="http://127.0.0.1:9")
    transcript = busy_transcript()
    restored = [Message.from_json(json.loads(json.dumps(m.to_json()))) for m in transcript]
    assert model.request(restored, [ORDER.spec]) == model.request(transcript, [ORDER.spec])


def test_system_parts_and_options_are_sent_as_given() -> None:
    cached: JSONObject = {
        "type": "text",
        "text": "Long rules.",
        "cache_control": {"type": "ephemeral"},
    }
    model = AnthropicModel(
        MODEL,
        api_key=KEY,
        base_url="http://127.0.0.1:9",
        max_tokens=64,
        options={"temperature": 0.0, "stop_sequences": ["END"]},
    )
    request = model.request([Message("system", [cached]), Message.system("More.")], [])
    assert request == {
        "model": MODEL,
        "max_tokens": 64,
        "system": [cached, text("More.")],
        "messages": [],
        "temperature": 0.0,
        "stop_sequences": ["END"],
    }


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        (Message("critic", "hm"), "role 'critic'"),
        (Message("tool", "x", name="a"), "without a tool_call_id"),
        (Message.user(["fine", 42]), "a content part must be"),
    ],
)
def test_what_the_api_cannot_take_is_a_model_error(message: Message, complaint: str) -> None:
    model = AnthropicModel(MODEL, api_key=KEY, base_url="http://127.0.0.1:9")
    with pytest.raises(ModelError, match=complaint):
        model.request([Message.user("hi"), message], [])


@pytest.mark.asyncio
async def test_thinking_blocks_are_kept_and_sent_back_exactly(
    server: FakeAnthropic, make_server: Callable[[], FakeAnthropic]
) -> None:
    thinking = {"type": "thinking", "thinking": "The order tool.", "signature": "c2ln"}
    cited = {"type": "text", "text": "Checking.", "citations": [{"type": "char_location"}]}
    server.answers = [
        reply(thinking, cited, tool_use("toolu_9", "order_status", {}), stop="tool_use"),
        reply(text("Shipped.")),
    ]
    options = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    async with AnthropicModel(MODEL, api_key=KEY, base_url=server.url, options=options) as model:
        first = await model.complete([Message.user("A-17?")], [ORDER.spec])
        assert first.content == [thinking, cited]
        assert first.text == "Checking."
        assert first.tool_calls == (ToolCall("toolu_9", "order_status", {}),)
        stored = Message.from_json(json.loads(json.dumps(first.to_json())))
        result = Message.tool("toolu_9", "order_status", "shipped")
        await model.complete([Message.user("A-17?"), stored, result], [ORDER.spec])
    assert server.bodies[1]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert server.bodies[1]["messages"][1] == {
        "role": "assistant",
        "content": [thinking, cited, tool_use("toolu_9", "order_status", {})],
    }


# -- through the executor ------------------------------------------------------------


FORECASTS = {"oslo": "4 °C, sleet", "lisbon": "19 °C, sunny"}


def forecast(arguments: JSONObject) -> JSON:
    city = str(arguments.get("city", "")).lower()
    if city not in FORECASTS:
        raise ToolError(f"no forecast for {city!r}")
    return {"city": city, "forecast": FORECASTS[city]}


FORECAST = Tool("forecast", "Today's forecast for a city.", forecast)


@pytest.mark.asyncio
async def test_a_multi_step_run_through_the_executor_on_sqlite(
    server: FakeAnthropic, tmp_path: Path
) -> None:
    server.answers = [
        reply(
            tool_use("toolu_a", "forecast", {"city": "Oslo"}),
            stop="tool_use",
            usage={"input_tokens": 100, "output_tokens": 20},
        ),
        reply(
            text("Two more."),
            tool_use("toolu_b", "forecast", {"city": "Lisbon"}),
            tool_use("toolu_c", "forecast", {"city": "Bergen"}),
            stop="tool_use",
            usage={"input_tokens": 150, "output_tokens": 30, "cache_read_input_tokens": 90},
        ),
        reply(text("Oslo: sleet. Lisbon: sun."), usage={"input_tokens": 200, "output_tokens": 9}),
    ]
    async with (
        AnthropicModel(MODEL, api_key=KEY, base_url=server.url) as model,
        outlast.open(f"sqlite:///{tmp_path}/runs.db") as store,
    ):
        executor = Executor(store)
        executor.register("weather", Agent(model, tools=[FORECAST], system="Be brief."))
        result = await executor.run("weather", "Oslo, Lisbon, Bergen?", run_id="w1")
        stored = await store.load("w1")

    assert result.output == "Oslo: sleet. Lisbon: sun."
    assert result.usage == {"input_tokens": 450, "output_tokens": 59, "cache_read_input_tokens": 90}
    assert stored is not None and stored.record.status is RunStatus.COMPLETED
    assert len(server.received) == 3  # one request per step
    assert server.bodies[2]["system"] == "Be brief."
    assert server.bodies[2]["messages"][1:] == [
        {"role": "assistant", "content": [tool_use("toolu_a", "forecast", {"city": "Oslo"})]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_a",
                    "content": '{"city":"oslo","forecast":"4 °C, sleet"}',
                }
            ],
        },
        {
            "role": "assistant",
            "content": [
                text("Two more."),
                tool_use("toolu_b", "forecast", {"city": "Lisbon"}),
                tool_use("toolu_c", "forecast", {"city": "Bergen"}),
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_b",
                    "content": '{"city":"lisbon","forecast":"19 °C, sunny"}',
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_c",
                    "content": "error: no forecast for 'bergen'",
                },
            ],
        },
    ]


def payment_script() -> list[Answer | Wire]:
    return [
        reply(
            tool_use("toolu_1", "forecast", {"city": "Oslo"}),
            stop="tool_use",
            usage={"input_tokens": 10, "output_tokens": 1},
        ),
        reply(
            text("Paying."),
            tool_use("toolu_2", "pay", {"amount": 5}),
            stop="tool_use",
            usage={"input_tokens": 20, "output_tokens": 2},
        ),
        reply(text("Paid 5."), usage={"input_tokens": 30, "output_tokens": 3}),
    ]


class Payments:
    """A ``retry=False`` tool (so the transcript holds the executor's
    bookkeeping note) that can shut its executor down as it pays."""

    def __init__(self, stop: Executor | None = None) -> None:
        self.paid: list[JSONObject] = []
        self.stop = stop

    def __call__(self, arguments: JSONObject) -> JSON:
        self.paid.append(arguments)
        if self.stop is not None:
            self.stop.shutdown()  # the deploy: this step finishes, then the run is released
        return "paid"

    def agent(self, model: AnthropicModel) -> Agent:
        pay = Tool("pay", "Pay an amount.", self, retry=False)
        return Agent(model, tools=[FORECAST, pay], system="Pay when asked.")


@pytest.mark.asyncio
async def test_a_run_stopped_at_a_tool_resumes_through_a_fresh_client(
    make_server: Callable[[], FakeAnthropic], tmp_path: Path
) -> None:
    # The same run uninterrupted: the requests a resume must reproduce.
    reference = make_server()
    reference.answers = payment_script()
    async with (
        AnthropicModel(MODEL, api_key=KEY, base_url=reference.url) as model,
        outlast.open("memory://") as memory,
    ):
        executor = Executor(memory)
        executor.register("pay", Payments().agent(model))
        assert (await executor.run("pay", "Check Oslo, then pay 5.")).output == "Paid 5."

    server = make_server()
    server.answers = payment_script()
    url = f"sqlite:///{tmp_path}/runs.db"
    async with (
        AnthropicModel(MODEL, api_key=KEY, base_url=server.url) as model,
        outlast.open(url) as store,
    ):
        first = Executor(store)
        payments = Payments(stop=first)
        first.register("pay", payments.agent(model))
        with pytest.raises(Shutdown):
            await first.run("pay", "Check Oslo, then pay 5.", run_id="p1")
        saved = await store.load("p1")
    assert saved is not None and saved.record.status is RunStatus.RUNNING
    assert MARKER in [m.role for m in saved.state.history]  # the note a resume must not send
    assert len(server.received) == 2

    # A new process: a fresh store handle, executor and client.
    async with (
        AnthropicModel(MODEL, api_key=KEY, base_url=server.url) as model,
        outlast.open(url) as store,
    ):
        second = Executor(store)
        resumed = Payments()
        second.register("pay", resumed.agent(model))
        report = await second.recover()
    (result,) = report.results
    assert result.resumed and result.output == "Paid 5."
    assert payments.paid == [{"amount": 5}] and resumed.paid == []  # paid once
    assert len(server.received) == 3  # asked once per step: the saved steps were not re-asked
    assert server.bodies == reference.bodies  # the restored transcript, exactly
    assert all(m["role"] in ("user", "assistant") for m in server.bodies[2]["messages"])
    assert result.usage == {"input_tokens": 60, "output_tokens": 6}


# -- malformed replies and stop reasons -------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (Answer(b"<html>Bad gateway</html>", content_type="text/html"), "not JSON"),
        (Answer(b'{"id": "msg_01", "content": [', content_type="application/json"), "not JSON"),
        ({"id": "msg_01", "type": "message", "stop_reason": "end_turn"}, "without a content"),
        (reply(stop="end_turn") | {"content": "Hello"}, "without a content list"),
        (reply({"text": "no type"}), "a content block without a type"),
        (reply({"type": "text"}), "a text block without text"),
        (reply(tool_use("t", "forecast", '{"city": "Os'), stop="tool_use"), "not a JSON object"),
        (reply(tool_use("t", "forecast", ["Oslo"]), stop="tool_use"), "not a JSON object"),
        (
            reply({"type": "tool_use", "name": "forecast", "input": {}}),
            "tool_use block without an id",
        ),
        (reply(tool_use("t", "", {}), stop="tool_use"), "without a name"),
        (reply(text("hm"), stop="gave_up"), "stop_reason 'gave_up'.*upgrade outlast"),
        (reply(text("hm"), stop=None), "without a stop_reason"),
        (reply(text("calling"), stop="tool_use"), "'tool_use' without a tool_use block"),
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "replied with an error: Overloaded",
        ),
    ],
)
@pytest.mark.asyncio
async def test_a_malformed_reply_is_a_model_error(
    server: FakeAnthropic, model: AnthropicModel, answer: Answer | Wire, complaint: str
) -> None:
    server.answers = [answer]
    with pytest.raises(ModelError, match=complaint) as raised:
        await model.complete([Message.user("hi")], [FORECAST.spec])
    assert f"at {server.url} " in str(raised.value)  # says which server
    assert len(server.received) == 1  # a 200 is never retried


@pytest.mark.parametrize(
    ("stop", "complaint"),
    [
        ("max_tokens", "cut off at 4096 tokens.*a larger max_tokens"),
        ("model_context_window_exceeded", "context window"),
        ("refusal", "refused to continue.*'I cannot'"),
        ("pause_turn", "pause_turn"),
    ],
)
@pytest.mark.asyncio
async def test_a_stop_reason_that_is_no_answer_is_a_model_error(
    server: FakeAnthropic, model: AnthropicModel, stop: str, complaint: str
) -> None:
    server.answers = [reply(text("I cannot"), stop=stop)]
    with pytest.raises(ModelError, match=complaint):
        await model.complete([Message.user("hi")], [])


@pytest.mark.asyncio
async def test_a_stop_sequence_is_an_answer(server: FakeAnthropic, model: AnthropicModel) -> None:
    server.answers = [reply(text("up to here"), stop="stop_sequence")]
    assert (await model.complete([Message.user("hi")], [])).content == "up to here"


@pytest.mark.asyncio
async def test_an_empty_reply_has_no_content(server: FakeAnthropic, model: AnthropicModel) -> None:
    server.answers = [reply()]
    assert (await model.complete([Message.user("hi")], [])).content is None


# -- retries and errors -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_429_and_a_5xx_are_retried_by_the_sdk_then_succeed(
    server: FakeAnthropic, model: AnthropicModel
) -> None:
    assert model.max_retries == anthropic.DEFAULT_MAX_RETRIES
    server.answers = [
        retry_soon(429, "rate_limit_error", "slow down"),
        retry_soon(500, "api_error", "oops"),
        reply(text("ok")),
    ]
    assert (await model.complete([Message.user("hi")], [])).content == "ok"
    assert [r.headers["x-stainless-retry-count"] for r in server.received] == ["0", "1", "2"]
    assert server.bodies[0] == server.bodies[1] == server.bodies[2]


@pytest.mark.parametrize("retries", [0, 1])
@pytest.mark.asyncio
async def test_max_retries_is_configurable(server: FakeAnthropic, retries: int) -> None:
    server.answers = [retry_soon(529, "overloaded_error", "Overloaded")] * 3
    async with AnthropicModel(MODEL, api_key=KEY, base_url=server.url, max_retries=retries) as m:
        with pytest.raises(
            ModelError, match=f"529 overloaded_error: Overloaded.*max_retries={retries}"
        ):
            await m.complete([Message.user("hi")], [])
    assert len(server.received) == retries + 1


@pytest.mark.asyncio
async def test_a_given_client_is_used_with_its_retries_overridden_and_left_open(
    server: FakeAnthropic,
) -> None:
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=server.url, max_retries=5)
    server.answers = [retry_soon(500, "api_error", "oops"), reply(text("ok"))]
    model = AnthropicModel(MODEL, client=client, max_retries=0)
    with pytest.raises(ModelError, match="500 api_error"):
        await model.complete([Message.user("hi")], [])
    await model.aclose()
    assert not client.is_closed()  # the caller's client is the caller's to close
    assert (
        await AnthropicModel(MODEL, client=client).complete([Message.user("hi")], [])
    ).text == "ok"
    await client.close()
    assert len(server.received) == 2


def no_key_in(*texts: str) -> bool:
    return all(KEY not in t for t in texts)


@pytest.mark.asyncio
async def test_a_401_is_a_model_error_that_never_shows_the_key(
    server: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # A server that echoes the key it was sent: the error quotes it hidden.
    server.answers = [error_answer(401, "authentication_error", f"invalid x-api-key {KEY}")]
    async with AnthropicModel(MODEL, api_key=KEY, base_url=server.url) as model:
        with pytest.raises(ModelError) as raised:
            await model.complete([Message.user("hi")], [])
        shown = repr(model)
    error = raised.value
    assert "401 authentication_error: invalid x-api-key ***" in str(error)
    assert "check the API key" in str(error)
    assert error.__cause__ is None  # the SDK's exception quotes the key: not chained
    assert KEY in " ".join(server.received[0].headers.values())  # it was sent, to the server
    assert no_key_in(str(error), repr(error), "".join(traceback.format_exception(error)), shown)
    assert no_key_in(caplog.text, *(str(r.__dict__) for r in caplog.records))


@pytest.mark.asyncio
async def test_a_400_is_a_model_error_saying_what_the_api_refused(
    server: FakeAnthropic, model: AnthropicModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.answers = [
        error_answer(400, "invalid_request_error", "max_tokens: 4096 > 1024, the maximum")
    ]
    with pytest.raises(ModelError) as raised:
        await model.complete([Message.user("hi")], [])
    error = raised.value
    assert str(error).startswith(
        f"the Anthropic API at {server.url} answered 400 invalid_request_error: "
        "max_tokens: 4096 > 1024, the maximum; check the model name 'claude-test-1'"
    )
    assert isinstance(error.__cause__, anthropic.BadRequestError)  # the SDK's details
    assert len(server.received) == 1  # a 400 is not retried
    assert no_key_in(str(error), "".join(traceback.format_exception(error)), caplog.text)


@pytest.mark.asyncio
async def test_an_error_page_is_quoted(server: FakeAnthropic) -> None:
    server.answers = [Answer(b"<html>\n<h1>Bad gateway</h1>\n</html>", 502, "text/html")]
    async with AnthropicModel(MODEL, api_key=KEY, base_url=server.url, max_retries=0) as model:
        with pytest.raises(ModelError, match="answered 502: <html> <h1>Bad gateway</h1> </html>;"):
            await model.complete([Message.user("hi")], [])


@pytest.mark.asyncio
async def test_a_failed_run_stores_no_key(
    server: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.answers = [error_answer(401, "authentication_error", f"bad key {KEY}")]
    async with (
        AnthropicModel(MODEL, api_key=KEY, base_url=server.url) as model,
        outlast.open("memory://") as store,
    ):
        executor = Executor(store)
        executor.register("k", Agent(model))
        with pytest.raises(ModelError) as raised:
            await executor.run("k", "hi", run_id="r1")
        stored = await store.load("r1")
    assert stored is not None and stored.record.status is RunStatus.FAILED
    assert "401 authentication_error" in (stored.record.error or "")
    assert no_key_in(stored.record.error or "", str(raised.value), caplog.text)


@pytest.mark.asyncio
async def test_the_key_defaults_to_the_sdk_environment_variable(
    server: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    server.answers = [error_answer(403, "permission_error", f"{KEY} may not use this model")]
    async with AnthropicModel(MODEL, base_url=server.url) as model:
        with pytest.raises(ModelError, match=r"403 permission_error.*may use the model") as raised:
            await model.complete([Message.user("hi")], [])
        assert no_key_in(repr(model), str(raised.value))
    assert KEY in " ".join(server.received[0].headers.values())


@pytest.mark.asyncio
async def test_a_wrong_base_url_names_the_model_and_the_url(server: FakeAnthropic) -> None:
    async with AnthropicModel(MODEL, api_key=KEY, base_url=f"{server.url}/wrong") as model:
        with pytest.raises(ModelError, match=r"404 not_found_error.*check the model name"):
            await model.complete([Message.user("hi")], [])
    assert server.received[0].path == "/wrong/v1/messages"


@pytest.mark.asyncio
async def test_an_unreachable_server_is_a_model_error() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with AnthropicModel(MODEL, api_key=KEY, base_url=url, max_retries=0) as model:
        with pytest.raises(ModelError, match=f"{url} failed.*check the base URL"):
            await model.complete([Message.user("hi")], [])


# -- construction -------------------------------------------------------------------------


def test_repr_shows_the_model_and_base_url_only() -> None:
    model = AnthropicModel(MODEL, api_key=KEY, base_url="http://proxy:s3cret@127.0.0.1:9/")
    assert (
        repr(model)
        == "AnthropicModel(model='claude-test-1', base_url='http://proxy:***@127.0.0.1:9/')"
    )
    assert isinstance(model, outlast.Model)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"model": ""}, "model name must be"),
        ({"max_tokens": 0}, "max_tokens must be"),
        ({"max_retries": -1}, "max_retries must be"),
        ({"options": {"messages": [], "system": "x"}}, "may not set messages, system"),
        ({"client": "CLIENT", "api_key": KEY}, "either client= or api_key="),
    ],
)
def test_a_wrong_setting_is_a_configuration_error(options: Wire, complaint: str) -> None:
    settings: Wire = {"model": MODEL, **options}
    if settings.get("client") == "CLIENT":
        settings["client"] = anthropic.AsyncAnthropic(api_key=KEY, base_url="http://127.0.0.1:9")
    with pytest.raises(ConfigurationError, match=complaint):
        AnthropicModel(**settings)
