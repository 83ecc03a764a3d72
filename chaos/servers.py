"""The stores a chaos scenario runs on, and the throwaway servers behind some.

* SQLite: a file in the scenario's directory, shared by the worker processes.
* PostgreSQL and Redis: the machine's shared servers (``OUTLAST_TEST_POSTGRES_URL``,
  ``OUTLAST_TEST_REDIS_URL``), each scenario in a schema / key prefix of its
  own, removed afterwards. Never stopped or restarted: only used.
* S3: a moto server in a process of its own (``python -m chaos.moto_server``).
* For the restart scenarios, a throwaway PostgreSQL (``initdb``/``pg_ctl`` from
  the installed server package, as the ``postgres`` OS user when run as root,
  its own port and directory) and a throwaway ``redis-server`` (appendonly,
  ``appendfsync always``, its own port and directory). Only these are ever
  stopped: PostgreSQL through ``pg_ctl -D <its own data directory>`` (the pid
  in that directory's ``postmaster.pid``), Redis by the pid of the process this
  harness started.

A restart is a crash (PostgreSQL ``-m immediate``, redis SIGKILL) or a clean
stop (``-m fast``, SIGTERM), then an outage of a chosen length, then a start
on the same port and data, waited for with a bounded timeout.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import redis

POSTGRES_URL_ENV = "OUTLAST_TEST_POSTGRES_URL"
REDIS_URL_ENV = "OUTLAST_TEST_REDIS_URL"
SHARED_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
SHARED_REDIS = "redis://127.0.0.1:6379/0"

S3_BUCKET = "outlast-chaos"
S3_REGION = "us-east-1"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": S3_REGION,
}

START_TIMEOUT = 60.0
POSTGRES_POOL = {"pool_max_size": "5", "connect_timeout": "2"}
"""Per worker: its concurrency plus the claim loop; a short connect timeout so
a worker notices a server that is down quickly."""


class Unreachable(Exception):
    """A store the scenario needs cannot be reached or started (a failure: strict)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition: object, what: str, timeout: float = START_TIMEOUT) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise Unreachable(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Target:
    """One store of a scenario: the URL workers get, extra environment, how
    idle workers poll, and (for throwaway servers) how to restart it."""

    name: str
    url: str
    env: dict[str, str] = field(default_factory=dict)
    poll_interval: float = 0.5
    server: ThrowawayPostgres | ThrowawayRedis | None = None


# -- the shared servers --------------------------------------------------------------


@contextlib.contextmanager
def shared_postgres() -> Iterator[Target]:
    """The machine's PostgreSQL, in a schema of this scenario's own (dropped after)."""
    base = os.environ.get(POSTGRES_URL_ENV, SHARED_POSTGRES)
    try:
        with psycopg.connect(base, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise Unreachable(f"PostgreSQL at {base} ({POSTGRES_URL_ENV}): {exc}") from exc
    schema = f"chaos_{uuid.uuid4().hex[:10]}"
    try:
        yield Target("postgres", _with_query(base, schema=schema, **POSTGRES_POOL))
    finally:
        with psycopg.connect(base, connect_timeout=5, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def shared_redis() -> Iterator[Target]:
    """The machine's Redis, under a key prefix of this scenario's own (deleted after)."""
    base = os.environ.get(REDIS_URL_ENV, SHARED_REDIS)
    try:
        with redis.Redis.from_url(base, socket_timeout=5) as client:
            client.ping()
    except redis.RedisError as exc:
        raise Unreachable(f"Redis at {base} ({REDIS_URL_ENV}): {exc}") from exc
    prefix = f"outlast-chaos-{uuid.uuid4().hex[:10]}"
    try:
        yield Target("redis", _with_query(base, prefix=prefix))
    finally:
        with redis.Redis.from_url(base, socket_timeout=5) as client:
            for key in list(client.scan_iter(match=f"{prefix}*", count=1000)):
                client.delete(key)


def _with_query(url: str, **options: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(options)}"


# -- S3 on moto ----------------------------------------------------------------------


@contextlib.contextmanager
def moto_s3(directory: Path) -> Iterator[Target]:
    """A moto S3 server in its own process on a free port, with the bucket."""
    import boto3

    port = free_port()
    log = directory / "moto.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed module
            [sys.executable, "-m", "chaos.moto_server", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    try:
        wait_until(lambda: _alive(process, log) and listening(port), f"moto on port {port}")
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=S3_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's fake credentials
        )
        client.create_bucket(Bucket=S3_BUCKET)
        query = urlencode({"endpoint_url": endpoint, "region": S3_REGION})
        yield Target(
            "s3",
            f"s3://{S3_BUCKET}/chaos-{uuid.uuid4().hex[:8]}?{query}",
            env=dict(S3_CREDENTIALS),
            poll_interval=1.0,
        )
    finally:
        _stop_child(process)


def _alive(process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise Unreachable(f"the server exited with {process.returncode}:\n{log.read_text()}")
    return True


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# -- throwaway PostgreSQL ------------------------------------------------------------


def postgres_binaries() -> Path:
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise Unreachable("no PostgreSQL server binaries (initdb, pg_ctl) are installed")
    return Path(found[-1]).parent


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        raise Unreachable("running as root without runuser: cannot start PostgreSQL")
    return [runuser, "-u", "postgres", "--", *command]


class ThrowawayPostgres:
    """A PostgreSQL of our own in ``directory``, on a port of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.binaries = postgres_binaries()
        self.restarts: list[tuple[float, float, str]] = []
        """(stopped at, started again at, how) of every restart."""

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        command = [str(self.binaries / "pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(  # noqa: S603 - installed binaries, fixed arguments
            _as_postgres(command), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise Unreachable(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}")

    def create(self) -> None:
        # The server runs as the postgres OS user, who must reach this directory
        # (and pass through its parent, a private temporary directory).
        self.directory.parent.chmod(0o711)
        self.directory.chmod(0o777)
        initdb = [str(self.binaries / "initdb"), "-D", str(self.data), "-U", "postgres"]
        done = subprocess.run(  # noqa: S603 - installed binaries, fixed arguments
            _as_postgres([*initdb, "--auth=trust", "--no-sync"]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise Unreachable(f"initdb failed: {done.stdout}{done.stderr}")
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory} -c fsync=on -c max_connections=200"
        )
        log = str(self.directory / "server.log")
        self._pg_ctl("-l", log, "-o", options, "-w", "-t", str(int(START_TIMEOUT)), "start")

    def stop(self, crash: bool) -> None:
        """Stop it: ``-m immediate`` (a crash: no checkpoint) or ``-m fast``."""
        self._pg_ctl("-m", "immediate" if crash else "fast", "-w", "stop")

    def restart(self, crash: bool, outage: float) -> None:
        stopped = time.time()
        self.stop(crash)
        time.sleep(outage)  # the outage under test, not a wait for a condition
        self.start()
        self.restarts.append((stopped, time.time(), "crash" if crash else "clean"))

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Unreachable, subprocess.TimeoutExpired):
                self.stop(crash=True)
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres(directory: Path) -> Iterator[Target]:
    server = ThrowawayPostgres(directory / "postgres")
    server.directory.mkdir()
    try:
        server.create()
        yield Target("postgres-restarts", _with_query(server.url, **POSTGRES_POOL), server=server)
    finally:
        server.destroy()


# -- throwaway Redis -----------------------------------------------------------------


class ThrowawayRedis:
    """A redis-server of our own, appendonly with ``appendfsync always``."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Unreachable("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.config = directory / "redis.conf"
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts: list[tuple[float, float, str]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def create(self) -> None:
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            'save ""',
            "appendonly yes",
            "appendfsync always",
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.start()

    def start(self) -> None:
        log = self.directory / "server.log"
        with log.open("ab") as sink:
            self.process = subprocess.Popen(  # noqa: S603 - the installed redis-server
                [self.binary, str(self.config)], stdout=sink, stderr=subprocess.STDOUT
            )
        process = self.process

        def up() -> bool:
            return _alive(process, log) and _answers_ping(self.port)

        wait_until(up, f"redis-server on port {self.port}")

    def stop(self, crash: bool) -> None:
        """SIGKILL (a crash) or SIGTERM the server this object started, by its pid."""
        process = self.process
        assert process is not None
        process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        process.wait(timeout=START_TIMEOUT)
        self.process = None

    def restart(self, crash: bool, outage: float) -> None:
        stopped = time.time()
        self.stop(crash)
        time.sleep(outage)  # the outage under test, not a wait for a condition
        self.start()
        self.restarts.append((stopped, time.time(), "crash" if crash else "clean"))

    def destroy(self) -> None:
        if self.process is not None:
            _stop_child(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


def _answers_ping(port: int) -> bool:
    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False  # still loading its append-only file, or not listening yet


@contextlib.contextmanager
def throwaway_redis(directory: Path) -> Iterator[Target]:
    server = ThrowawayRedis(directory / "redis")
    server.directory.mkdir()
    try:
        server.create()
        yield Target("redis-restarts", server.url, server=server)
    finally:
        server.destroy()
