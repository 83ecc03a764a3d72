"""``AnthropicModel``: :class:`outlast.Model` on Anthropic's messages API.

Install with ``pip install "outlast[anthropic]"`` (the official ``anthropic``
SDK). The SDK owns the HTTP, the wire types and the retries; this module
converts outlast's transcript to a ``messages.create`` request and the reply
back to an assistant :class:`~outlast.Message`, exactly, both ways::

    import outlast
    from outlast import Agent, Executor
    from outlast.models.anthropic import AnthropicModel

    async def main():
        # the API key comes from ANTHROPIC_API_KEY (or api_key=..., or client=...)
        async with AnthropicModel("claude-sonnet-4-5") as model:
            async with outlast.open("sqlite:///runs.db") as store:
                executor = Executor(store)
                executor.register("support", Agent(model, tools=[...], system="Be brief."))
                result = await executor.run("support", "Where is my order A-17?")

The client is stateless: each request is built from the transcript alone, so
a run resumed in another process, with a new client, sends the request the
interrupted one would have sent (same body, byte for byte, given the same
settings).

**Request** (``messages.create(model, max_tokens, system, messages, tools,
**options)``):

* ``system`` messages are taken out of the transcript and joined, in order,
  into the ``system`` parameter (texts joined by a blank line; when one has a
  list of parts, ``system`` is the list of their text blocks). The API has no
  system turn, so their position in the transcript is not kept.
* ``user`` messages are ``user`` turns; text stays text.
* ``assistant`` messages are ``assistant`` turns of content blocks: the text
  (or the list of parts) first, then one ``tool_use`` block per tool call
  (``id``, ``name``, ``input`` = the call's arguments).
* ``tool`` messages become ``tool_result`` blocks (``tool_use_id`` = the
  message's ``tool_call_id``, ``content`` = its text or parts). Consecutive
  results go in one ``user`` turn, as the API requires, and a ``user``
  message right after them joins that turn (after the results). outlast's
  ``"error: ..."`` results are sent as plain results (``is_error`` is not
  set): the model reads the text.
* Messages with the role ``outlast`` (:data:`outlast.messages.MARKER`, the
  executor's bookkeeping) are never sent; nor is any message's ``meta``.
* Tool specs become ``{"name", "description", "input_schema"}``.

**Content parts.** A message's content may be a list of parts. A string part
and ``{"type": "text", "text": ...}`` are text; every other part is passed
through unchanged, so it must be a content block in the Anthropic API's own
format, e.g. ``{"type": "image", "source": {"type": "base64", "media_type":
"image/png", "data": ...}}`` or ``{"type": "document", "source": {...}}``
(keys such as ``cache_control`` pass through too).

**Reply.** ``text`` blocks become the message's text (joined), ``tool_use``
blocks its :class:`~outlast.ToolCall`s (``input`` must be a JSON object).
When the reply holds other blocks (``thinking``, ``redacted_thinking``, text
with citations...) the content is instead the list of the non-tool blocks in
the API's format, so they are sent back exactly as received (extended
thinking with tool use needs that). ``usage`` maps onto ``Message.usage``:
``input_tokens`` and ``output_tokens``, plus the API's other top-level
integer counts under its names (``cache_creation_input_tokens``,
``cache_read_input_tokens``, nested ones as ``server_tool_use.web_search_requests``);
absent and null counts are left out.

**Stop reasons.** ``end_turn``, ``stop_sequence`` and ``tool_use`` are
replies. Any other ends the run with :class:`~outlast.ModelError`, whose text
says what to change: ``max_tokens`` (the reply was cut off: raise
``max_tokens``), ``model_context_window_exceeded``, ``refusal``,
``pause_turn`` (server tools, which this client does not send), and a stop
reason this module does not know.

**Errors and retries.** Rate limits (429), overload and 5xx answers and
connection errors are retried by the SDK with its own backoff, up to
``max_retries`` times (default: the SDK's). What still fails, a reply that is
not a usable message, and every other API error (401, 400, 404...) is raised
as :class:`~outlast.ModelError` saying the status, what the server said and
what to check (the key, the model name, the base URL). The API key appears in
no error text, traceback or ``repr``: a server that echoes it is redacted,
and an SDK exception that quotes it is not chained.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, NoReturn, cast

try:
    import anthropic
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'outlast.models.anthropic needs the Anthropic SDK: pip install "outlast[anthropic]"'
    ) from exc

from outlast.errors import ConfigurationError, ModelError
from outlast.messages import JSON, MARKER, JSONObject, Message, ToolCall
from outlast.urls import redact

__all__ = ["DEFAULT_MAX_TOKENS", "AnthropicModel"]

DEFAULT_MAX_TOKENS = 4096
"""The reply length asked for when none is given: within every current
model's output limit, ample for a tool call or a step's answer."""

Wire = dict[str, Any]
"""A request or reply object in the API's JSON format."""

