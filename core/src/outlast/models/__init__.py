"""Model clients on the official SDKs, each an optional extra of ``outlast``.

* :mod:`outlast.models.openai` — ``OpenAIModel``: chat completions with tools,
  for OpenAI and any OpenAI-compatible server (``pip install "outlast[openai]"``).
* :mod:`outlast.models.anthropic` — ``AnthropicModel``: messages with tool use
  (``pip install "outlast[anthropic]"``).

Both implement :class:`outlast.Model` and convert exactly both ways: a
transcript saved by one run resumes through the same client. Token usage is
reported on each reply as ``Message.usage`` with the names ``input_tokens``
and ``output_tokens`` (plus the API's other integer counts, as it names them).
"""
