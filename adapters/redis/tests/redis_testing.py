"""Test helpers: throwaway redis-server processes (a Cluster, a password, no
scripting), looking at the keys under a prefix, counting round trips, and
the damage the conformance suite asks for (done to the keys from outside
the store, as a failing disk or a careless operator would).

Started from the installed ``redis-server`` binary on free loopback ports in a
temporary directory, waited for by polling with a bounded timeout, and
terminated (by their own process ids) afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import redis

import outlast
from outlast import Message
from outlast.adapter import CheckpointerFactory
from outlast_redis import RedisStore

STARTUP_TIMEOUT = 30.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout}s waiting for {what}")
        time.sleep(0.05)


async def eventually(
    condition: Callable[[], Awaitable[bool]], what: str, within: float = STARTUP_TIMEOUT
) -> None:
    """Await ``condition`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


async def purged(store: RedisStore, expected: int, namespace: str = "default") -> bool:
    """Whether ``purge(0)`` removed ``expected`` runs. A run last written in
    the server's current millisecond is not yet older than 0 seconds: retry."""
    removed = await store.purge(0.0, namespace)
    assert removed in (0, expected), f"purge(0) removed {removed} runs, expected {expected}"
    return removed == expected


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def _redis_cli() -> str:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli is needed next to redis-server"
    return cli


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port(cluster: bool = False) -> int:
    """A free loopback port; for Cluster also its bus port (port + 10000)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if not cluster or (port + 10000 < 65536 and _port_free(port + 10000)):
            return port


def _answers(port: int, *command: str) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv of the installed redis-cli, no shell
            [_redis_cli(), "-h", "127.0.0.1", "-p", str(port), *command],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout


@contextmanager
def redis_server(directory: Path, *config_lines: str, cluster: bool = False) -> Iterator[int]:
    """Run one redis-server on a free port with extra config lines; yields the port."""
    binary = redis_server_binary()
    assert binary is not None
    port = free_port(cluster)
    home = directory / str(port)
    home.mkdir(parents=True)
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {home}",
        'save ""',
        "appendonly no",
        *(["cluster-enabled yes", "cluster-config-file nodes.conf"] if cluster else []),
        *config_lines,
    ]
    config = home / "redis.conf"
    config.write_text("\n".join(lines) + "\n")
    with (home / "server.log").open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - the installed redis-server, no shell
            [binary, str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:

        def up() -> bool:
            if process.poll() is not None:
                log_text = (home / "server.log").read_text()
                raise RuntimeError(f"redis-server on port {port} exited:\n{log_text}")
            return listening(port)

        wait_until(up, f"redis-server on port {port} to listen")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[list[int]]:
    """A Cluster of ``masters`` masters without replicas; yields their ports."""
    with ExitStack() as stack:
        ports = [stack.enter_context(redis_server(directory, cluster=True)) for _ in range(masters)]
        subprocess.run(  # noqa: S603 - fixed argv of the installed redis-cli, no shell
            [
                _redis_cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        wait_until(
            lambda: all("cluster_state:ok" in _answers(p, "cluster", "info") for p in ports),
            "the Redis Cluster to report cluster_state:ok on every node",
        )
        yield ports


def delete_keys(url: str, prefix: str, **options: object) -> None:
    """Delete every key under ``prefix`` (SCAN, not KEYS: the server may be shared)."""
    client = (
        redis.RedisCluster.from_url(url) if options.get("cluster") else redis.Redis.from_url(url)
    )
    with client:
        for key in list(client.scan_iter(match=f"{prefix}:*", count=500)):
            client.delete(key)


def keys_under(url: str, prefix: str) -> list[bytes]:
    with redis.Redis.from_url(url) as client:
        return sorted(client.scan_iter(match=f"{prefix}:*", count=500))


HISTORY = (Message.system("be brief"), Message.user("hi"), Message.assistant("hello"))


class CommandCounter:
    """Counts the round trips a store's client makes: one entry per command
    sent alone (its name), and one per pipeline (``"PIPELINE: A B"``, or
    ``"MULTI: A B"`` for a MULTI/EXEC one: its commands in order)."""

    def __init__(self, store: RedisStore) -> None:
        self.commands: list[str] = []
        client = store.client
        send = client.execute_command
        open_pipeline = client.pipeline

        async def counted(*args: Any, **options: Any) -> Any:
            self.commands.append(str(args[0]).upper())
            return await send(*args, **options)

        def pipeline(*args: Any, **options: Any) -> Any:
            pipe = open_pipeline(*args, **options)
            names: list[str] = []
            buffer, execute = pipe.execute_command, pipe.execute
            transaction = bool(getattr(pipe, "is_transaction", getattr(pipe, "_transaction", 0)))

            def buffered(*args: Any, **options: Any) -> Any:
                names.append(str(args[0]).upper())
                return buffer(*args, **options)

            async def executed(*args: Any, **options: Any) -> Any:
                kind = "MULTI" if transaction else "PIPELINE"
                self.commands.append(f"{kind}: {' '.join(names)}")
                names.clear()
                return await execute(*args, **options)

            pipe.execute_command = buffered
            pipe.execute = executed
            return pipe

        client.execute_command = counted  # type: ignore[method-assign]  # test spy
        client.pipeline = pipeline  # type: ignore[method-assign]  # test spy

    def take(self) -> list[str]:
        taken, self.commands = self.commands, []
        return taken


def redis_store(factory: CheckpointerFactory) -> RedisStore:
    """The RedisStore behind ``factory`` (``outlast.open`` returns a front)."""
    backend = factory.backend if isinstance(factory, outlast.Store) else factory
    assert isinstance(backend, RedisStore)
    return backend


def url_of(store: RedisStore) -> str:
    """The URL, with every option, that opens ``store``'s storage in another process."""
    config = store.config
    options: dict[str, Any] = {"prefix": config.prefix}
    if config.cluster:
        options["cluster"] = 1
    if config.db is not None:
        options["db"] = config.db
    if config.completed_ttl_ms:
        options["completed_ttl"] = config.completed_ttl_ms / 1000
    options.update(config.client_options)
    return f"{config.url}?{urlencode(options)}"


async def corrupt_record(store: RedisStore, run_id: str, namespace: str) -> None:
    """Damage the run's record: its input is no longer JSON (the transcript stays)."""
    meta = store.run_keys(namespace, run_id).meta
    assert await store.client.hset(meta, "input", "{not json") == 0, "the run has no record"


async def corrupt_message(store: RedisStore, run_id: str, namespace: str) -> None:
    """Overwrite, in place, the first stored message of the run's current segment."""
    await store.client.lset(store.run_keys(namespace, run_id).messages, 0, "{not json")
