"""CPU time, from /proc: where a 2-core machine's seconds go during the bench.

Every part of the bench runs on this machine (workers, the submitting bench
process, the PostgreSQL or Redis server), so CPU is what bounds throughput;
the bench reports CPU milliseconds per run for each part. Linux only; on
another system, or for a server that is not local, the figures are left out.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def process(pid: int) -> float:
    """CPU seconds (user + system) of a live process; 0 when it is gone."""
    fields = _fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def processes(pids: Iterable[int]) -> float:
    return sum(process(pid) for pid in pids)


def tree(parent: int) -> float:
    """CPU seconds of a server: the parent, its exited children (what it
    reaped: PostgreSQL backends that disconnected) and its live children."""
    fields = _fields(parent)
    if fields is None:
        return 0.0
    total = sum(int(value) for value in fields[11:15]) / TICK
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            child = _fields(int(entry.name))
            if child is not None and int(child[1]) == parent:
                total += (int(child[11]) + int(child[12])) / TICK
    return total


def parent_of(pid: int) -> int | None:
    fields = _fields(pid)
    return None if fields is None else int(fields[1])


def machine() -> float:
    """CPU seconds the whole machine was busy (all cores, /proc/stat): what
    the parts above leave of it is other load, which makes a run noisy."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def own() -> float:
    """CPU seconds of this process, all its threads (DBOS's enqueue threads too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
