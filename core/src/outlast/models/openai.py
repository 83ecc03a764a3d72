"""``OpenAIModel``: chat completions with tools, on the official ``openai`` SDK.

It serves OpenAI and any server that speaks the chat completions API (vLLM,
Ollama, LM Studio, llama.cpp's server, LiteLLM and other gateways): name the
server with ``base_url``. Install it with ``pip install "outlast[openai]"``::

    import outlast
    from outlast.models.openai import OpenAIModel

    async def main():
        async with (
            OpenAIModel("qwen2.5:7b", base_url="http://localhost:11434/v1", api_key="unused")
            as model,
            outlast.open() as store,
        ):
            executor = outlast.Executor(store)
            executor.register("ask", outlast.Agent(model, tools=[...], system="Be brief."))
            result = await executor.run("ask", "What is 17% of 2,340?")
        print(result.output, result.usage)

A whole app (tools, Ctrl-C, recovery) is ``examples/openai_compatible``.

``OpenAIModel(model, client=AsyncOpenAI(...))`` uses a client you built (it
is not closed by :meth:`~OpenAIModel.aclose`); otherwise the model builds an
``AsyncOpenAI`` from ``base_url`` (default: the SDK's ``OPENAI_BASE_URL``,
else OpenAI's API), ``api_key`` (default: the SDK's ``OPENAI_API_KEY``; a
server that checks no key takes any value), ``max_retries`` and ``timeout``.
``options`` are more keyword arguments of every ``chat.completions.create``
call: ``temperature``, ``max_completion_tokens``, ``tool_choice``,
``parallel_tool_calls``, or ``extra_body`` for a server's own parameters.

**The request** (:meth:`OpenAIModel.request` builds it from the transcript
alone, so a transcript restored from a store gives the identical request):

* messages of role ``"outlast"`` (the executor's bookkeeping) are skipped;
  ``meta`` and ``usage`` are never sent;
* ``system``, ``developer`` and ``user`` messages keep their content (and
  ``name``); an ``assistant`` message sends its content (``null`` when it
  only calls tools) and its tool calls as ``{"id", "type": "function",
  "function": {"name", "arguments"}}`` with the arguments as JSON text; a
  ``tool`` message sends ``tool_call_id`` and content (the tool's name is
  not sent: the API pairs a result with its call by id);
* content that is a list of parts is sent part by part in the API's own
  format: ``{"type": "text", "text": ...}``, ``{"type": "image_url",
  "image_url": {"url": ...}}``, ``{"type": "input_audio", ...}``,
  ``{"type": "file", ...}``, an assistant's ``{"type": "refusal", ...}``;
  a bare string part is sent as a text part;
* each tool spec becomes ``{"type": "function", "function": spec}``; with
  no tools, ``tools`` is left out.

**The reply** is the first choice's message: its text (a list of parts if
the server sends parts), a refusal as a ``{"type": "refusal", "refusal":
...}`` part after any text, and its tool calls with their arguments decoded
(empty arguments are ``{}``). ``Message.usage`` holds ``input_tokens``
(``prompt_tokens``) and ``output_tokens`` (``completion_tokens``), and the
server's other integer counts under their own names, nested ones as
``prompt_tokens_details.cached_tokens``; counts the server left out are
left out. A ModelError, and no reply, when the server's answer is not a
chat completion, has no choice or message, holds neither text nor a tool
call, calls a tool with arguments that are not a JSON object, or stopped
for ``length`` (raise ``max_completion_tokens``) or ``content_filter``.
Any other ``finish_reason`` is accepted: compatible servers use their own
(TGI's ``eos_token``, for one).

**Errors.** The SDK retries connection errors, timeouts, 408, 409, 429 and
5xx with its own backoff (``max_retries``, the SDK's default 2). What still
fails, and every other error status, is a :class:`~outlast.ModelError` that
says what the server answered and what to check (the key, the model name,
the base URL). The API key never appears in a repr, an error or a log of
this module: texts quoting the server are passed through
:func:`outlast.urls.redact` with the key as a secret, and an SDK exception
whose text holds the key is not chained.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import openai
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
)

from outlast.errors import ConfigurationError, ModelError
from outlast.messages import JSON, MARKER, JSONObject, Message, ToolCall
from outlast.urls import redact

__all__ = ["OpenAIModel"]

_SENT_BY_THE_MODEL = frozenset({"model", "messages", "tools"})
_ROLES = ("system", "developer", "user", "assistant", "tool")
_USAGE_NAMES = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens"}
_QUOTED = 500
"""Characters of a server's answer quoted in an error."""


