"""Run kinds: the definitions (or builders of them) an executor knows by name.

The kind is stored with every run, so any worker that registered it can
re-dispatch a run after a crash.
"""

from __future__ import annotations

import inspect

from outlast import ids
from outlast.errors import ConfigurationError
from outlast.messages import JSON
from outlast.runs import Agent, Builder, Plan, RunDefinition


class Registry:
    """Kind name -> run definition, or a builder of one from the run's input."""

    def __init__(self) -> None:
        self._kinds: dict[str, RunDefinition | Builder] = {}

    def register(self, kind: str, definition: RunDefinition | Builder) -> None:
        ids.check_kind(kind)
        if kind in self._kinds:
            raise ValueError(f"run kind {kind!r} is already registered")
        self._kinds[kind] = definition

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def require(self, kind: str) -> None:
        """ConfigurationError naming the registered kinds unless ``kind`` is one."""
        if kind not in self._kinds:
            raise ConfigurationError(
                f"no run kind {kind!r} is registered; registered: {', '.join(self.kinds) or 'none'}"
            )

    async def build(self, kind: str, input: JSON) -> RunDefinition:
        """The definition of ``kind`` for ``input`` (a builder's error propagates)."""
        self.require(kind)
        source = self._kinds[kind]
        if isinstance(source, Agent | Plan):
            return source
        built = source(input)
        definition = await built if inspect.isawaitable(built) else built
        if not isinstance(definition, Agent | Plan):
            raise ConfigurationError(
                f"the builder of {kind!r} returned {type(definition).__name__}, "
                "not an Agent or Plan"
            )
        return definition
