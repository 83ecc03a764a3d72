"""A throwaway PostgreSQL that checks passwords (scram-sha-256), for the
wrong-credentials tests: the machine's own server trusts loopback logins, so
a wrong password can only be refused by a server of our own.

Started from the installed server binaries (``initdb``, ``pg_ctl``) in a temp
directory on a free loopback port, as the ``postgres`` OS user when the tests
run as root (PostgreSQL refuses to run as root). Stopped afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from postgres_support import unused_port

PASSWORD = "right-pw-for-tests"  # noqa: S105 - a fake password of a throwaway server


def server_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when not installed."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root without runuser: cannot start PostgreSQL")
    return [runuser, "-u", "postgres", "--", *command]


@contextmanager
def password_server() -> Iterator[str]:
    """Run a scram-sha-256 PostgreSQL; yields its URL without a password."""
    binaries = server_binaries()
    assert binaries is not None
    # Not pytest's tmp_path: its parent is private to root, and the server runs
    # as the postgres OS user, who must reach this directory.
    directory = Path(tempfile.mkdtemp(prefix="outlast-pg-"))
    directory.chmod(0o777)
    try:
        with _running(binaries, directory) as url:
            yield url
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _running(binaries: Path, directory: Path) -> Iterator[str]:
    data = directory / "data"
    password_file = directory / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o644)
    port = unused_port()
    subprocess.run(  # noqa: S603 - installed binaries, fixed arguments
        _as_server_user(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={directory}"
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(directory / "log")]
    subprocess.run(  # noqa: S603 - installed binaries, fixed arguments
        _as_server_user([*pg_ctl, "-o", options, "-w", "-t", "60", "start"]),
        check=True,
        capture_output=True,
        timeout=90,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(  # noqa: S603 - installed binaries, fixed arguments
            _as_server_user([*pg_ctl, "-m", "immediate", "-w", "stop"]),
            check=False,
            capture_output=True,
            timeout=60,
        )
