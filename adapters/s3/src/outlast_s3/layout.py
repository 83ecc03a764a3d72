"""Object keys of the S3 store. The README's "Object layout" draws the same tree.

Namespaces and run ids are percent-encoded into one key component each, so
any text (slashes included) is a safe id and no namespace can reach into
another's keys. Segment and compacted keys carry ``<epoch>-<seq>`` zero-padded,
so S3's lexicographic listing order is the order they were written in.

Everything one begin creates outside the state object (its running marker,
its segments) sits under keys holding that begin's incarnation, so removing a
deleted incarnation's objects can never touch a run begun again under the id.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

_WIDTH = 10
_STATE = "state.json"
_DAMAGED = "damaged/"
_KINDS = ("seg", "compact")


def encode_id(text: str) -> str:
    # "." and ".." stay literal under quote(), and HTTP layers may collapse
    # them as path segments: escape them so every id is an ordinary name.
    if text in (".", ".."):
        return text.replace(".", "%2E")
    return quote(text, safe="")


def decode_id(text: str) -> str:
    return unquote(text)


@dataclass(frozen=True, slots=True, order=True)
class SegmentName:
    """Position of a segment (or fence, or compacted object) of a run."""

    epoch: int
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch:0{_WIDTH}d}-{self.seq:0{_WIDTH}d}.json"

    @classmethod
    def parse(cls, name: str) -> SegmentName | None:
        stem, dot, ext = name.partition(".")
        epoch, dash, seq = stem.partition("-")
        if not (dot and dash and ext == "json" and epoch.isdigit() and seq.isdigit()):
            return None
        return cls(int(epoch), int(seq))


@dataclass(frozen=True, slots=True)
class DataKey:
    """A listed key of a run's incarnation: a segment or fence (``segment``
    True) or a compacted object, at ``name``."""

    key: str
    incarnation: str
    segment: bool
    name: SegmentName


@dataclass(frozen=True, slots=True)
class Layout:
    """Key names under ``prefix`` (no leading or trailing slash; may be "")."""

    prefix: str

    def namespace(self, namespace: str) -> str:
        root = f"{self.prefix}/" if self.prefix else ""
        return f"{root}{encode_id(namespace)}/"

    def runs(self, namespace: str) -> str:
        """Folder holding one folder per run of ``namespace``."""
        return f"{self.namespace(namespace)}runs/"

    def run(self, namespace: str, run_id: str) -> str:
        """Folder of everything stored for one run."""
        return f"{self.runs(namespace)}{encode_id(run_id)}/"

    def state(self, namespace: str, run_id: str) -> str:
        return f"{self.run(namespace, run_id)}{_STATE}"

    def data(self, namespace: str, run_id: str, incarnation: str) -> str:
        """Folder of one incarnation's segments: a run deleted and begun again
        gets a new incarnation, so a zombie writer of the old one stays invisible."""
        return f"{self.run(namespace, run_id)}{incarnation}/"

    def segments(self, namespace: str, run_id: str, incarnation: str) -> str:
        return f"{self.data(namespace, run_id, incarnation)}seg/"

    def epoch_segments(self, namespace: str, run_id: str, incarnation: str, epoch: int) -> str:
        """The key prefix of one epoch's segment objects (for a listing)."""
        return f"{self.segments(namespace, run_id, incarnation)}{epoch:0{_WIDTH}d}-"

    def segment(self, namespace: str, run_id: str, incarnation: str, name: SegmentName) -> str:
        return f"{self.segments(namespace, run_id, incarnation)}{name}"

    def compacted(self, namespace: str, run_id: str, incarnation: str, name: SegmentName) -> str:
        return f"{self.data(namespace, run_id, incarnation)}compact/{name}"

    def running_index(self, namespace: str) -> str:
        """Folder of markers, one per possibly-running run of ``namespace``."""
        return f"{self.namespace(namespace)}index/running/"

    def running_marker(self, namespace: str, run_id: str, incarnation: str) -> str:
        """The marker of one incarnation (a begin writes its own, a delete
        removes only the deleted incarnation's)."""
        return f"{self.running_index(namespace)}{encode_id(run_id)}/{incarnation}"

    def legacy_running_marker(self, namespace: str, run_id: str) -> str:
        """The marker outlast-s3 0.1 wrote (one per run id): still read, and
        removed when its run ends or is deleted."""
        return f"{self.running_index(namespace)}{encode_id(run_id)}"

    def damaged(self, namespace: str, run_id: str, token: str) -> str:
        """Where a quarantine keeps the bytes of a state object that did not parse."""
        return f"{self.run(namespace, run_id)}{_DAMAGED}{token}"

    def data_key(self, namespace: str, run_id: str, key: str) -> DataKey | None:
        """What ``key`` (listed under :meth:`run`) is: a segment (or fence) or a
        compacted object of some incarnation; None for anything else."""
        head = self.run(namespace, run_id)
        if not key.startswith(head):
            return None
        parts = key[len(head) :].split("/")
        if len(parts) != 3 or not parts[0] or parts[1] not in _KINDS:
            return None
        name = SegmentName.parse(parts[2])
        if name is None:
            return None
        return DataKey(key, parts[0], parts[1] == "seg", name)

    def run_id_of_folder(self, namespace: str, folder: str) -> str | None:
        """The run id of a folder listed under :meth:`runs`."""
        head = self.runs(namespace)
        if not folder.startswith(head) or not folder.endswith("/"):
            return None
        return decode_id(folder[len(head) : -1])

    def run_id_of_marker(self, namespace: str, key: str) -> str | None:
        """The run id of a marker key (``RUN/INCARNATION``, or 0.1's ``RUN``)."""
        head = self.running_index(namespace)
        if not key.startswith(head):
            return None
        encoded = key[len(head) :].partition("/")[0]
        return decode_id(encoded) if encoded else None
