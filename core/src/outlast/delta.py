"""What a save must write: the delta since the last durable save.

The executor hands ``save`` the full cumulative state; a store writes only what
is new. :class:`SaveCursor` remembers how much is durable and computes the
:class:`Delta`; a store advances its cursor only after its write succeeded, so
a failed save is simply retried (with more) by the next one.

Transcripts are stored per *segment*: the segment of a message is the number
of phases completed when it was saved (always 0 for a single loop), and the
position is its index in that segment. So the history restarting at a phase
boundary never rewrites anything: it opens the next segment.
"""

from __future__ import annotations

from dataclasses import dataclass

from outlast.errors import CheckpointStateError
from outlast.messages import Message, PhaseOutput
from outlast.ports import CheckpointState


@dataclass(frozen=True, slots=True)
class Delta:
    """New phases and new messages of one save.

    ``phases`` start at index ``first_phase``; ``messages`` belong to segment
    ``segment`` and start at position ``first_message``.
    """

    first_phase: int
    phases: tuple[PhaseOutput, ...]
    segment: int
    first_message: int
    messages: tuple[Message, ...]

    @property
    def empty(self) -> bool:
        return not self.phases and not self.messages

    @property
    def after(self) -> SaveCursor:
        """The cursor once this delta is durable."""
        return SaveCursor(
            phases=self.first_phase + len(self.phases),
            messages=self.first_message + len(self.messages),
        )


@dataclass(frozen=True, slots=True)
class SaveCursor:
    """How much of a run is durable: completed phases, and messages of the
    current segment (segment number == ``phases``)."""

    phases: int = 0
    messages: int = 0

    def delta(self, state: CheckpointState) -> Delta:
        """The part of ``state`` not yet durable.

        Raises CheckpointStateError when ``state`` does not extend what was
        saved (fewer phases, or a shorter history within the same phase).
        """
        n_phases = len(state.phases)
        if n_phases < self.phases:
            raise CheckpointStateError(
                f"save has {n_phases} completed phases but {self.phases} are already "
                "saved; phases only grow"
            )
        first_message = 0 if n_phases > self.phases else self.messages
        if len(state.history) < first_message:
            raise CheckpointStateError(
                f"save has {len(state.history)} messages but {first_message} are already "
                "saved for this phase; history only grows by appending"
            )
        return Delta(
            first_phase=self.phases,
            phases=tuple(state.phases[self.phases :]),
            segment=n_phases,
            first_message=first_message,
            messages=tuple(state.history[first_message:]),
        )
