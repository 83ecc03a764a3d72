"""Fixtures of the Redis tests: the shared server, a throwaway Cluster, key cleanup.

The shared server comes from ``OUTLAST_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``). Every test session writes under its own key
prefix and deletes those keys afterwards. When the server cannot be reached
(or no ``redis-server`` binary exists for the Cluster), the tests skip saying
why, or fail when ``OUTLAST_TEST_STRICT=1``.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_testing import (
    delete_keys,
    free_port,
    listening,
    redis_cluster,
    redis_server,
    redis_server_binary,
    wait_until,
)

from outlast.adapter import redact
from outlast_conformance.services import service_url, unavailable

REDIS_URL_ENV = "OUTLAST_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = service_url(REDIS_URL_ENV, DEFAULT_REDIS_URL)
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=5) as client:
            client.ping()
    except redis.RedisError as exc:
        unavailable(redact(f"Redis at {url} is not reachable ({exc}); set {REDIS_URL_ENV}"))
    return url


@pytest.fixture(scope="session")
def session_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test session uses; its keys are deleted afterwards."""
    prefix = f"outlast-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_keys(redis_url, prefix)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone (for tests that inspect every key)."""
    prefix = f"outlast-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_keys(redis_url, prefix)


def _servers_dir(factory: pytest.TempPathFactory, name: str) -> Path:
    if redis_server_binary() is None:
        unavailable(f"no redis-server binary on PATH: cannot start {name}")
    return factory.mktemp(name.replace(" ", "-"))


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master Redis Cluster of our own, on free loopback ports."""
    with redis_cluster(_servers_dir(tmp_path_factory, "a Redis Cluster")) as ports:
        yield f"redis://127.0.0.1:{ports[0]}"


@pytest.fixture(scope="session")
def scratch_server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server of our own, for tests that kill its clients' connections."""
    with redis_server(_servers_dir(tmp_path_factory, "a scratch redis-server")) as port:
        yield port


@pytest.fixture(scope="session")
def password_server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server that requires the password ``s3cret-pw``."""
    directory = _servers_dir(tmp_path_factory, "a password-protected redis-server")
    with redis_server(directory, "requirepass s3cret-pw") as port:
        yield port


@pytest.fixture(scope="session")
def aof_server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server that persists with an append-only file (appendfsync everysec)."""
    directory = _servers_dir(tmp_path_factory, "a redis-server with appendonly yes")
    with redis_server(directory, "appendonly yes", "appendfsync everysec") as port:
        yield port


@pytest.fixture(scope="session")
def rdb_server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server that persists with RDB snapshots only (no append-only file)."""
    directory = _servers_dir(tmp_path_factory, "a redis-server with RDB save points")
    with redis_server(directory, "save 3600 1 300 100") as port:
        yield port


@pytest.fixture(scope="session")
def min_replicas_server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server that refuses writes until a replica it has none of is in sync."""
    directory = _servers_dir(tmp_path_factory, "a redis-server with min-replicas-to-write")
    with redis_server(directory, "min-replicas-to-write 1") as port:
        yield port


@pytest.fixture(scope="session")
def secretive_server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server without persistence that forbids CONFIG (renamed away), as
    managed services do: whether it persists cannot be told."""
    directory = _servers_dir(tmp_path_factory, "a redis-server without CONFIG")
    with redis_server(directory, 'rename-command CONFIG ""') as port:
        yield port


@pytest.fixture(scope="session")
def scriptless_server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server whose scripting commands are disabled (renamed away)."""
    directory = _servers_dir(tmp_path_factory, "a redis-server without scripting")
    renamed = [f'rename-command {name} ""' for name in ("EVAL", "EVALSHA", "SCRIPT", "FCALL")]
    with redis_server(directory, *renamed) as port:
        yield port


@pytest.fixture(scope="session")
def unix_socket_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that also listens on a unix socket; yields its unix:// URL."""
    directory = _servers_dir(tmp_path_factory, "a redis-server on a unix socket")
    socket = directory / "redis.sock"
    with redis_server(directory, f"unixsocket {socket}", "unixsocketperm 700"):
        yield f"unix://{socket}?db=0"


@pytest.fixture(scope="session")
def tls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that also serves TLS with a fresh self-signed certificate;
    yields a rediss:// URL that trusts exactly that certificate."""
    directory = _servers_dir(tmp_path_factory, "a redis-server with TLS")
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("no openssl binary on PATH: cannot make a certificate for the TLS test")
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(  # noqa: S603 - the installed openssl, fixed arguments
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    lines = [
        f"tls-port {tls_port}",
        f"tls-cert-file {cert}",
        f"tls-key-file {key}",
        f"tls-ca-cert-file {cert}",
        "tls-auth-clients no",
    ]
    with redis_server(directory, *lines):
        wait_until(lambda: listening(tls_port), f"redis-server TLS on port {tls_port}")
        yield f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"
