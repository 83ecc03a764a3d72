"""The DBOS side of the fleet bench: a worker process and the enqueuer.

Only imported when the bench compares with DBOS (``pip install dbos``: the
nox session ``fleet`` installs it into its own venv; it is no dependency of
outlast).

The workload mirrors outlast's ``one-step`` kind: a workflow ``one_step``
whose one step returns the final answer, so DBOS checkpoints one step and
then the workflow's outcome. Its argument is its run id.

A worker (``python bench/fleet_dbos.py URL --executor-id w0 ...``) launches
DBOS with its own executor id (DBOS tells processes apart by it), registers
the queue with the bench's ``worker_concurrency`` and ``polling_interval_sec``,
prints ``ready`` and serves until SIGTERM or SIGINT. Every workflow appends
``<time.time()> start <run id> 1 <pid>`` to ``$FLEET_EVENTS_DIR/dbos-<pid>.log``
as its body begins (line-buffered, the same format as outlast's workers).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path
from typing import IO

from dbos import DBOS, DBOSConfig

APP = "outlast-fleet-bench"
VERSION = "fleet-bench"
"""One application version in every process, so each dequeues the client's
version-less workflows (DBOS hands those to workers of the latest version)."""
QUEUE = "fleet"
WORKFLOW = "one_step"
ANSWER = "done"
EVENTS_ENV = "FLEET_EVENTS_DIR"

_log: IO[str] | None = None


@DBOS.step()
def answer(run_id: str) -> str:
    return ANSWER


@DBOS.workflow(name=WORKFLOW)
def one_step(run_id: str) -> str:
    if _log is not None:
        _log.write(f"{time.time():.6f} start {run_id} 1 {os.getpid()}\n")
    return answer(run_id)


def config(url: str, executor_id: str, pool: int) -> DBOSConfig:
    """DBOS's configuration: every knob the bench sets (see bench/README.md)."""
    return {
        "name": APP,
        "system_database_url": url,
        "executor_id": executor_id,
        "application_version": VERSION,
        "sys_db_pool_size": pool,
        "log_level": "WARNING",
    }


def serve(url: str, executor_id: str, concurrency: int, polling_interval: float, pool: int) -> None:
    global _log
    directory = os.environ.get(EVENTS_ENV)
    if directory:
        _log = (Path(directory) / f"dbos-{os.getpid()}.log").open("a", buffering=1)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    DBOS(config=config(url, executor_id, pool))
    DBOS.launch()
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=concurrency,
        polling_interval_sec=polling_interval,
        on_conflict="always_update",
    )
    print(f"dbos worker {executor_id}: ready", flush=True)
    stop.wait()
    DBOS.destroy(workflow_completion_timeout_sec=10)
    if _log is not None:
        _log.close()


class Enqueuer:
    """Enqueues runs from outside the application, as DBOS documents: a DBOSClient."""

    def __init__(self, url: str, pool: int) -> None:
        from dbos import DBOSClient

        self.client = DBOSClient(
            system_database_url=url, system_database_pool_size=pool, application_name=APP
        )

    def enqueue(self, run_id: str) -> None:
        self.client.enqueue(
            {"queue_name": QUEUE, "workflow_name": WORKFLOW, "workflow_id": run_id}, run_id
        )

    def close(self) -> None:
        self.client.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description="One DBOS worker of the fleet bench.")
    parser.add_argument("url")
    parser.add_argument("--executor-id", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--polling-interval", type=float, required=True)
    parser.add_argument("--pool", type=int, required=True)
    args = parser.parse_args()
    serve(args.url, args.executor_id, args.concurrency, args.polling_interval, args.pool)


if __name__ == "__main__":
    main()