class OpenAIModel:
    """An :class:`outlast.Model` over the chat completions API (see the module docstring).

    Stateless: each :meth:`complete` builds its request from the transcript
    it is given, so a resumed run continues through a fresh client.
    """

    def __init__(
        self,
        model: str,
        *,
        client: openai.AsyncOpenAI | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"the model name must be a non-empty string, got {model!r}")
        if max_retries is not None and (isinstance(max_retries, bool) or max_retries < 0):
            raise ConfigurationError(f"max_retries must be 0 or more, got {max_retries!r}")
        self.model = model
        self.options = dict(options or {})
        _check_options(self.options)
        if client is not None:
            if base_url is not None or api_key is not None:
                raise ConfigurationError(
                    "pass either client= or base_url=/api_key=, not both: a client you built "
                    "already has its base URL and key"
                )
            self._owned = False
            if max_retries is not None or timeout is not None:
                client = client.with_options(
                    max_retries=client.max_retries if max_retries is None else max_retries,
                    timeout=client.timeout if timeout is None else timeout,
                )
            self._client = client
            return
        self._owned = True
        try:
            self._client = openai.AsyncOpenAI(
                base_url=base_url,
                api_key=api_key,
                max_retries=openai.DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
                timeout=openai.DEFAULT_TIMEOUT if timeout is None else timeout,
            )
        except openai.OpenAIError as exc:  # missing credentials: its text holds no key
            raise ConfigurationError(
                f"cannot build the OpenAI client for model {model!r}: {exc} (a server that "
                "checks no key, such as a local vLLM, Ollama or LM Studio, takes any value, "
                "e.g. api_key='unused')"
            ) from exc

    @property
    def base_url(self) -> str:
        """The server's base URL, without any password or key it holds."""
        return self._redacted(str(self._client.base_url))

    @property
    def max_retries(self) -> int:
        """How often the SDK retries a request that may succeed later."""
        return self._client.max_retries

    def __repr__(self) -> str:
        return f"OpenAIModel(model={self.model!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Close the HTTP connections of the client this model built (not one passed in)."""
        if self._owned:
            await self._client.close()

    async def __aenter__(self) -> OpenAIModel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def request(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> dict[str, Any]:
        """The keyword arguments of the ``chat.completions.create`` call for
        this transcript and these tool specs (the same for the same input)."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [_to_wire(message) for message in messages if message.role != MARKER],
        }
        if tools:
            request["tools"] = [{"type": "function", "function": dict(spec)} for spec in tools]
        request.update(self.options)
        return request

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        """Ask the server for the next assistant message (see the module docstring)."""
        request = self.request(messages, tools)
        try:
            completion = await self._client.chat.completions.create(**request)
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from self._cause(exc)
        except openai.APITimeoutError as exc:
            raise ModelError(
                f"{self._server} did not answer within the timeout, {self._retried(exc)}; "
                "check that it is up and not overloaded, or raise timeout="
            ) from exc
        except openai.APIConnectionError as exc:
            why = self._redacted(str(exc.__cause__ or exc))
            raise ModelError(
                f"cannot reach {self._server} ({why}), {self._retried(exc)}; check the base "
                "URL and that the server is running"
            ) from self._cause(exc)
        except json.JSONDecodeError as exc:
            raise ModelError(
                f"{self._server} answered with a body that is not JSON ({exc}); check that the "
                "base URL names an OpenAI-compatible API (it usually ends in /v1)"
            ) from exc
        except openai.OpenAIError as exc:
            raise ModelError(
                f"the request to {self._server} failed: {self._redacted(str(exc))}"
            ) from self._cause(exc)
        try:
            return _Reader(self._secrets()).message(completion)
        except ModelError as exc:  # its text quotes the reply with the key hidden
            raise ModelError(f"{self._server}: {exc}") from None

    # -- errors ----------------------------------------------------------------------

    @property
    def _server(self) -> str:
        return f"the chat completions server at {self.base_url} (model {self.model!r})"

    def _retried(self, exc: openai.APIError) -> str:
        """How often the SDK retried the request (its own header counts them)."""
        taken = exc.request.headers.get("x-stainless-retry-count", "")
        if not taken.isdigit():
            return f"with max_retries={self.max_retries}"
        retries = "retry" if taken == "1" else "retries"
        return f"after {taken} {retries} (max_retries={self.max_retries})"

    def _secrets(self) -> list[str]:
        key = self._client.api_key
        return [key] if key else []

    def _redacted(self, text: str) -> str:
        return redact(text, secrets=self._secrets())

    def _cause(self, exc: openai.OpenAIError) -> openai.OpenAIError | None:
        """``exc`` to chain a ModelError to, or None when its text (which
        quotes the server, or the transport's error) holds the key."""
        told = f"{exc} {getattr(exc, 'body', '')!r} {exc.__cause__}"
        return None if any(secret in told for secret in self._secrets()) else exc

    def _status_error(self, exc: openai.APIStatusError) -> ModelError:
        status = exc.status_code
        said = self._redacted(_what_the_server_said(exc))
        if len(said) > _QUOTED:  # cut after hiding the key: no part of it is left at the cut
            said = said[:_QUOTED] + "..."
        request_id = f" (request id {exc.request_id})" if exc.request_id else ""
        return ModelError(
            f"{self._server} answered {status}{request_id}: {said}; {self._hint(exc)}"
        )

    def _hint(self, exc: openai.APIStatusError) -> str:
        status = exc.status_code
        if status == 401:
            return (
                "check the API key (api_key=, or the environment variable OPENAI_API_KEY): "
                "it is missing, wrong or expired, or not a key of this server"
            )
        if status == 403:
            return f"check that the API key may use model {self.model!r} (its project, its rights)"
        if status == 404:
            return (
                f"check the model name {self.model!r} (the server must serve it) and the base "
                f"URL: the client posts to {self.base_url.rstrip('/')}/chat/completions, and "
                "compatible servers usually want a base URL ending in /v1"
            )
        if status in (400, 413, 422):
            return (
                f"the server refused the request: check that model {self.model!r} supports "
                "tool calls, that the options are ones this server takes, and the transcript's "
                "size against the model's context"
            )
        if status in (408, 409, 429) or status >= 500:
            return f"still failing {self._retried(exc)}: try again later, or raise max_retries"
        return "check the base URL, the model name and the API key"


def _what_the_server_said(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            said = message
        else:
            said = json.dumps(body, ensure_ascii=False, default=str)
    elif isinstance(body, str) and body:
        said = body
    else:
        said = exc.response.text or "(an empty body)"
    return said


def _check_options(options: Mapping[str, Any]) -> None:
    taken = sorted(_SENT_BY_THE_MODEL.intersection(options))
    if taken:
        raise ConfigurationError(
            f"options may not set {', '.join(taken)}: the model sends them itself"
        )
    if options.get("stream"):
        raise ConfigurationError(
            "options may not set stream: complete() returns whole replies (the executor saves "
            "each reply before any of its tools runs)"
        )


# -- outlast -> the API ------------------------------------------------------------------


def _to_wire(message: Message) -> dict[str, Any]:
    """One transcript message as a chat completions message (see the module docstring)."""
    role = message.role
    if role not in _ROLES:
        raise ModelError(
            f"a message of role {role!r} has no chat completions form; the roles sent are "
            f"{', '.join(_ROLES)}"
        )
    if role == "tool":
        if message.tool_call_id is None:
            raise ModelError("a tool message has no tool_call_id: the API pairs results by id")
        content = _content(message.content)
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": content or ""}
    wire: dict[str, Any] = {"role": role}
    if role == "assistant":
        wire["content"] = _content(message.content)
    else:
        wire["content"] = _content(message.content) or ""
    if message.name is not None:
        wire["name"] = message.name
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": json.dumps(call.arguments, ensure_ascii=False),
                },
            }
            for call in message.tool_calls
        ]
    return wire


