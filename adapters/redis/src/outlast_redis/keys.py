"""The key layout: which Redis keys hold a namespace's runs and indexes.

Every key starts with the store's prefix, and every key of one namespace
(its runs' keys and its two indexes) carries the hash tag ``{<namespace>}``.
One tag means one Cluster slot, so a single script changes a run and its
index entries in one atomic step. The price: one namespace lives on one
Cluster slot (one node); different namespaces spread over the cluster.

Namespaces and run ids are percent-encoded inside key names, so a ``:`` or a
brace in either can neither make two runs share keys nor break the tag::

    <prefix>:{<ns>}:run:<id>:meta      hash: the run's record (see scripts.py)
    <prefix>:{<ns>}:run:<id>:phases    list: completed phase outputs, in order
    <prefix>:{<ns>}:run:<id>:msgs      list: the current segment's transcript
    <prefix>:{<ns>}:run:<id>:damaged   hash: a record too damaged to read, as it
                                       was when a quarantine replaced it
    <prefix>:{<ns>}:runs               sorted set, all scores 0: every run id (list)
    <prefix>:{<ns>}:leases             sorted set: every running run id, scored by
                                       when it is (or became) claimable in server
                                       ms: its lease's expiry, or its release time
                                       (a submitted run: its submit time; a sent
                                       one: its send time); and every waiting run
                                       with a timeout, scored by it (a waiting run
                                       without one is not in it)
    <prefix>:{<ns>}:claimed:<token>    string, kept a minute: the run one call of
                                       claim_next took (so redis-py's retry of that
                                       call, its reply lost, answers the same run)

The ``claim_next`` script finds runs through the lease index, so it builds
their keys itself (``<base>:run:`` and the run id percent-encoded as
:func:`urllib.parse.quote` does, with no safe characters); the keys are on
the namespace's slot like every key it was given.

Scripts that make a run claimable or finished PUBLISH on the channel
``<prefix>:changes`` (not a key: classic pub/sub reaches every node of a
Cluster) the namespace's tag, its percent-encoded name; the scripts take both
from their first key (see scripts.py, ``notify``).

Index members are the raw run ids: the byte order Redis keeps ties and
``ZRANGEBYLEX`` in is UTF-8 byte order, which is code point order, the order
outlast lists runs in.

The layout of outlast-redis 0.1 (``<prefix>:run:{<ns>:<id>}:...`` and
``<prefix>:ns:{<ns>}:...``) is not read: those keys never collide with these.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from outlast.adapter import ConfigurationError

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
    """The keys of one run and of its namespace's indexes, all on one slot."""

    run_id: str
    meta: str
    phases: str
    messages: str
    damaged: str
    runs: str
    leases: str

    def all(self) -> list[str]:
        """The keys in the order every run script takes them (``KEYS[1..6]``)."""
        return [self.meta, self.phases, self.messages, self.damaged, self.runs, self.leases]

    def saved(self) -> list[str]:
        """The keys the SAVE script takes: the four it touches."""
        return [self.meta, self.phases, self.messages, self.leases]

    def own(self) -> list[str]:
        """The keys holding the run itself (what ``delete`` removes)."""
        return [self.meta, self.phases, self.messages, self.damaged]


def changes_channel(prefix: str) -> str:
    """The pub/sub channel the scripts announce changes of every namespace on."""
    return f"{prefix}:changes"


@dataclass(frozen=True, slots=True)
class NamespaceKeys:
    """The keys of one namespace: its two indexes, and its runs' keys."""

    base: str
    tag: str
    """The namespace as it appears in the hash tag and in change notifications."""
    runs: str
    leases: str

    @classmethod
    def of(cls, prefix: str, namespace: str) -> NamespaceKeys:
        tag = _part(namespace)
        base = f"{prefix}:{{{tag}}}"
        return cls(base, tag, f"{base}:runs", f"{base}:leases")

    def claimed(self, token: str) -> str:
        """Where the claim_next call marked ``token`` notes the run it took."""
        return f"{self.base}:claimed:{token}"

    def run(self, run_id: str) -> RunKeys:
        run = f"{self.base}:run:{_part(run_id)}"
        return RunKeys(
            run_id,
            f"{run}:meta",
            f"{run}:phases",
            f"{run}:msgs",
            f"{run}:damaged",
            self.runs,
            self.leases,
        )
