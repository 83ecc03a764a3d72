"""A fleet of ``outlast worker`` processes in numbered slots: started, killed
with SIGKILL, stopped with SIGTERM and replaced, every one by its own pid.

A worker is *ready* once it printed its banner (``outlast worker <owner>:
kinds ...``): the CLI prints it after installing its signal handlers, so a
SIGTERM from then on is a clean shutdown that must exit 0. A SIGTERM is only
ever sent to a ready worker; SIGKILL needs no readiness.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT = 60.0
"""Seconds a worker may take to start (imports on a loaded 2-core machine)."""

BANNER = ": kinds "


class FleetError(Exception):
    """A worker did not start, or did not stop, within its bound."""


@dataclass(eq=False)
class Worker:
    """One worker process and what was done to it."""

    slot: int
    process: asyncio.subprocess.Process
    output: Path
    started_at: float
    stopped_by: str | None = None
    """'kill' (SIGKILL) or 'term' (SIGTERM), once sent."""
    signalled_at: float | None = None
    final: bool = False
    """Stopped by the final SIGTERM of the whole fleet, not during the chaos."""
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def ready(self) -> bool:
        try:
            return BANNER in self.output.read_text(errors="replace")
        except FileNotFoundError:
            return False


def worker_command(app: str, url: str, concurrency: int, poll: float, drain: float) -> list[str]:
    """``outlast worker`` from this interpreter's environment."""
    script = Path(sys.executable).with_name("outlast")
    if not script.exists():
        raise FleetError(f"no `outlast` command next to {sys.executable}: install outlast there")
    return [
        str(script),
        "worker",
        app,
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--poll-interval",
        str(poll),
        "--drain-timeout",
        str(drain),
    ]


@dataclass
class Fleet:
    """``size`` slots, each holding its current worker; every worker ever started."""

    command: Sequence[str]
    env: Mapping[str, str]
    directory: Path
    size: int
    cwd: Path
    slots: dict[int, Worker] = field(default_factory=dict)
    every: list[Worker] = field(default_factory=list)

    async def start(self, slot: int) -> Worker:
        output = self.directory / f"worker-{len(self.every):03d}-slot{slot}.out"
        with output.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                cwd=self.cwd,
            )
        worker = Worker(slot, process, output, time.time())
        self.slots[slot] = worker
        self.every.append(worker)
        return worker

    async def start_all(self) -> None:
        for slot in range(self.size):
            await self.start(slot)
        for worker in list(self.slots.values()):
            await self.wait_ready(worker)

    async def wait_ready(self, worker: Worker, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not worker.ready():
            if worker.process.returncode is not None:
                raise FleetError(
                    f"worker pid {worker.pid} exited with {worker.process.returncode} before "
                    f"it was ready:\n{worker.output.read_text(errors='replace')[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise FleetError(f"worker pid {worker.pid} was not ready after {timeout:.0f}s")
            await asyncio.sleep(0.05)

    async def kill(self, slot: int) -> tuple[Worker, Worker]:
        """SIGKILL the slot's worker and start its replacement: (killed, new)."""
        victim = self.slots[slot]
        victim.stopped_by = "kill"
        victim.signalled_at = time.time()
        if victim.process.returncode is None:
            victim.process.send_signal(signal.SIGKILL)
        return victim, await self.start(slot)

    async def terminate(self, slot: int) -> tuple[Worker, Worker]:
        """SIGTERM the slot's worker (once ready) and start its replacement at
        once; the stopped worker drains meanwhile (see :meth:`reap`)."""
        victim = self.slots[slot]
        await self.wait_ready(victim)
        victim.stopped_by = "term"
        victim.signalled_at = time.time()
        victim.process.send_signal(signal.SIGTERM)
        return victim, await self.start(slot)

    async def stop_all(self) -> None:
        """SIGTERM every current worker (each once ready)."""
        for worker in self.slots.values():
            await self.wait_ready(worker)
            worker.stopped_by = "term"
            worker.final = True
            worker.signalled_at = time.time()
            worker.process.send_signal(signal.SIGTERM)

    async def reap(self, timeout: float) -> list[Worker]:
        """Wait for every worker ever started to exit; SIGKILL those still
        running after ``timeout`` seconds and return them (a failure)."""
        stuck: list[Worker] = []
        deadline = time.monotonic() + timeout
        for worker in self.every:
            left = max(0.0, deadline - time.monotonic())
            try:
                worker.exit_code = await asyncio.wait_for(worker.process.wait(), left)
            except TimeoutError:
                stuck.append(worker)
                worker.process.send_signal(signal.SIGKILL)
                worker.exit_code = await worker.process.wait()
        return stuck

    def kill_everything(self) -> None:
        """SIGKILL every worker still running (the harness is failing)."""
        for worker in self.every:
            if worker.process.returncode is None:
                worker.process.send_signal(signal.SIGKILL)