def _content(content: str | list[JSON] | None) -> str | list[JSON] | None:
    if not isinstance(content, list):
        return content
    parts: list[JSON] = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
        elif isinstance(part, dict):
            parts.append(part)
        else:
            raise ModelError(f"a content part must be text or a part object, got {part!r:.80}")
    return parts


# -- the API -> outlast ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reader:
    """Reads a chat completion into an assistant Message (see the module
    docstring); its ModelErrors quote the reply with ``secrets`` hidden."""

    secrets: Sequence[str]

    def message(self, completion: object) -> Message:
        if not isinstance(completion, ChatCompletion):
            raise ModelError(f"the reply is not a chat completion: {self.quote(completion)}")
        choices = completion.choices
        if not isinstance(choices, list) or not choices:
            raise ModelError(f"the reply has no choices: {self.quote(choices)}")
        choice = choices[0]
        message = getattr(choice, "message", None)
        if not isinstance(message, ChatCompletionMessage):
            raise ModelError(f"the reply's choice has no message: {self.quote(choice)}")
        finish = getattr(choice, "finish_reason", None)
        if finish == "length":
            raise ModelError(
                "the reply was cut off at the model's token limit (finish_reason 'length'); "
                "raise max_completion_tokens (or max_tokens) in options="
            )
        if finish == "content_filter":
            raise ModelError("the server withheld the reply (finish_reason 'content_filter')")
        content = self.content(message)
        calls = self.tool_calls(message.tool_calls)
        if content is None and not calls:
            legacy = " (a deprecated function_call: send tools)" if message.function_call else ""
            raise ModelError(f"the reply holds neither text nor a tool call{legacy}")
        return Message("assistant", content, tool_calls=calls, usage=_usage(completion.usage))

    def content(self, message: ChatCompletionMessage) -> str | list[JSON] | None:
        content: object = message.content
        refusal: object = message.refusal
        if content is not None and not isinstance(content, str | list):
            raise ModelError(
                f"the reply's content is neither text nor parts: {self.quote(content)}"
            )
        if isinstance(content, list) and not all(isinstance(part, dict) for part in content):
            raise ModelError(
                f"the reply's content parts are not all objects: {self.quote(content)}"
            )
        if not isinstance(refusal, str) or not refusal:
            return content
        parts: list[JSON] = []
        if isinstance(content, list):
            parts.extend(content)
        elif content:
            parts.append({"type": "text", "text": content})
        parts.append({"type": "refusal", "refusal": refusal})
        return parts

    def tool_calls(self, calls: object) -> tuple[ToolCall, ...]:
        if calls is None:
            return ()
        if not isinstance(calls, list):
            raise ModelError(f"the reply's tool_calls is not a list: {self.quote(calls)}")
        converted = []
        for call in calls:
            if not isinstance(call, ChatCompletionMessageFunctionToolCall):
                raise ModelError(
                    f"the reply calls a tool that is not a function: {self.quote(call)}"
                )
            function = call.function
            name = getattr(function, "name", None)
            if not isinstance(name, str) or not name:
                raise ModelError(f"a tool call of the reply names no function: {self.quote(call)}")
            call_id = call.id if isinstance(call.id, str) else ""  # the loop numbers a missing id
            converted.append(ToolCall(call_id, name, self.arguments(name, function.arguments)))
        return tuple(converted)

    def arguments(self, name: str, arguments: object) -> JSONObject:
        if isinstance(arguments, dict):  # a server that sends the object itself
            return arguments
        if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
            return {}
        if isinstance(arguments, str):
            try:
                decoded = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise ModelError(
                    f"the model called tool {name!r} with arguments that are not JSON ({exc}): "
                    f"{self.quote(arguments)}"
                ) from None
            if isinstance(decoded, dict):
                return decoded
        raise ModelError(
            f"the model called tool {name!r} with arguments that are not a JSON object: "
            f"{self.quote(arguments)}"
        )

    def quote(self, value: object, limit: int = 200) -> str:
        """``repr(value)`` without secrets, cut to ``limit`` characters (after
        hiding them, so no part of a secret is left at the cut)."""
        text = redact(repr(value), secrets=self.secrets)
        return text if len(text) <= limit else text[:limit] + "..."


def _usage(usage: object) -> dict[str, int] | None:
    counts: dict[str, int] = {}
    if isinstance(usage, openai.BaseModel):
        _counts(usage, "", counts)
    return counts or None


def _counts(
    fields: openai.BaseModel | Mapping[str, object], prefix: str, counts: dict[str, int]
) -> None:
    items = fields.items() if isinstance(fields, Mapping) else iter(fields)
    for name, value in items:
        if isinstance(value, int) and not isinstance(value, bool):
            counts[_USAGE_NAMES.get(name, name) if not prefix else prefix + name] = value
        elif isinstance(value, openai.BaseModel | Mapping):
            _counts(value, f"{prefix}{name}.", counts)
