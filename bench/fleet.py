"""The fleet bench: 10,000 one-step runs through 8 worker processes, per store and on DBOS.

    python bench/fleet.py [TARGET ...] [--runs 10000] [--workers 8] [--concurrency 8]
    nox -s fleet -- [same arguments]

TARGETs: ``postgres``, ``redis``, ``sqlite`` (outlast's stores) and ``dbos``
(a DBOS Queue on the same PostgreSQL server; needs ``pip install dbos``).
Default: all four. For each target the bench

1. makes a fresh place for it: a database created on the PostgreSQL server
   (outlast's and DBOS's each its own, dropped at the end), a Redis key
   prefix (deleted at the end), a temporary SQLite file;
2. starts the worker processes (``outlast worker fleet_app:build`` or
   ``bench/fleet_dbos.py``) and waits until each says it is ready;
3. **burst**: submits ``--runs`` runs from this process, ``--submitters`` at a
   time, and waits until every one completed: runs/s is runs divided by the
   time from the first submit call to the last completion the store recorded;
4. **paced**: submits ``--paced`` more runs one at a time at ``--rate`` per
   second to the idle fleet: the pickup latency a lone submission sees;
5. stops the workers with SIGTERM (they must exit 0), reads their event
   files and the stored records, checks that every run completed and was
   claimed exactly once, and prints a table.

Latency is measured from just before the submit (enqueue) call to the
worker's event: ``claim`` (outlast: the executor's CLAIM event, right after
claim_next returned; DBOS: the dequeue's ``started_at_epoch_ms``, written by
the claiming UPDATE) and ``start`` (the run's own code begins: outlast's model
call, DBOS's workflow body). Every process runs on this machine: one clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import signal
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import fleet_cpu
import fleet_stats
from fleet_stats import EventFiles, Phase, Result
from fleet_targets import HERE, Options, Submit, Target, targets_of

POSTGRES_ENV = "OUTLAST_TEST_POSTGRES_URL"
REDIS_ENV = "OUTLAST_TEST_REDIS_URL"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
TARGETS = ("postgres", "redis", "dbos", "sqlite")
READY_TIMEOUT = 120.0
"""Seconds 8 workers may take to import and connect on a loaded 2-core machine."""
STALL_TIMEOUT = 120.0
"""Seconds without a single finished run before the bench gives up on a drain."""
PROFILED = ("claim_next", "wait_for_change", "submit", "save", "complete", "renew")
"""Store calls whose counts the profile of a worker reports."""


async def start_workers(
    target: Target, count: int, events: Path, logs: Path
) -> list[asyncio.subprocess.Process]:
    env = dict(os.environ)
    env["FLEET_EVENTS_DIR"] = str(events)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    processes = []
    for index in range(count):
        with (logs / f"worker-{index}.out").open("w") as output:
            processes.append(
                await asyncio.create_subprocess_exec(
                    *target.worker_command(index), stdout=output, stderr=output, env=env
                )
            )
    deadline = time.monotonic() + READY_TIMEOUT
    for index, process in enumerate(processes):
        path = logs / f"worker-{index}.out"
        while target.ready_marker not in path.read_text(errors="replace"):
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {index} did not start:\n{path.read_text()}")
            await asyncio.sleep(0.1)
    return processes


async def stop_workers(processes: Sequence[asyncio.subprocess.Process]) -> list[int | None]:
    """SIGTERM every worker; their exit codes (None: killed after 60 s)."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for process in processes:
        try:
            codes.append(await asyncio.wait_for(process.wait(), 60))
        except TimeoutError:
            process.kill()
            codes.append(None)
    return codes


async def burst(submit: Submit, phase: Phase, run_ids: Sequence[str], submitters: int) -> None:
    """Submit every run, ``submitters`` calls in flight."""
    pending = iter(run_ids)

    async def submitter() -> None:
        for run_id in pending:
            phase.submitted[run_id] = time.time()
            await submit(run_id)

    await asyncio.gather(*(submitter() for _ in range(submitters)))
    phase.submit_done = time.time()


async def paced(submit: Submit, phase: Phase, run_ids: Sequence[str], rate: float) -> None:
    """Submit one run at a time, ``rate`` per second."""
    began = time.monotonic()
    for index, run_id in enumerate(run_ids):
        delay = began + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        phase.submitted[run_id] = time.time()
        await submit(run_id)
    phase.submit_done = time.time()


async def drain(target: Target, events: EventFiles, expected: int) -> None:
    """Wait until ``expected`` runs finished; fail when none finishes for a while."""
    done = -1
    progressed = time.monotonic()
    while True:
        now = await target.finished(events)
        if now >= expected:
            return
        if now != done:
            done, progressed = now, time.monotonic()
        elif time.monotonic() - progressed > STALL_TIMEOUT:
            raise RuntimeError(f"{target.name}: stuck at {done} of {expected} finished runs")
        await asyncio.sleep(0.1)


