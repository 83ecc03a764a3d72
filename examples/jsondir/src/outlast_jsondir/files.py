"""The file-system primitives the store is built on: a lock, durable writes, names.

Every store operation runs under one ``flock`` on ``<root>/.lock`` (shared for
reads, exclusive for writes). flock works between processes and between
threads of one process (each operation opens the lock file itself), so a
check of the stored record and the write it guards are one atomic step for
every worker on this machine. flock is advisory and local: the directory must
not be shared over NFS.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

LOCK_NAME = ".lock"
MAX_FILE_NAME = 255
"""Bytes in one file name on the common local file systems (ext4, XFS, APFS)."""


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

    Durable once this returns: the data is fsynced before the rename, and the
    folder after it (a rename lives in the folder, not in the file).
    """
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    sync_folder(path.parent)


def make_folders(path: Path) -> None:
    """``mkdir -p``, durably: each new folder is fsynced into its parent."""
    if path.is_dir():
        return
    make_folders(path.parent)
    path.mkdir()
    sync_folder(path.parent)


def sync_folder(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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


def encode_name(name: str, what: str) -> str:
    """A file name for any namespace or run id (``/``, ``..`` and all).

    The ``_`` prefix keeps ``.`` and ``..`` (and ``.lock``) out of the way.
    Raises ValueError for a name whose file name would be too long: a valid
    run id may be 255 UTF-8 bytes, and escaping makes it longer.
    """
    file_name = "_" + quote(name, safe="")
    if len(file_name.encode()) > MAX_FILE_NAME:
        raise ValueError(
            f"{what} {name!r:.80} is too long for outlast-jsondir: escaped as a file name it "
            f"takes {len(file_name.encode())} bytes, over the file system's {MAX_FILE_NAME}; "
            "use a shorter one (or a store without this limit)"
        )
    return file_name


def decode_name(file_name: str) -> str:
    return unquote(file_name.removeprefix("_"))
