"""The checkpoint ports: what the executor needs from a store.

A store is a :class:`CheckpointerFactory`; each durable run gets one
:class:`Checkpointer`. Both are protocols: an adapter implements them in its
own classes (no inheritance needed) and proves it with outlast-conformance.
Adapter authors import all of this from :mod:`outlast.adapter`.

Rules every implementation keeps:

* The record's state machine is :mod:`outlast.transitions`, written once:
  a document store calls it; a store that decides in SQL or a script mirrors
  it, and the conformance suite checks that they agree.
* Every write of a checkpointer carries its epoch and is checked against the
  stored record in the same atomic step. A superseded epoch, an ended run or
  a deleted one raises :class:`~outlast.errors.LeaseLost` and writes nothing.
* Safety never depends on clocks. Leases only decide *when* a run counts as
  abandoned; the epoch check makes a stale writer harmless.
* ``save`` writes only the delta since the checkpointer's last successful save
  (see :class:`~outlast.delta.SaveCursor`).
* A record that does not parse raises :class:`~outlast.errors.CorruptCheckpoint`
  naming the run; ``list`` skips such records, ``interrupted`` quarantines
  them, and both go on.
* Runs are keyed by ``(namespace, run_id)``: nothing in one namespace is
  listed, claimed, loaded or changed through another.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from outlast import ids
from outlast.messages import JSON, JSONObject, Message, PhaseOutput

DEFAULT_NAMESPACE = "default"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Completed or failed: the run never changes again (retention may remove it)."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED)


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
    Constructing one checks the names (see :mod:`outlast.ids`) and the lease,
    raising ValueError: a store never sees an invalid one.
    """

    run_id: str
    kind: str
    input: JSON = None
    namespace: str = DEFAULT_NAMESPACE
    owner: str = ""
    lease: float = 30.0

    def __post_init__(self) -> None:
        ids.check_run_id(self.run_id)
        ids.check_kind(self.kind)
        ids.check_namespace(self.namespace)
        ids.check_owner(self.owner)
        object.__setattr__(self, "lease", ids.check_lease(self.lease))


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """A run's durable record without its transcript.

    Times are POSIX seconds by the store's clock. ``lease`` is the lease's
    length in seconds; ``lease_expires_at`` is None once the lease was
    released or the run ended. ``attempts`` counts every begin and claim;
    ``crashes`` counts the claims of a lease that expired without a release
    (a worker died), which is what the poison limit counts. ``incarnation``
    is a random token drawn by ``begin``: a run deleted and begun again under
    the same id is another incarnation, so a writer of the deleted one is
    fenced even at the same epoch. A run submitted to a fleet is ``running``
    at epoch 0 with no owner and no lease until a worker claims it (its first
    claim is a start: no crash). ``cancel_requested`` is set by a cancel of a
    run a worker owns; the owner sees it at its next save or renewal.

    A ``waiting`` run waits for outside input (a tool asked for it): it holds
    no process and no lease; ``wait`` is what it waits for and
    ``lease_expires_at`` when the wait times out (None: never). ``send``
    stores the input as ``delivery`` and makes the run claimable; a wait whose
    timeout passed is claimable too (its claimer sees no ``delivery``).
    ``wait``, ``delivery`` and ``usage`` (the token usage a completed run
    reported) are the executor's JSON: a store keeps them as they are.
    """

    run_id: str
    namespace: str
    kind: str
    input: JSON
    status: RunStatus
    epoch: int
    attempts: int
    crashes: int = 0
    owner: str
    lease: float
    lease_expires_at: float | None
    created_at: float
    updated_at: float
    result: JSON = None
    error: str | None = None
    incarnation: str = ""
    cancel_requested: bool = False
    wait: JSON = None
    delivery: JSON = None
    usage: JSON = None

    @property
    def queued(self) -> bool:
        """Submitted and not started yet: running, never claimed (epoch 0)."""
        return self.status is RunStatus.RUNNING and self.epoch == 0

    @property
    def interrupted_since(self) -> float | None:
        """When the run became claimable, if it is: its lease's expiry, or,
        released, the time of the release (its last write). None when live
        or finished. ``interrupted`` lists oldest first by this. A waiting
        run becomes claimable when its wait times out (None: it never does)."""
        if self.status is RunStatus.WAITING:
            return self.lease_expires_at
        if self.status is not RunStatus.RUNNING:
            return None
        return self.lease_expires_at if self.lease_expires_at is not None else self.updated_at

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
            "crashes": self.crashes,
            "owner": self.owner,
            "lease": self.lease,
            "lease_expires_at": self.lease_expires_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "result": self.result,
            "error": self.error,
            "incarnation": self.incarnation,
            "cancel_requested": self.cancel_requested,
            "wait": self.wait,
            "delivery": self.delivery,
            "usage": self.usage,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """The record of :meth:`to_json`'s output (other keys are ignored).

        Raises KeyError, TypeError or ValueError on a malformed object; stores
        turn those into CorruptCheckpoint naming the run. ``crashes``,
        ``incarnation``, ``cancel_requested``, ``wait``, ``delivery`` and
        ``usage`` may be absent (records written by earlier outlast versions).
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
            crashes=_integer(data.get("crashes", 0)),
            owner=_text(data["owner"]),
            lease=_number(data["lease"]),
            lease_expires_at=None if lease is None else _number(lease),
            created_at=_number(data["created_at"]),
            updated_at=_number(data["updated_at"]),
            result=data["result"],
            error=None if error is None else _text(error),
            incarnation=_text(data.get("incarnation", "")),
            cancel_requested=_flag(data.get("cancel_requested", False)),
            wait=data.get("wait"),
            delivery=data.get("delivery"),
            usage=data.get("usage"),
        )


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r:.80}")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r:.80}")
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
    """One run's durable record, held at one epoch (the fencing token).

    Every write is checked, in the same atomic step, against the stored
    record (:func:`outlast.transitions.owned`): the run must exist, hold this
    epoch and be ``running``. Otherwise the write raises LeaseLost and writes
    nothing: after a claim by another worker, after the run completed or
    failed, and after it was deleted. Every write moves ``updated_at``.
    """

    @property
    def run_id(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def epoch(self) -> int: ...

    async def save(self, state: CheckpointState) -> bool:
        """Persist progress; durable once it returns.

        Writes only what is new since the last successful save, checked
        against the epoch in the same step; a save with nothing new still
        checks (a fenced writer learns it is fenced). Saving the same state
        twice is harmless. Returns the record's ``cancel_requested``: True
        when someone asked to cancel the run, which its owner then fails.
        Raises LeaseLost (writing nothing) when fenced, CheckpointStateError
        when ``state`` is not an append to what was saved, and ValueError
        when it holds something that is not JSON.
        """

    async def complete(self, result: JSON, usage: JSON = None) -> None:
        """Terminal success: record ``result`` and ``usage`` (the run's summed
        token usage, or None), clear the resumable progress.

        The small terminal record stays until retention removes it, so the run
        id cannot be begun again. Raises LeaseLost when fenced, ValueError
        (writing nothing) when ``result`` or ``usage`` is not JSON.
        """

    async def fail(self, error: str) -> None:
        """Terminal failure: record ``error``; the run is never recovered.

        The transcript stays for post-mortems until retention removes it.
        Raises LeaseLost when fenced.
        """

    async def release(self) -> None:
        """Interrupted by shutdown: stay ``running``, drop the lease at once.

        The run shows up in ``interrupted`` immediately, and its next claim
        is not a crash. Raises LeaseLost when fenced.
        """

    async def renew(self) -> bool:
        """Extend the lease by its length from now (also after a release: the
        run is owned again). Returns the record's ``cancel_requested``, as
        ``save`` does. Raises LeaseLost when fenced."""

    async def wait(self, request: JSON, timeout: float | None) -> None:
        """Park the run until outside input arrives
        (:func:`outlast.transitions.wait`): ``waiting``, ``wait`` set to
        ``request``, ``delivery`` cleared, no lease; the wait times out
        ``timeout`` seconds from now by the store's clock (None: never).

        The executor saves the progress first; this writes only the record.
        Afterwards every write of this checkpointer raises LeaseLost (the run
        is no longer running). Raises LeaseLost when fenced, ValueError
        (writing nothing) when ``request`` is not JSON.
        """


@runtime_checkable
class CheckpointerFactory(Protocol):
    """A store: creates, finds and claims durable runs.

    Run ids and namespaces reach a store already checked (:mod:`outlast.ids`);
    after ``close()`` the store front of :func:`outlast.open` refuses every
    call. The state machine every method applies is
    :mod:`outlast.transitions`; the conformance suite holds a store to it.
    """

    async def begin(self, start: RunStart) -> Checkpointer:
        """Create the record of a new run (:func:`outlast.transitions.begin`).

        Raises RunExists when the run id exists in the namespace (whatever
        its status); of concurrent begins of one id exactly one succeeds.
        Raises ValueError, writing nothing, when the input is not JSON.
        """

    async def submit(self, start: RunStart) -> None:
        """Record a run for the fleet (:func:`outlast.transitions.submit`):
        running, unowned, epoch 0, claimable at once by ``claim_next``.

        Raises RunExists when the run id exists in the namespace; ValueError,
        writing nothing, when the input is not JSON.
        """

    async def claim_next(
        self,
        kinds: Sequence[str],
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        """Claim the oldest claimable run of one of ``kinds``, in one atomic step.

        Claimable means what ``interrupted`` lists: queued, released, its
        lease expired, or waiting past its wait's timeout; oldest first by
        :attr:`RunRecord.interrupted_since`.
        A run of another kind is never claimed. Concurrent callers never get
        the same run, and never herd on one row (a taken run is skipped, not
        waited for). A run whose record or progress does not parse is
        quarantined and skipped. None when nothing is claimable.
        """

    async def send(
        self, run_id: str, delivery: JSON, namespace: str = DEFAULT_NAMESPACE
    ) -> RunRecord:
        """Deliver outside input to a waiting run (:func:`outlast.transitions.send`);
        the record after it.

        One conditional write: the run must be ``waiting``. It becomes
        ``running`` with its lease released (claimable at once, its claim no
        crash) and ``delivery`` stored. Of concurrent senders exactly one
        succeeds. Raises RunNotFound for an unknown run, NotWaiting for one
        that is not waiting (a second send included); ValueError, writing
        nothing, when ``delivery`` is not JSON. A store with notifications
        announces it as it announces a release.
        """

    async def cancel(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> RunRecord:
        """Cancel a run (:func:`outlast.transitions.cancel`); the record after it.

        A run nobody owns (a waiting one too) is failed at once; an owned one gets
        ``cancel_requested`` and its owner's next save or renewal returns
        True. Raises RunNotFound for an unknown run, RunFinished for one that
        already completed or failed.
        """

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        """Up to ``limit`` runs still ``running`` whose lease expired or was
        released (or that are queued), and ``waiting`` runs whose wait timed
        out: the recovery work list (:func:`outlast.transitions.is_interrupted`).
        A waiting run whose wait has not timed out is never listed.

        Oldest first by :attr:`RunRecord.interrupted_since`, ties by run id.
        Returns up to ``limit`` healthy runs whatever precedes them: an
        interrupted record that does not parse is quarantined (see
        :meth:`quarantine`), logged and skipped; one of an unknown (newer)
        format version is skipped and left alone.
        """

    async def claim(
        self,
        run_id: str,
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        """Atomically take over an interrupted run (:func:`outlast.transitions.claim`).

        Returns None when there is no such run, it is not interrupted
        (finished, or its lease is live) or another claimer won: of
        concurrent claimers exactly one gets a Claim. Raises
        CorruptCheckpoint, changing nothing, when the record or the saved
        progress does not parse.
        """

    async def quarantine(
        self, run_id: str, reason: str, namespace: str = DEFAULT_NAMESPACE
    ) -> bool:
        """Fail an interrupted run that cannot be recovered because what is
        stored for it does not parse (:func:`outlast.transitions.quarantine`).

        One fenced write: only a run that is still interrupted changes. It
        becomes ``failed`` with ``reason`` as its error, its epoch moves on
        (fencing any writer that still holds it) and everything stored for it
        stays for forensics until retention removes it. A record too damaged
        to read at all is replaced by a failed stub
        (:func:`outlast.transitions.quarantined_stub`), the damaged bytes
        kept beside it. Returns whether the run was quarantined.
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

        Ordered by run id (code point order). ``cursor`` is the last run id
        of the previous page; ``next_cursor`` is None when no record follows
        the page (an exactly full last page included). Records that do not
        parse are skipped (and logged).
        """

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """Remove the run and everything stored for it; False when absent.

        Every later write of a checkpointer of the deleted run raises
        LeaseLost; a ``begin`` of the same id racing the delete is never lost.
        """

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        """Retention: delete terminal runs last updated more than ``older_than``
        seconds ago; returns how many were removed. Running and waiting runs
        are kept."""

    async def close(self) -> None:
        """Release connections; the factory is unusable afterwards."""


@runtime_checkable
class ChangeNotifier(Protocol):
    """What a store with notifications (PostgreSQL LISTEN/NOTIFY, Redis
    pub/sub) adds to a CheckpointerFactory, so workers pick up work at once
    instead of at their next poll. Optional: the store front polls the others.
    """

    async def wait_for_change(self, namespace: str, timeout: float) -> bool:
        """Return True when a run of ``namespace`` may have become claimable
        (a submit, a release, a cancel) or may have finished (complete,
        fail), False after ``timeout`` seconds without one. A notification
        may be lost: callers poll as well."""
