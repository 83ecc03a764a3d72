"""The key layout: which Redis keys hold a run and a namespace's indexes.

Every key starts with the store's prefix. The keys of one run share the hash
tag ``{<namespace>:<run id>}``, so every script touching one run runs on one
Cluster slot; a namespace's indexes share the tag ``{<namespace>}`` (their own
slot). Namespaces and run ids are percent-encoded inside key names, so a ``:``
or brace in either can neither make two runs share keys nor break the tag::

    <prefix>:run:{<ns>:<id>}:meta     hash: the run's record (see scripts.py)
    <prefix>:run:{<ns>:<id>}:phases   list: completed phase outputs, in order
    <prefix>:run:{<ns>:<id>}:msgs     list: the current segment's transcript
    <prefix>:ns:{<ns>}:runs           sorted set, all scores 0: every run id (list)
    <prefix>:ns:{<ns>}:leases         sorted set: running run ids by lease expiry (ms)

Index members are the raw run ids (lexicographic order == run id order).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from outlast.errors import ConfigurationError

DEFAULT_PREFIX = "outlast"


def check_prefix(prefix: str) -> str:
    """``prefix`` if usable as the start of every key; ConfigurationError otherwise.

    Braces would start a hash tag of their own and put every key in one slot.
    """
    if not prefix:
        raise ConfigurationError("the Redis key prefix must not be empty")
    if "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"the Redis key prefix {prefix!r} must not contain braces: "
            "outlast places the hash tags itself"
        )
    return prefix


def _part(text: str) -> str:
    return quote(text, safe="")


@dataclass(frozen=True, slots=True)
class RunKeys:
    """The three keys of one run, in the order every run script takes them."""

    meta: str
    phases: str
    messages: str

    @classmethod
    def of(cls, prefix: str, namespace: str, run_id: str) -> RunKeys:
        base = f"{prefix}:run:{{{_part(namespace)}:{_part(run_id)}}}"
        return cls(f"{base}:meta", f"{base}:phases", f"{base}:msgs")

    def all(self) -> list[str]:
        return [self.meta, self.phases, self.messages]


@dataclass(frozen=True, slots=True)
class NamespaceKeys:
    """The index keys of one namespace, in the order every index script takes them."""

    runs: str
    leases: str

    @classmethod
    def of(cls, prefix: str, namespace: str) -> NamespaceKeys:
        base = f"{prefix}:ns:{{{_part(namespace)}}}"
        return cls(f"{base}:runs", f"{base}:leases")

    def all(self) -> list[str]:
        return [self.runs, self.leases]
