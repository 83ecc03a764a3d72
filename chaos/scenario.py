"""One chaos scenario: a fleet of workers on one store, a few hundred runs,
signals (or server restarts) on a seeded schedule, a drain, then the checks.

1. start ``workers`` ``outlast worker chaos.app:build`` processes and wait
   until each is ready; submit ``runs`` runs (half plans, half loops, their
   step counts drawn from the seed) as the fleet takes them, at most
   ``backlog`` waiting at a time;
2. the chaos window. Kill scenarios: every ``gap`` seconds (drawn from the
   seed) SIGKILL or SIGTERM the worker of a slot drawn from the seed and start
   a replacement at once, until ``seconds`` passed or no run is left. Restart
   scenarios: restart the store's server ``restarts`` times, the k-th once k
   of every ``restarts + 1`` parts of the runs completed (by the workers'
   logs), so every restart meets a fleet at work however fast the machine;
3. the drain: wait (bounded) until the store holds no running run; SIGTERM
   every worker and wait (bounded) for every worker ever started to exit;
4. read the records and the logs and judge them (:mod:`chaos.checks`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import outlast
from chaos import app
from chaos.checks import Facts, Stop, Verdict, judge, read_logs, spread
from chaos.fleet import Fleet, worker_command
from chaos.servers import Target
from outlast import JSON, RunRecord, RunStatus, StoreError, StoreUnavailable

REPO = Path(__file__).resolve().parent.parent
UNREACHABLE = (StoreUnavailable, StoreError, OSError)


@dataclass(frozen=True, slots=True)
class Options:
    runs: int = 400
    workers: int = 4
    concurrency: int = 4
    seconds: float = 30.0
    """The kill scenarios' chaos window (it ends early once no run is left)."""
    seed: int = 1
    lease: float = 2.0
    step_ms: float = 50.0
    gap: tuple[float, float] = (0.6, 1.4)
    """Seconds between two signals, drawn uniformly."""
    kill_share: float = 0.5
    """Of the signals, the share that are SIGKILL (the rest SIGTERM)."""
    backlog: int = 16
    """Submitted runs no worker claimed yet, at most: the harness submits the
    next run when fewer wait (see :meth:`Scenario._feed`)."""
    restarts: int = 0
    """Server restarts instead of signals (the restart scenarios)."""
    outage: float = 1.0
    """Seconds a restarted server stays down."""
    drain_timeout: float = 120.0
    """Bounds the wait for every run to finish (and for a restart's progress)."""
    worker_drain: float = 10.0
    """A SIGTERMed worker's --drain-timeout; it must exit within this plus a margin."""


def workload(options: Options) -> dict[str, JSON]:
    """run id -> input: half plans (2-4 steps per phase), half loops (5-10 steps)."""
    rng = random.Random(f"workload-{options.seed}")  # noqa: S311 - a reproducible workload
    runs: dict[str, JSON] = {}
    for number in range(options.runs):
        if number % 2 == 0:
            run_id = f"plan-{number:04d}"
            runs[run_id] = {"run": run_id, "steps": [rng.randint(2, 4) for _ in app.PHASES]}
        else:
            run_id = f"loop-{number:04d}"
            runs[run_id] = {"run": run_id, "steps": [rng.randint(5, 10)]}
    return runs


def kind_of(run_id: str) -> str:
    return app.PLAN if run_id.startswith("plan-") else app.LOOP


async def expected_outputs(runs: dict[str, JSON]) -> dict[str, JSON]:
    """The output of an uninterrupted run of each input (no store, instant tools)."""
    executor = app.reference_executor()
    results = await asyncio.gather(
        *(executor.run(kind_of(run_id), run_input) for run_id, run_input in runs.items())
    )
    return {run_id: result.output for run_id, result in zip(runs, results, strict=True)}


async def until(condition: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    """Whether ``condition`` came to hold within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


class Progress:
    """Runs claimed and runs completed so far, by the workers' logs (read
    incrementally, whole lines only)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[Path, int] = {}
        self.claimed: set[str] = set()
        self.completed: set[str] = set()

    def read(self) -> Progress:
        for path in self.directory.glob("worker-*.jsonl"):
            with path.open("rb") as log:
                log.seek(self.offsets.get(path, 0))
                chunk = log.read()
            whole = chunk[: chunk.rfind(b"\n") + 1]  # a line being written is read next time
            self.offsets[path] = self.offsets.get(path, 0) + len(whole)
            for line in whole.splitlines():
                event = json.loads(line)
                if event.get("error") is None and event.get("kind") in ("begin", "claim"):
                    self.claimed.add(event["run"])
                elif event.get("error") is None and event.get("kind") == "complete":
                    self.completed.add(event["run"])
        return self


