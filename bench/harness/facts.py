"""The machine's facts, printed with every result: numbers mean little without them."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import time
from importlib import metadata
from pathlib import Path

from bench.harness.servers import PrivatePostgres, PrivateRedis

LIBRARIES = (
    "outlast",
    "outlast-postgres",
    "outlast-redis",
    "psycopg",
    "psycopg-binary",
    "psycopg-c",
    "psycopg-pool",
    "redis",
    "hiredis",
    "msgspec",
    "orjson",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-postgres",
    "dbos",
    "sqlalchemy",
    "matplotlib",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _ram() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return f"{head} + uncommitted changes" if dirty else head


def machine(*, start: bool) -> dict[str, str]:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if not start:
        return {"load average at end (1/5/15 min)": load, "ended": stamp}
    facts = {
        "started": stamp,
        "load average at start (1/5/15 min)": load,
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": _ram(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "commit": _git(),
        "SQLite": sqlite3.sqlite_version,
    }
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    facts["libraries"] = ", ".join(versions)
    try:
        import psycopg

        facts["psycopg implementation"] = psycopg.pq.__impl__
    except ImportError:
        pass
    try:
        from redis.utils import HIREDIS_AVAILABLE

        facts["redis-py parser"] = "hiredis" if HIREDIS_AVAILABLE else "pure Python"
    except ImportError:
        pass
    return facts


def servers(pg: PrivatePostgres, redis: PrivateRedis) -> dict[str, str]:
    return {
        "PostgreSQL (private)": f"{pg.version()} ({pg.bindir}), initdb defaults",
        "Redis (private)": f"{redis.version()}, no persistence",
    }
