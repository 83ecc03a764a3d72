"""The file-system primitives the store is built on: a lock, atomic writes.

Every store operation runs under one ``flock`` on ``<root>/.lock`` (shared for
reads, exclusive for writes). flock works between processes and between
threads of one process (each operation opens the lock file itself), so an
epoch check and the write it guards are one atomic step for every worker on
this machine. flock is advisory and local: the directory must not be shared
over NFS.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

LOCK_NAME = ".lock"


@contextlib.contextmanager
def locked(root: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the store-wide lock for the duration of the block."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_NAME, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new file, never half.

    The data is fsynced before the rename, so it is durable once this returns.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def append_at(path: Path, offset: int, data: bytes) -> int:
    """Write ``data`` at byte ``offset`` of ``path``, dropping anything after it.

    Bytes past ``offset`` are leftovers of a save that crashed before its
    record was updated: never committed, so overwritten. Returns the new size.
    """
    with open(path, "r+b" if path.exists() else "w+b") as handle:
        handle.truncate(offset)
        handle.seek(offset)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        return offset + len(data)


def read_prefix(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of ``path`` (empty when it does not exist)."""
    if size == 0 or not path.exists():
        return b""
    with open(path, "rb") as handle:
        return handle.read(size)


def encode_name(name: str) -> str:
    """A file name for any namespace or run id (``/``, ``..`` and all)."""
    return "_" + quote(name, safe="")


def decode_name(file_name: str) -> str:
    return unquote(file_name.removeprefix("_"))