async def measure(target: Target, options: Options) -> Result:
    """Start the fleet, run both phases, stop it, and work out the figures."""
    with tempfile.TemporaryDirectory(prefix="outlast-fleet-") as scratch:
        events_dir, logs = Path(scratch) / "events", Path(scratch) / "logs"
        events_dir.mkdir()
        logs.mkdir()
        events = EventFiles(events_dir)
        tag = uuid.uuid4().hex[:6]
        first, second = Phase("burst"), Phase("paced")
        await target.setup()
        processes: list[asyncio.subprocess.Process] = []
        try:
            before = await target.counters()
            processes = await start_workers(target, options.workers, events_dir, logs)
            submit = await target.open_submitter()
            server = await target.server_pid()
            cpu_before = cpu_now(processes, server)
            print(f"{target.name} [{target.settings}]: {options.runs} runs", flush=True)
            run_ids = [f"b{tag}-{i:06d}" for i in range(options.runs)]
            await burst(submit, first, run_ids, options.submitters)
            await drain(target, events, options.runs)
            if options.paced:
                run_ids = [f"p{tag}-{i:06d}" for i in range(options.paced)]
                await paced(submit, second, run_ids, options.rate)
                await drain(target, events, options.runs + options.paced)
            cpu_after = cpu_now(processes, server)
            codes = await stop_workers(processes)
            processes = []
            await target.close_submitter()
            after = await target.counters()
            events.read()
            counted = fleet_stats.read_counts(events_dir)
            facts = await target.facts()
        finally:
            if processes:
                await stop_workers(processes)
            await target.teardown()
    claims, starts = events.by_run("claim"), events.by_run("start")
    logged_claims = claims if target.logs_claims else None
    problems = fleet_stats.check((first, second), facts, logged_claims, starts, events.counts)
    if any(code != 0 for code in codes):
        problems.append(f"worker exit codes {codes}")
    claim_times = fleet_stats.first_times(claims)
    if not target.logs_claims:  # DBOS: its record's dequeue time stands in
        claim_times = {run_id: f.started_at for run_id, f in facts.items()}
    start_times = fleet_stats.first_times(starts)
    began = min(first.submitted.values())
    last = max(facts[r].finished_at for r in first.submitted if r in facts)
    total = options.runs + options.paced
    per_run = None
    if before is not None and after is not None:
        per_run = {key: (after[key] - before[key]) / total for key in after}
    cpu = {key: (cpu_after[key] - cpu_before[key]) * 1000 / total for key in cpu_after}
    cpu["other"] = cpu.pop("machine") - sum(cpu.values())
    calls = {name: count / total for name, count in counted.items()}
    result = Result(
        target=target.name,
        settings=target.settings,
        runs=options.runs,
        seconds=last - began,
        submit_seconds=first.submit_done - began,
        claim_ms=fleet_stats.latencies(first, claim_times),
        start_ms=fleet_stats.latencies(first, start_times),
        paced_claim_ms=fleet_stats.latencies(second, claim_times) if options.paced else None,
        paced_start_ms=fleet_stats.latencies(second, start_times) if options.paced else None,
        problems=problems,
        per_worker=fleet_stats.per_worker(starts),
        per_run=per_run,
        cpu_ms=cpu,
        calls=calls or None,
    )
    print(fleet_stats.table([result]).splitlines()[-1], flush=True)
    profile = getattr(target, "profile_path", None)
    if options.profile and profile is not None:
        show_profile(profile())
    return result


def cpu_now(
    processes: Sequence[asyncio.subprocess.Process], server: int | None
) -> dict[str, float]:
    """CPU seconds so far of the workers, this process and the store server."""
    spent = {
        "workers": fleet_cpu.processes(p.pid for p in processes),
        "bench": fleet_cpu.own(),
    }
    if server is not None:
        spent["server"] = fleet_cpu.tree(server)
    spent["machine"] = fleet_cpu.machine()
    return spent


def show_profile(path: Path) -> None:
    """The top of a worker's cProfile and how often it called the store."""
    stats = pstats.Stats(str(path))
    calls: dict[str, int] = dict.fromkeys(PROFILED, 0)
    for (filename, _, function), (_, ncalls, *_rest) in stats.stats.items():  # type: ignore[attr-defined]  # pstats keeps its table untyped
        if function in calls and ("outlast_" in filename or "/outlast/store.py" in filename):
            calls[function] = max(calls[function], ncalls)
    print(f"profile of worker 0 ({path}): store calls {calls}")
    stats.sort_stats("tottime").print_stats(20)


def parse(argv: Sequence[str] | None = None) -> tuple[Options, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"of {', '.join(TARGETS)}")
    parser.add_argument("--runs", type=int, default=10_000, help="runs of the burst")
    parser.add_argument("--workers", type=int, default=8, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="runs at once per worker")
    parser.add_argument("--submitters", type=int, default=8, help="submit calls in flight")
    parser.add_argument("--paced", type=int, default=500, help="runs of the paced phase (0: none)")
    parser.add_argument("--rate", type=float, default=50.0, help="paced submissions per second")
    parser.add_argument(
        "--pool", type=int, default=4, help="PostgreSQL connections per worker (outlast and DBOS)"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="outlast workers' --poll-interval"
    )
    parser.add_argument(
        "--dbos-polling",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[1.0, 0.1],
        help="DBOS queue polling_interval_sec values to run, comma-separated (default 1,0.1)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="run outlast's worker 0 under cProfile into DIR/<target>-worker0.prof; print its top",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES,
        help=f"the PostgreSQL server (${POSTGRES_ENV}); the bench creates and drops databases",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get(REDIS_ENV) or DEFAULT_REDIS,
        help=f"the Redis server (${REDIS_ENV}); the bench writes under its own key prefix",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}: choose of {', '.join(TARGETS)}")
    return args, list(args.targets) or list(TARGETS)


async def run(options: Options, names: list[str]) -> None:
    began = time.monotonic()
    results = [await measure(target, options) for target in targets_of(options, names)]
    print()
    print(fleet_stats.table(results))
    print(f"\n(the bench took {time.monotonic() - began:.0f} s)")


def main() -> None:
    options, names = parse()
    if options.profile:
        Path(options.profile).mkdir(parents=True, exist_ok=True)
    asyncio.run(run(options, names))


if __name__ == "__main__":
    main()
