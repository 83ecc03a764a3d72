"""The bench's own PostgreSQL and Redis servers, from the installed binaries.

Each lives in a temporary directory, listens on a free loopback port and is
stopped by its PID when the bench ends, even on an error: the numbers do not
depend on the shared services, and nothing is left running. PostgreSQL keeps
its defaults (fsync, synchronous_commit, shared_buffers: as initdb made them)
plus ``pg_stat_statements`` (statement counts); Redis runs without
persistence (no RDB snapshots, no AOF), which is how it is run as a cache and
the cheapest setting for the floor and outlast alike.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

import psycopg
import redis

STOP_TIMEOUT = 30.0
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_bindir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb and postgres."""
    found = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        major = re.match(r"\d+", candidate.parent.name)
        if major and (candidate / "initdb").exists() and (candidate / "postgres").exists():
            found.append((int(major.group()), candidate))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return max(found)[1]


def stop_process(process: subprocess.Popen[bytes], first: signal.Signals) -> None:
    """Signal ``process`` (by its PID), wait, and kill it if it does not exit."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, first)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)


class PrivatePostgres:
    """``initdb`` into ``directory``, then ``postgres`` on a free port (as the
    ``postgres`` user when the bench runs as root: the server refuses root)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.user = "postgres" if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        data, sockets = self.directory / "data", self.directory / "sockets"
        self.directory.mkdir(parents=True, exist_ok=True)
        sockets.mkdir(exist_ok=True)
        if self.user is not None:  # the server's user must own its directories
            self.directory.parent.chmod(0o755)
            for path in (self.directory, sockets):
                shutil.chown(path, self.user, self.user)
        subprocess.run(  # noqa: S603 - the installed server's own binaries
            [
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",  # a loopback server of the bench's own, gone at the end
                "-E",
                "UTF8",
                "--no-sync",  # initdb's own files only; the server's fsync stays on
            ],
            check=True,
            capture_output=True,
            user=self.user,
        )
        self._log = (self.directory.parent / "postgres.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - the installed server binary
            [
                str(self.bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(sockets),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "shared_preload_libraries=pg_stat_statements",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            user=self.user,
            start_new_session=True,  # a Ctrl-C of the bench reaches it only through stop()
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.url(), autocommit=True, connect_timeout=2) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "the private PostgreSQL did not start; see "
                        f"{self.directory.parent / 'postgres.log'}"
                    ) from None
                time.sleep(0.2)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def version(self) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def stop(self) -> None:
        """Fast shutdown (SIGINT) by PID; SIGKILL if it lingers."""
        if self.process is not None:
            stop_process(self.process, signal.SIGINT)
        if self._log is not None:
            self._log.close()


class PrivateRedis:
    """``redis-server`` on a free loopback port, no persistence."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._log = (self.directory / "redis.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - the installed server binary
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(port=self.port, socket_connect_timeout=2)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the private Redis did not start; see {self.directory / 'redis.log'}"
                        ) from None
                    time.sleep(0.1)
        finally:
            client.close()

    def version(self) -> str:
        client = redis.Redis(port=self.port)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM)
        if self._log is not None:
            self._log.close()