class Scenario:
    def __init__(
        self, target: Target, options: Options, directory: Path, say: Callable[[str], None]
    ) -> None:
        self.target = target
        self.options = options
        self.directory = directory
        self.say = say
        self.namespace = f"chaos-{os.getpid()}-{int(time.time())}"
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True)
        env = {
            app.LOG_ENV: str(self.logs),
            app.NAMESPACE_ENV: self.namespace,
            app.LEASE_ENV: str(options.lease),
            app.STEP_MS_ENV: str(options.step_ms),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            **target.env,
        }
        command = worker_command(
            "chaos.app:build",
            target.url,
            options.concurrency,
            target.poll_interval,
            options.worker_drain,
        )
        self.fleet = Fleet(command, env, directory, options.workers, REPO)
        self.started = time.monotonic()
        self.restarts_at: list[int] = []
        """Runs completed when each restart began."""
        self.progress = Progress(self.logs)
        self.feeding: asyncio.Task[None] | None = None

    def note(self, text: str) -> None:
        self.say(f"  {time.monotonic() - self.started:6.1f}s {text}")

    async def run(self) -> tuple[Verdict, list[str]]:
        options = self.options
        os.environ.update(self.target.env)  # the harness's own store client (S3 credentials)
        runs = workload(options)
        expected = await expected_outputs(runs)
        store = outlast.open(self.target.url)
        try:
            await self.fleet.start_all()
            self.note(f"{options.workers} workers ready; submitting {len(runs)} runs")
            began = time.monotonic()
            await self._chaos(store, runs)
            self.note(f"chaos over after {time.monotonic() - began:.1f}s; draining")
            drained = await self._drain(store)
            self.note("no run left running" if drained else "the drain timed out")
            await self.fleet.stop_all()
            stuck = await self.fleet.reap(options.worker_drain + 20.0)
            self.note(f"all {len(self.fleet.every)} workers ever started have exited")
            records = await _all_records(store, self.namespace)
        finally:
            self.fleet.kill_everything()
            await store.close()  # the target removes the runs (schema, prefix, directory)
        stops = [
            Stop(w.stopped_by, w.pid, w.signalled_at or 0.0, w.exit_code, w.final, w in stuck)
            for w in self.fleet.every
            if w.stopped_by is not None
        ]
        facts = Facts(runs, expected, records, stops, options.lease)
        verdict = judge(facts, read_logs(self.logs))
        self._worker_outputs(verdict)
        return verdict, self._summary(verdict, runs, time.monotonic() - self.started)

    async def _chaos(self, store: outlast.Store, runs: dict[str, JSON]) -> None:
        """Feed the runs while the signals (or restarts) go on; a harness error
        in either ends both at once."""
        self.feeding = asyncio.create_task(self._feed(store, runs))
        chaos = asyncio.create_task(
            self._restarts() if self.options.restarts else self._signals(store)
        )
        try:
            done, _ = await asyncio.wait({self.feeding, chaos}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises a harness error
            await asyncio.wait_for(self.feeding, self.options.drain_timeout)
        finally:
            for task in (self.feeding, chaos):
                task.cancel()
            await asyncio.gather(self.feeding, chaos, return_exceptions=True)

    def _room_for(self, submitted: int) -> bool:
        return submitted - len(self.progress.read().claimed) < self.options.backlog

    def _completed_at_least(self, count: int) -> bool:
        return len(self.progress.read().completed) >= count

    async def _feed(self, store: outlast.Store, runs: dict[str, JSON]) -> None:
        """Submit every run, keeping at most ``backlog`` submitted runs unclaimed.

        A bounded backlog keeps the fleet busy without a long queue: claims
        are oldest first, so behind a queue of hundreds a recovered run would
        wait its turn, and the kill-to-resume delay would measure the queue.
        """
        submitter = outlast.Executor(store, namespace=self.namespace, lease=self.options.lease)
        submitted = 0
        for run_id, run_input in runs.items():
            waiting = await until(
                functools.partial(self._room_for, submitted),
                self.options.drain_timeout,
            )
            if not waiting:
                self.note(f"no run was claimed for {self.options.drain_timeout:.0f}s: stopped")
                return
            await self._submit_retrying(submitter, run_id, run_input)
            submitted += 1
        self.note(f"all {submitted} runs submitted")

    async def _submit_retrying(
        self, submitter: outlast.Executor, run_id: str, run_input: JSON
    ) -> None:
        """Submit, retrying while the store is down (a restart): submitting
        the same run id again is the same run."""
        deadline = time.monotonic() + self.options.drain_timeout
        pause = 0.05
        while True:
            try:
                await submitter.submit(kind_of(run_id), run_input, run_id=run_id)
                return
            except UNREACHABLE:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def _signals(self, store: outlast.Store) -> None:
        options = self.options
        rng = random.Random(f"signals-{options.seed}")  # noqa: S311 - a reproducible schedule
        end = time.monotonic() + options.seconds
        while True:
            gap = rng.uniform(*options.gap)
            slot = rng.randrange(options.workers)
            kill = rng.random() < options.kill_share
            if time.monotonic() + gap > end:
                return
            await asyncio.sleep(gap)  # the seeded schedule itself, not a wait for a condition
            if not await self._work_left(store):
                self.note("no run left: the chaos ends early")
                return
            if kill:
                victim, fresh = await self.fleet.kill(slot)
                self.note(f"kill -9 slot {slot} (pid {victim.pid}); started pid {fresh.pid}")
            else:
                victim, fresh = await self.fleet.terminate(slot)
                self.note(f"SIGTERM slot {slot} (pid {victim.pid}); started pid {fresh.pid}")

    async def _restarts(self) -> None:
        options = self.options
        server = self.target.server
        assert server is not None
        for number in range(1, options.restarts + 1):
            due = options.runs * number // (options.restarts + 1)
            if not await until(
                functools.partial(self._completed_at_least, due), options.drain_timeout
            ):
                self.note(f"fewer than {due} runs completed; no restart {number}")
                return
            done = len(self.progress.completed)
            self.restarts_at.append(done)
            how = "crash (-m immediate / SIGKILL)" if number % 2 else "clean stop"
            self.note(f"restart {number} at {done} runs completed: {how}")
            await asyncio.to_thread(server.restart, number % 2 == 1, options.outage)
            self.note(f"restart {number}: server up again")

    async def _work_left(self, store: outlast.Store) -> bool:
        if self.feeding is not None and not self.feeding.done():
            return True
        try:
            page = await store.list(self.namespace, RunStatus.RUNNING, 1)
        except UNREACHABLE:
            return True
        return bool(page.records)

    async def _drain(self, store: outlast.Store) -> bool:
        deadline = time.monotonic() + self.options.drain_timeout
        while await self._work_left(store):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.25)
        return True

    def _worker_outputs(self, verdict: Verdict) -> None:
        """A traceback in a worker's output is a failure; warnings are counted."""
        for worker in self.fleet.every:
            text = worker.output.read_text(errors="replace")
            verdict.counts["worker warnings"] += text.count("WARNING ")
            verdict.counts["worker errors"] += text.count("ERROR ")
            if "Traceback" in text:
                start = text.index("Traceback")
                verdict.problem(
                    "a worker printed a traceback",
                    f"{worker.output.name}: {text[start : start + 1500]}",
                )

    def _summary(self, verdict: Verdict, runs: dict[str, JSON], took: float) -> list[str]:
        o, c = self.options, verdict.counts
        plans = sum(1 for run_id in runs if run_id.startswith("plan-"))
        problems = verdict.problems
        lines = [
            f"{self.target.name}: seed {o.seed}, {len(runs)} runs ({plans} plans of "
            f"{len(app.PHASES)} phases, {len(runs) - plans} loops), {o.workers} workers x "
            f"{o.concurrency}, lease {o.lease:g}s, tool call {o.step_ms:g}ms",
            f"  runs: {c['completed as expected']}/{len(runs)} completed once with an "
            f"uninterrupted run's output; failed {len(problems.get('failed', []))}, "
            f"stuck {len(problems.get('stuck (still running after the drain)', []))}, "
            f"lost {len(problems.get('lost (submitted, not in the store)', []))}",
            f"  chaos: kill -9 {c['kill signals']}, SIGTERM {c['term signals']}; "
            f"{len(self.fleet.every)} workers started; final SIGTERM {c['final term signals']}; "
            f"{sum(1 for w in self.fleet.every if w.stopped_by == 'term' and w.exit_code == 0)} "
            "SIGTERMed workers exited 0",
            f"  claims: {c['first claims']} first, {c['recoveries']} recoveries (epoch >= 2); "
            f"releases {c['release events']}; lease lost {c['lease_lost events']}",
            f"  completes: unacknowledged but stored {c['unacknowledged completes']}; stored by a "
            f"worker killed before it logged them {c['completes unlogged (killed)']}",
            f"  tool calls: {c['tool calls']} started; in-flight calls repeated by the next "
            f"epoch {c['repeated in-flight calls']}; finished steps run twice "
            f"{len(problems.get('a finished step ran twice', []))}; calls by superseded "
            f"epochs {len(problems.get('a tool call by a superseded epoch', []))}",
            f"  kill -9 -> next claim of each run the killed worker held: "
            f"{spread(verdict.kill_to_resume)}",
            f"  SIGTERM release -> next claim: {spread(verdict.release_to_resume)}",
            f"  store errors the workers' runs met: {c['save errors']} saves, "
            f"{c['complete errors']} completes, {c['release errors']} releases; worker log: "
            f"{c['worker warnings']} warnings, {c['worker errors']} errors",
        ]
        server = self.target.server
        if server is not None:
            restarts = ", ".join(
                f"{how} at {done} done, down {started - stopped:.1f}s"
                for (stopped, started, how), done in zip(
                    server.restarts, self.restarts_at, strict=False
                )
            )
            lines.append(f"  server restarts: {restarts or 'none'}")
        lines.append(f"  took {took:.1f}s: {'PASS' if verdict.ok else 'FAIL'}")
        for what, examples in sorted(problems.items()):
            lines.append(f"  FAIL {what}: {len(examples)}")
            lines.extend(f"    {example}" for example in examples[:5])
        return lines


async def _all_records(store: outlast.Store, namespace: str) -> dict[str, RunRecord]:
    records: dict[str, RunRecord] = {}
    cursor = None
    while True:
        page = await store.list(namespace, None, 500, cursor)
        records.update((record.run_id, record) for record in page.records)
        cursor = page.next_cursor
        if cursor is None:
            return records
