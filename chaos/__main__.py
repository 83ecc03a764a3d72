"""``python -m chaos [SCENARIO ...] [options]``: run chaos scenarios, print
what each proved, exit 1 when any check failed (2 when a store could not be
reached or a worker would not start: strict, never a skip).

Scenarios: sqlite, postgres, redis, s3 (workers killed and stopped under
load) and postgres-restarts, redis-restarts (the store's own throwaway server
restarted under load). Default: all six. See chaos/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from chaos.fleet import FleetError
from chaos.scenario import Options, Scenario
from chaos.servers import (
    Target,
    Unreachable,
    moto_s3,
    shared_postgres,
    shared_redis,
    throwaway_postgres,
    throwaway_redis,
)

KILLS = ("sqlite", "postgres", "redis", "s3")
RESTARTS = ("postgres-restarts", "redis-restarts")
SCENARIOS = (*KILLS, *RESTARTS)


@contextlib.contextmanager
def target_for(name: str, directory: Path) -> Iterator[Target]:
    """The store of scenario ``name``, its servers started (and stopped after)."""
    opened: contextlib.AbstractContextManager[Target]
    if name == "sqlite":
        opened = contextlib.nullcontext(
            Target("sqlite", f"sqlite:///{directory / 'runs.db'}", poll_interval=0.5)
        )
    elif name == "postgres":
        opened = shared_postgres()
    elif name == "redis":
        opened = shared_redis()
    elif name == "s3":
        opened = moto_s3(directory)
    elif name == "postgres-restarts":
        opened = throwaway_postgres(directory)
    else:
        opened = throwaway_redis(directory)
    with opened as target:
        yield target


def parse(argv: list[str]) -> tuple[list[str], Options, Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"of {', '.join(SCENARIOS)} (default: all)"
    )
    d = Options()
    parser.add_argument("--seed", type=int, default=None, help="default: drawn, and printed")
    parser.add_argument("--runs", type=int, default=d.runs, help="runs per kill scenario")
    parser.add_argument("--s3-runs", type=int, default=100, help="runs of the s3 scenario")
    parser.add_argument("--restart-runs", type=int, default=300, help="per restart scenario")
    parser.add_argument(
        "--backlog", type=int, default=d.backlog, help="most submitted runs waiting for a worker"
    )
    parser.add_argument("--workers", type=int, default=d.workers)
    parser.add_argument("--concurrency", type=int, default=d.concurrency)
    parser.add_argument(
        "--seconds", type=float, default=d.seconds, help="the chaos window of kill scenarios"
    )
    parser.add_argument("--restarts", type=int, default=3, help="server restarts per scenario")
    parser.add_argument("--outage", type=float, default=d.outage, help="seconds a server is down")
    parser.add_argument("--lease", type=float, default=d.lease, help="the workers' lease")
    parser.add_argument("--step-ms", type=float, default=d.step_ms, help="a tool call's duration")
    parser.add_argument("--drain-timeout", type=float, default=d.drain_timeout)
    parser.add_argument("--keep", action="store_true", help="keep the logs of passing scenarios")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    base = Options(
        runs=args.runs,
        workers=args.workers,
        backlog=args.backlog,
        concurrency=args.concurrency,
        seconds=args.seconds,
        seed=seed,
        lease=args.lease,
        step_ms=args.step_ms,
        outage=args.outage,
        drain_timeout=args.drain_timeout,
    )
    restarts = dataclasses.replace(base, runs=args.restart_runs, restarts=args.restarts)
    return list(args.scenarios or SCENARIOS), base, restarts, args


def main(argv: list[str]) -> int:
    names, kills, restarts, args = parse(argv)
    # The harness's own pool reconnecting after a server restart: expected, and noise here.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    print(f"chaos: scenarios {', '.join(names)}; seed {kills.seed} (rerun: --seed {kills.seed})")
    began = time.monotonic()
    failed: list[str] = []
    unreachable: list[str] = []
    for name in names:
        options = restarts if name in RESTARTS else kills
        if name == "s3":
            options = dataclasses.replace(options, runs=args.s3_runs)
        directory = Path(tempfile.mkdtemp(prefix=f"outlast-chaos-{name}-"))
        print(f"\n== {name} ({directory})", flush=True)
        ok = False
        try:
            with target_for(name, directory) as target:
                scenario = Scenario(
                    target, options, directory, lambda line: print(line, flush=True)
                )
                verdict, summary = asyncio.run(scenario.run())
            print("\n".join(summary), flush=True)
            ok = verdict.ok
            if not ok:
                failed.append(name)
        except (Unreachable, FleetError) as exc:
            print(f"  FAIL {name}: {exc}", flush=True)
            unreachable.append(name)
        except Exception:  # noqa: BLE001 - a harness error fails this scenario, the rest run
            print(f"  FAIL {name}: the harness itself failed:", flush=True)
            traceback.print_exc(file=sys.stdout)
            failed.append(name)
        finally:
            if ok and not args.keep:
                shutil.rmtree(directory, ignore_errors=True)
            else:
                print(f"  logs and data kept in {directory}", flush=True)
    took = time.monotonic() - began
    print(f"\nchaos: {len(names)} scenarios in {took:.0f}s, seed {kills.seed}: ", end="")
    if failed or unreachable:
        print(f"FAILED: {', '.join(failed + unreachable)}")
        return 2 if unreachable and not failed else 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