_SET_BY_THE_CLIENT = frozenset({"model", "max_tokens", "messages", "system", "tools", "stream"})

_REPLIES = frozenset({"end_turn", "stop_sequence", "tool_use"})

_SHOWN = 300  # characters of a server's text quoted in an error


class AnthropicModel:
    """:class:`outlast.Model` over Anthropic's messages API (see the module docstring).

    ``model`` is the API's model name. Give an SDK client (``client=``, an
    ``anthropic.AsyncAnthropic``, which this object then never closes) or let
    it build one from ``api_key`` (default: the SDK's ``ANTHROPIC_API_KEY``)
    and ``base_url`` (default: the SDK's, ``ANTHROPIC_BASE_URL`` or Anthropic's
    API); a built client is closed by :meth:`aclose` (or ``async with``).
    ``max_tokens`` caps each reply. ``max_retries`` is the SDK's retry count
    for rate limits, 5xx and connection errors, ``timeout`` its timeout of
    one attempt in seconds (defaults: the SDK's).
    ``options`` are further ``messages.create`` parameters sent with every
    request (``temperature``, ``stop_sequences``, ``tool_choice``,
    ``thinking``, ``metadata``...).
    """

    def __init__(
        self,
        model: str,
        *,
        client: anthropic.AsyncAnthropic | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_retries: int | None = None,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigurationError(
                f"the model name must be a non-empty string (e.g. 'claude-sonnet-4-5'), "
                f"got {model!r}"
            )
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if max_retries is not None and max_retries < 0:
            raise ConfigurationError(f"max_retries must be 0 or more, got {max_retries!r}")
        clash = sorted(_SET_BY_THE_CLIENT.intersection(options or {}))
        if clash:
            raise ConfigurationError(
                f"options may not set {', '.join(clash)}: AnthropicModel sends them itself "
                "(pass max_tokens= to AnthropicModel; the transcript and tools come from the run)"
            )
        if client is None:
            self._owns_client = True
            client = anthropic.AsyncAnthropic(
                api_key=api_key,
                base_url=base_url,
                max_retries=anthropic.DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
                timeout=anthropic.DEFAULT_TIMEOUT if timeout is None else timeout,
            )
        else:
            if api_key is not None or base_url is not None:
                raise ConfigurationError(
                    "pass either client= or api_key=/base_url=, not both: a client you built "
                    "already has its base URL and key"
                )
            self._owns_client = False
            if max_retries is not None or timeout is not None:
                client = client.with_options(
                    max_retries=client.max_retries if max_retries is None else max_retries,
                    timeout=client.timeout if timeout is None else timeout,
                )
        self.model = model
        self.max_tokens = max_tokens
        self.options: dict[str, Any] = dict(options or {})
        self._client = client

    @property
    def base_url(self) -> str:
        """The API's URL (any password in it hidden)."""
        return redact(str(self._client.base_url))

    @property
    def max_retries(self) -> int:
        return self._client.max_retries

    def __repr__(self) -> str:
        return f"AnthropicModel(model={self.model!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Close the SDK client if this object built it (a given one is the caller's)."""
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> AnthropicModel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        """Ask the API for the next assistant message of ``messages``."""
        request = self.request(messages, tools)
        try:
            reply: object = await self._client.messages.create(**request)
        except anthropic.APIStatusError as exc:
            self._fail(self._status_error(exc), exc)
        except anthropic.APIConnectionError as exc:
            what = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "failed"
            self._fail(
                f"the request to the Anthropic API at {self.base_url} {what}: "
                f"{exc.__cause__ or exc} (retried up to max_retries={self.max_retries} times); "
                "check the base URL and the network",
                exc,
            )
        except (anthropic.APIResponseValidationError, json.JSONDecodeError) as exc:
            self._fail(self._malformed(f"a body that is not JSON or not a message ({exc})"), exc)
        except (anthropic.AnthropicError, TypeError, ValueError) as exc:
            # TypeError: the SDK's "Could not resolve authentication method".
            self._fail(
                f"the Anthropic SDK failed: {type(exc).__name__}: {exc}; check the API key "
                "(api_key=, client= or the ANTHROPIC_API_KEY environment variable), the model "
                f"name {self.model!r} and the base URL {self.base_url}",
                exc,
            )
        return self._reply(reply)

    def request(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Wire:
        """The ``messages.create`` parameters for ``messages`` and ``tools``:
        what is sent (the API key goes in a header, not here)."""
        request: Wire = {"model": self.model, "max_tokens": self.max_tokens}
        system = _system(messages)
        if system:
            request["system"] = system
        request["messages"] = _turns(messages)
        if tools:
            request["tools"] = [_tool(spec) for spec in tools]
        request.update(self.options)
        return request

    # -- the reply ---------------------------------------------------------------

    def _reply(self, reply: object) -> Message:
        if isinstance(reply, str):  # the SDK hands back a body that is not JSON as text
            self._fail(self._malformed(f"a body that is not JSON: {reply!r:.{_SHOWN}}"))
        if not isinstance(reply, anthropic.types.Message):
            self._fail(self._malformed(f"{type(reply).__name__}, not a message"))
        data = reply.to_dict(mode="json", warnings=False)
        if data.get("type") == "error":
            self._fail(self._malformed(f"an error: {_said(data)}"))
        blocks = data.get("content")
        if not isinstance(blocks, list):
            self._fail(self._malformed(f"a message without a content list: {_show(data)}"))
        self._check_stop(data.get("stop_reason"), blocks)
        texts: list[str] = []
        parts: list[JSON] = []
        calls: list[ToolCall] = []
        plain = True
        for block in blocks:
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                self._fail(self._malformed(f"a content block without a type: {_show(block)}"))
            if block["type"] == "tool_use":
                calls.append(self._call(block))
                continue
            parts.append(cast(JSON, block))
            if block["type"] == "text":
                if not isinstance(block.get("text"), str):
                    self._fail(self._malformed(f"a text block without text: {_show(block)}"))
                texts.append(block["text"])
                # citations and the like are kept only in the API's format
                plain = plain and all(
                    v is None for k, v in block.items() if k not in ("type", "text")
                )
            else:
                plain = False
        content: str | list[JSON] | None = parts
        if plain:
            content = "".join(texts) if texts else None
        usage = _counts(data.get("usage"), "", {}) or None
        return Message("assistant", content, tool_calls=tuple(calls), usage=usage)

    def _check_stop(self, stop: object, blocks: list[Any]) -> None:
        if stop in _REPLIES:
            if stop == "tool_use" and not any(
                isinstance(b, dict) and b.get("type") == "tool_use" for b in blocks
            ):
                self._fail(self._malformed("stop_reason 'tool_use' without a tool_use block"))
            return
        text = "".join(
            b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
        if stop == "max_tokens":
            self._fail(
                f"the reply of {self.model!r} was cut off at {self.max_tokens} tokens "
                "(stop_reason 'max_tokens'); give AnthropicModel a larger max_tokens"
            )
        if stop == "model_context_window_exceeded":
            self._fail(
                f"the transcript filled the context window of {self.model!r} (stop_reason "
                "'model_context_window_exceeded'); shorten what the run sends: smaller tool "
                "results, fewer steps, or a model with a larger context window"
            )
        if stop == "refusal":
            self._fail(
                f"{self.model!r} refused to continue (stop_reason 'refusal'): {text!r:.{_SHOWN}}"
            )
        if stop == "pause_turn":
            self._fail(
                "the API paused a server tool's turn (stop_reason 'pause_turn'); AnthropicModel "
                "sends only the run's own tools: remove server tools from the options"
            )
        if stop is None:
            self._fail(self._malformed("a message without a stop_reason"))
        self._fail(
            self._malformed(
                f"the stop_reason {stop!r:.100}, which this outlast does not know (it knows "
                f"{', '.join(sorted(_REPLIES))}, max_tokens, model_context_window_exceeded, "
                "refusal, pause_turn); upgrade outlast, or report it"
            )
        )

    def _call(self, block: dict[str, Any]) -> ToolCall:
        call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
        if not isinstance(call_id, str) or not call_id:
            self._fail(self._malformed(f"a tool_use block without an id: {_show(block)}"))
        if not isinstance(name, str) or not name:
            self._fail(self._malformed(f"a tool_use block without a name: {_show(block)}"))
        if not isinstance(arguments, dict):
            self._fail(
                self._malformed(
                    f"tool call {name!r} with arguments (input) that are not a JSON object: "
                    f"{arguments!r:.{_SHOWN}}"
                )
            )
        return ToolCall(call_id, name, cast(JSONObject, arguments))

    # -- errors ------------------------------------------------------------------

    def _malformed(self, what: str) -> str:
        return (
            f"the Anthropic API at {self.base_url} replied with {what}; check that the base URL "
            "serves Anthropic's messages API (POST /v1/messages)"
        )

    def _status_error(self, exc: anthropic.APIStatusError) -> str:
        status = exc.status_code
        kind = _error_type(exc.body)
        request_id = exc.response.headers.get("request-id")
        where = f" (request id {request_id})" if request_id else ""
        head = (
            f"the Anthropic API at {self.base_url} answered {status}"
            f"{' ' + kind if kind else ''}: {_said(exc.body)}{where}"
        )
        if status == 401:
            hint = (
                "check the API key (api_key=, client= or the ANTHROPIC_API_KEY environment "
                "variable) and that it belongs to this base URL"
            )
        elif status == 403:
            hint = f"check that the API key may use the model {self.model!r}"
        elif status == 404:
            hint = f"check the model name {self.model!r} and the base URL"
        elif status == 413:
            hint = "the request is too large: the transcript or its attachments exceed the limit"
        elif status in (408, 409, 429) or status >= 500:
            hint = (
                f"the SDK retried it up to max_retries={self.max_retries} times; try again "
                "later, or raise max_retries"
            )
        elif status in (400, 422):
            hint = (
                f"check the model name {self.model!r}, max_tokens ({self.max_tokens}) and the "
                "options; the message above says what the API refused"
            )
        else:
            hint = f"check the API key, the model name {self.model!r} and the base URL"
        return f"{head}; {hint}"

    def _fail(self, text: str, cause: BaseException | None = None) -> NoReturn:
        """Raise ModelError(text) with the API key hidden. The SDK exception is
        chained for its details unless its own text quotes the key."""
        secrets = [s for s in (self._client.api_key, self._client.auth_token) if s]
        error = ModelError(redact(text, secrets=secrets))
        if cause is None:
            raise error
        rendered = "".join(traceback.format_exception(cause))
        if any(secret in rendered for secret in secrets):
            raise error from None
        raise error from cause


# -- the request -------------------------------------------------------------------


def _system(messages: Sequence[Message]) -> str | list[Wire] | None:
    contents = [m.content for m in messages if m.role == "system" and m.content]
    if not contents:
        return None
    texts = [c for c in contents if isinstance(c, str)]
    if len(texts) == len(contents):
        return "\n\n".join(texts)
    blocks: list[Wire] = []
    for content in contents:
        blocks.extend(_blocks(content))
    return blocks


def _turns(messages: Sequence[Message]) -> list[Wire]:
    turns: list[Wire] = []
    results: list[Wire] | None = None  # the content of the user turn taking tool results
    for message in messages:
        if message.role in (MARKER, "system"):
            continue
        if message.role == "tool":
            if results is None:
                results = []
                turns.append({"role": "user", "content": results})
            results.append(_tool_result(message))
            continue
        if message.role == "user":
            if results is not None:  # joins the results' turn, after them
                results.extend(_blocks(message.content))
            else:
                content = message.content
                turns.append(
                    {
                        "role": "user",
                        "content": _blocks(content) if isinstance(content, list) else content or "",
                    }
                )
        elif message.role == "assistant":
            blocks = _blocks(message.content)
            blocks.extend(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                for call in message.tool_calls
            )
            turns.append({"role": "assistant", "content": blocks})
        else:
            raise ModelError(
                f"a message with the role {message.role!r} cannot be sent to the Anthropic API "
                "(roles: system, user, assistant, tool)"
            )
        results = None
    return turns


def _tool_result(message: Message) -> Wire:
    if not message.tool_call_id:
        raise ModelError(
            f"a tool message without a tool_call_id (tool {message.name!r}) cannot be paired "
            "with its tool_use block"
        )
    result: Wire = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if isinstance(message.content, list):
        result["content"] = _blocks(message.content)
    elif message.content is not None:
        result["content"] = message.content
    return result


def _blocks(content: str | list[JSON] | None) -> list[Wire]:
    """Content as content blocks: text as a text block (none when empty, which
    the API refuses), parts as given (strings as text blocks)."""
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[Wire] = []
    for part in content:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
        elif isinstance(part, dict):
            blocks.append(dict(part))
        else:
            raise ModelError(
                "a content part must be a string or an object in the Anthropic API's format "
                f"(a content block), got {part!r:.100}"
            )
    return blocks


def _tool(spec: JSONObject) -> Wire:
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ModelError(f"a tool spec without a name: {spec!r:.200}")
    tool: Wire = {"name": name}
    if spec.get("description"):
        tool["description"] = spec["description"]
    tool["input_schema"] = spec.get("parameters") or {"type": "object", "properties": {}}
    return tool


# -- reading the server ------------------------------------------------------------


def _counts(value: object, prefix: str, counts: dict[str, int]) -> dict[str, int]:
    """The integer counts of a usage object, nested ones named ``outer.inner``."""
    if isinstance(value, dict):
        for name, count in value.items():
            if isinstance(count, int) and not isinstance(count, bool):
                counts[prefix + name] = count
            elif isinstance(count, dict):
                _counts(count, f"{prefix}{name}.", counts)
    return counts


def _error_type(body: object) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


def _said(body: object) -> str:
    """What the server said: the API's error message, or its body's start."""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(message, str) and message:
        return message
    if body is None or body == "":
        return "(no body)"
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return " ".join(text.split())[:_SHOWN]


def _show(value: object) -> str:
    return f"{json.dumps(value, ensure_ascii=False, default=repr):.{_SHOWN}}"
