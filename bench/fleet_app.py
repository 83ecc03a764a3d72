"""The outlast side of the fleet bench: what ``outlast worker fleet_app:build`` serves.

One kind, ``one-step``: a single-loop Agent whose ScriptedModel gives the
final answer at once, so a run is one model step (one save) and then its
completion. The run's input is its run id, so the model knows which run it
serves.

Every worker process appends its events, one line each, to
``$FLEET_EVENTS_DIR/outlast-<pid>.log`` (line-buffered, so the bench can count
completions while the fleet runs)::

    <time.time()> <event> <run id> <epoch> <pid>

* ``claim``: the executor's CLAIM event, emitted right after ``claim_next``
  returned the run to this worker, before anything of the run executes;
* ``start``: the model's first call, the moment the run's own code begins;
* ``complete``: the COMPLETE event, after the completion was written;
* ``fail``, ``release``, ``lease_lost`` and ``<kind>-error`` (a store error):
  none should happen; the bench reports them.

All processes run on one machine, so their wall clocks are one clock.

The worker's store calls that decide how much a fleet costs the store are
counted too (``CountingStore``) and written at exit to
``$FLEET_EVENTS_DIR/outlast-<pid>.counts``, one ``name count`` per line:
``claim_next`` calls and those that found nothing, ``wait_for_change`` calls
and those that a notification woke.
"""

from __future__ import annotations

import atexit
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from outlast import (
    Agent,
    Event,
    EventKind,
    Executor,
    Message,
    ScriptedModel,
    hookimpl,
)
from outlast.adapter import CheckpointerFactory, Claim, JSONObject
from outlast.plugins import plugin_manager

NAMESPACE = "fleet-bench"
KIND = "one-step"
ANSWER = "done"
EVENTS_ENV = "FLEET_EVENTS_DIR"
LOGGED = frozenset(
    {EventKind.CLAIM, EventKind.COMPLETE, EventKind.FAIL, EventKind.RELEASE, EventKind.LEASE_LOST}
)


class EventLog:
    """One line per event in this process's file (see the module docstring)."""

    def __init__(self, directory: str) -> None:
        self.pid = os.getpid()
        path = Path(directory) / f"outlast-{self.pid}.log"
        self.file: IO[str] = path.open("a", buffering=1)
        atexit.register(self.file.close)

    def write(self, event: str, run_id: str, epoch: int) -> None:
        self.file.write(f"{time.time():.6f} {event} {run_id} {epoch} {self.pid}\n")

    @hookimpl
    def outlast_event(self, event: Event) -> None:
        if event.error is not None:
            self.write(f"{event.kind.value}-error", event.run_id, event.epoch)
        elif event.kind in LOGGED:
            self.write(event.kind.value, event.run_id, event.epoch)


class CountingStore:
    """The worker's store, counting claim_next and wait_for_change calls."""

    def __init__(self, store: CheckpointerFactory, path: Path | None) -> None:
        self.store = store
        self.counts: Counter[str] = Counter()
        if path is not None:
            atexit.register(self.write, path)

    async def claim_next(self, kinds: Sequence[str], **options: Any) -> Claim | None:
        claim = await self.store.claim_next(kinds, **options)
        self.counts["claim_next"] += 1
        self.counts["claim_next found nothing"] += claim is None
        return claim

    async def wait_for_change(self, namespace: str, timeout: float) -> bool:
        woken: bool = await self.store.wait_for_change(namespace, timeout)  # type: ignore[attr-defined]  # the Store front has it
        self.counts["wait_for_change"] += 1
        self.counts["wait_for_change woken"] += woken
        return woken

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def write(self, path: Path) -> None:
        path.write_text("".join(f"{name}\t{count}\n" for name, count in self.counts.items()))


class TimedModel:
    """The scripted final answer, logging when the run's own code begins."""

    def __init__(self, log: EventLog | None) -> None:
        self.log = log
        self.script = ScriptedModel([Message.assistant(ANSWER)])

    async def complete(self, messages: Sequence[Message], tools: Sequence[JSONObject]) -> Message:
        if self.log is not None:
            first = messages[0].content
            run_id = first if isinstance(first, str) else "?"
            self.log.write("start", run_id, 0)
        return await self.script.complete(messages, tools)


def build(store: CheckpointerFactory) -> Executor:
    """The worker's executor (``outlast worker fleet_app:build --url ...``)."""
    directory = os.environ.get(EVENTS_ENV)
    log = EventLog(directory) if directory else None
    if log is not None:
        plugin_manager().register(log, name=f"fleet-bench-{log.pid}")
    counts = Path(directory) / f"outlast-{os.getpid()}.counts" if directory else None
    counting: Any = CountingStore(store, counts)
    executor = Executor(counting, namespace=NAMESPACE)  # the default lease and renewal
    executor.register(KIND, Agent(TimedModel(log)))
    return executor
