"""The checkpoint ports: what the executor needs from a store.

A store is a :class:`CheckpointerFactory`; each durable run gets one
:class:`Checkpointer`. Both are protocols: an adapter implements them in its
own classes (no inheritance needed) and proves it with outlast-conformance.

Rules every implementation keeps:

* Every write of a checkpointer carries its epoch and is checked against the
  stored epoch in the same atomic step. A superseded epoch raises
  :class:`~outlast.errors.LeaseLost` and writes nothing.
* Safety never depends on clocks. Leases only decide *when* a run counts as
  abandoned; the epoch check makes a stale writer harmless.
* ``save`` writes only the delta since the checkpointer's last successful save
  (see :class:`~outlast.delta.SaveCursor`).
* A record that does not parse raises :class:`~outlast.errors.CorruptCheckpoint`
  naming the run; ``interrupted`` and ``list`` skip such records and go on.
* Runs are keyed by ``(namespace, run_id)``: nothing in one namespace is
  listed, claimed, loaded or changed through another.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from outlast.messages import JSON, JSONObject, Message, PhaseOutput

DEFAULT_NAMESPACE = "default"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CheckpointState:
    """The full cumulative progress the executor hands to ``save``.

    ``history`` is the transcript of the loop now running (the whole run for a
    single loop; the current phase's transcript for a plan), pre-compaction.
    ``phases`` are the outputs of completed phases, in order. The executor
    guarantees ``phases`` only grows and ``history`` only grows by appending,
    except that it starts empty again when a new phase starts.
    """

    history: tuple[Message, ...] = ()
    phases: tuple[PhaseOutput, ...] = ()


@dataclass(frozen=True, slots=True)
class ResumeState:
    """A recovered run's prior progress, handed to the executor's run call.

    ``history`` is the single loop's transcript, or the interrupted phase's
    transcript; ``completed_phases`` the outputs of the finished phases.
    """

    history: tuple[Message, ...] = ()
    completed_phases: tuple[PhaseOutput, ...] = ()


@dataclass(frozen=True, slots=True)
class RunStart:
    """What ``begin`` needs to create a run's durable record.

    ``kind`` is the registered name of the run definition, so a recovering
    worker can re-dispatch it; ``lease`` is the lease length in seconds.
    """

    run_id: str
    kind: str
    input: JSON = None
    namespace: str = DEFAULT_NAMESPACE
    owner: str = ""
    lease: float = 30.0


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run's durable record without its transcript.

    Times are POSIX seconds by the store's clock. ``lease_expires_at`` is None
    once the lease was released or the run ended.
    """

    run_id: str
    namespace: str
    kind: str
    input: JSON
    status: RunStatus
    epoch: int
    attempts: int
    owner: str
    lease_expires_at: float | None
    created_at: float
    updated_at: float
    result: JSON = None
    error: str | None = None

    @classmethod
    def begun(cls, start: RunStart, now: float, input: JSON) -> RunRecord:
        """The record ``begin`` creates: running, epoch 1, attempts 1, leased
        until ``now + start.lease``. ``input`` is the stored copy of the input."""
        return cls(
            run_id=start.run_id,
            namespace=start.namespace,
            kind=start.kind,
            input=input,
            status=RunStatus.RUNNING,
            epoch=1,
            attempts=1,
            owner=start.owner,
            lease_expires_at=now + start.lease,
            created_at=now,
            updated_at=now,
        )

    def to_json(self) -> JSONObject:
        """The record as a JSON object (for stores that keep records as documents)."""
        return {
            "run_id": self.run_id,
            "namespace": self.namespace,
            "kind": self.kind,
            "input": self.input,
            "status": self.status.value,
            "epoch": self.epoch,
            "attempts": self.attempts,
            "owner": self.owner,
            "lease_expires_at": self.lease_expires_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "result": self.result,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """The record of :meth:`to_json`'s output (other keys are ignored).

        Raises KeyError, TypeError or ValueError on a malformed object; stores
        turn those into CorruptCheckpoint naming the run.
        """
        error = data["error"]
        lease = data["lease_expires_at"]
        return cls(
            run_id=_text(data["run_id"]),
            namespace=_text(data["namespace"]),
            kind=_text(data["kind"]),
            input=data["input"],
            status=RunStatus(data["status"]),
            epoch=_integer(data["epoch"]),
            attempts=_integer(data["attempts"]),
            owner=_text(data["owner"]),
            lease_expires_at=None if lease is None else _number(lease),
            created_at=_number(data["created_at"]),
            updated_at=_number(data["updated_at"]),
            result=data["result"],
            error=None if error is None else _text(error),
        )


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r:.80}")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r:.80}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r:.80}")
    return float(value)


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run's record plus its saved progress, as ``load`` returns it.

    ``state.history`` is the transcript of the current loop (for a plan, the
    phase after the completed ones). A completed run has an empty state.
    """

    record: RunRecord
    state: CheckpointState


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of ``list``; pass ``next_cursor`` back for the next page."""

    records: tuple[RunRecord, ...]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A won claim: the new checkpointer, what to resume from, and the record."""

    checkpointer: Checkpointer
    resume: ResumeState
    record: RunRecord = field(repr=False)


@runtime_checkable
class Checkpointer(Protocol):
    """One run's durable record, held at one epoch (the fencing token)."""

    @property
    def run_id(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def epoch(self) -> int: ...

    async def save(self, state: CheckpointState) -> None:
        """Persist progress; durable once it returns.

        Writes only what is new since the last successful save, checked
        against the epoch in the same step. Saving the same state twice is
        harmless. Raises LeaseLost (writing nothing) when fenced, and
        CheckpointStateError when ``state`` is not an append to what was saved.
        """

    async def complete(self, result: JSON) -> None:
        """Terminal success: record ``result``, clear the resumable progress.

        The small terminal record stays until retention removes it, so the run
        id cannot be begun again. Raises LeaseLost when fenced.
        """

    async def fail(self, error: str) -> None:
        """Terminal failure: record ``error``; the run is never recovered.

        The transcript stays for post-mortems until retention removes it.
        Raises LeaseLost when fenced.
        """

    async def release(self) -> None:
        """Interrupted by shutdown: stay ``running``, drop the lease at once.

        The run shows up in ``interrupted`` immediately. Raises LeaseLost when
        fenced.
        """

    async def renew(self) -> None:
        """Extend the lease by its length from now. Raises LeaseLost when fenced."""


@runtime_checkable
class CheckpointerFactory(Protocol):
    """A store: creates, finds and claims durable runs."""

    async def begin(self, start: RunStart) -> Checkpointer:
        """Create the record of a new run: ``running``, epoch 1, attempts 1.

        Raises RunExists when the run id exists in the namespace.
        """

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        """Runs still ``running`` whose lease expired or was released.

        The boot-recovery work list, oldest lease first. Corrupt records are
        skipped (and logged), never raised.
        """

    async def claim(
        self,
        run_id: str,
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        """Atomically take over an interrupted run: epoch+1, attempts+1.

        Returns None when the run is not interrupted (finished, or its lease
        is live) or another claimer won: of concurrent claimers exactly one
        gets a Claim. Raises CorruptCheckpoint when the saved progress does
        not parse.
        """

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        """The run's record and saved progress, or None. Raises CorruptCheckpoint."""

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        """Records of a namespace, optionally of one status, a page at a time.

        Ordered by run id; corrupt records are skipped.
        """

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """Remove the run and everything stored for it; False when absent."""

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        """Retention: delete terminal runs last updated more than ``older_than``
        seconds ago; returns how many were removed. Running runs are kept."""

    async def close(self) -> None:
        """Release connections; the factory is unusable afterwards."""


def validate_start(start: RunStart) -> None:
    """Reject a RunStart no store should accept, with a message saying why."""
    if not start.run_id:
        raise ValueError("run_id must be a non-empty string")
    if not start.namespace:
        raise ValueError("namespace must be a non-empty string")
    if not start.kind:
        raise ValueError("kind must be the registered name of a run definition")
    validate_lease(start.lease)


def validate_lease(lease: float) -> None:
    if not lease > 0:
        raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
