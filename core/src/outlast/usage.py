"""Token usage: counts by name (``input_tokens``, ``output_tokens``...), summed.

Each reply keeps the usage its model reported (:attr:`Message.usage`), each
completed phase its phase's sum, and a completed run its run's sum: so a
recovered run counts every paid reply exactly once and loses none from
before the crash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from outlast.messages import Message, PhaseOutput

Usage = dict[str, int]


def add(total: Usage, counts: Mapping[str, int] | None) -> None:
    """Add ``counts`` to ``total`` in place, name by name."""
    if counts:
        for name, count in counts.items():
            total[name] = total.get(name, 0) + count


def of_messages(messages: Iterable[Message]) -> Usage:
    """The usage of every reply among ``messages``."""
    total: Usage = {}
    for message in messages:
        add(total, message.usage)
    return total


def of_run(phases: Iterable[PhaseOutput], current: Mapping[str, int]) -> Usage:
    """A run's usage: its completed phases' and the loop now running's."""
    total: Usage = {}
    for phase in phases:
        add(total, phase.usage)
    add(total, current)
    return total
