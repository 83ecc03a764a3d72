"""``RedisStore``: the CheckpointerFactory on Redis or Redis Cluster.

Every key of a namespace (its runs' keys and its two indexes) shares one
hash tag, so it lives on one Cluster slot (see keys.py). Each write of a run
is then one Lua script that checks the record and changes it together with
its index entries, atomically (see scripts.py):

* ``begin`` creates the run and its entries in both indexes;
* ``delete`` and ``purge`` remove a run and its entries;
* every write of a running run keeps its lease index score exact: the
  lease's expiry, or, once released (or sent its input), the time of its
  last write; ``wait`` scores it by its wait's timeout, or takes it out
  when the wait has none; ``complete``, ``fail`` and ``quarantine`` take it out.

So the indexes never disagree with the runs, whatever runs concurrently and
wherever a process dies: ``interrupted`` walks the lease index in order and
``list`` the run index, reading the runs they name. They only re-check each
record because it may change between reading the index and reading the run.

``claim_next`` is one script that walks the lease index from its oldest
claimable entry and claims the first run of the wanted kinds, so concurrent
workers never take one run twice nor queue behind one; ``wait_for_change``
listens (pub/sub, notifications.py) for the scripts' announcements.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from outlast.adapter import (
    DEFAULT_NAMESPACE,
    JSON,
    Claim,
    CorruptCheckpoint,
    NotWaiting,
    ResumeState,
    RunExists,
    RunFinished,
    RunNotFound,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    SaveCursor,
    StoredRun,
    UnknownFormat,
    codec,
    transitions,
)
from outlast_redis.checkpointer import RedisCheckpointer
from outlast_redis.config import RedisConfig, parse
from outlast_redis.connection import Client, RedisConnection, new_token
from outlast_redis.keys import NamespaceKeys, RunKeys, changes_channel
from outlast_redis.notifications import ChangeListener
from outlast_redis.records import check_version, decode_record, decode_state, fields_of, text

log = logging.getLogger("outlast.redis")

_BATCH = 100
"""Index entries read per round trip by interrupted, list and purge."""

SCAN_BUDGET = 200
"""Lease index entries one claim_next script walks at most before it answers
where it stopped (and claim_next calls it again from there)."""

INLINE_PROGRESS = 32
"""The most phases and messages a claim script answers itself. A script's
reply copies each entry through Lua (~4 us per KiB on the server, 45 ms for
10,000 messages of 1 KiB), LRANGE does not (~0.4 us per KiB): a claimed run
with more is read with LRANGE, one round trip more, cheaper from ~30 such
messages on."""


def lease_ms(lease: float) -> int:
    """A lease in whole milliseconds, never 0 (the scripts round the same way)."""
    return max(1, math.ceil(lease * 1000))


def _reason(exc: CorruptCheckpoint) -> str:
    """The error text a quarantined run keeps."""
    return f"{type(exc).__name__}: {exc}"


def _unjudged(reply: Any, run_id: str) -> CorruptCheckpoint:
    """The error for a script's ``{'version', v}`` or ``{'corrupt', what}`` answer."""
    if text(reply[0]) == "version":
        check_version(reply[1] or None, run_id)  # raises UnknownFormat, or says why not
        return CorruptCheckpoint(run_id, f"the format version {text(reply[1])!r} is not ours")
    return CorruptCheckpoint(run_id, f"the run's {text(reply[1])} does not parse")


def _not_waiting(run_id: str, namespace: str, status: str) -> CorruptCheckpoint | NotWaiting:
    """The error for a send to a run in ``status`` (SEND's ``{'not waiting', status}``)."""
    try:
        known = RunStatus(status)
    except ValueError:
        return CorruptCheckpoint(run_id, f"the run's status {status!r} does not parse")
    return NotWaiting(run_id, namespace, known.value)


class RedisStore:
    """A CheckpointerFactory on Redis; connects on first use."""

    inline_progress = INLINE_PROGRESS
    """The most entries of saved progress a claim answers inline (see INLINE_PROGRESS)."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.connection = RedisConnection(config)
        """The client and scripts, shared with every checkpointer of this store."""
        self.notifications = ChangeListener(self.connection, changes_channel(config.prefix))
        """The subscription ``wait_for_change`` listens on (opened on first use)."""
        self.where = config.redacted_url

    def __repr__(self) -> str:
        cluster = ", cluster" if self.config.cluster else ""
        return f"RedisStore({self.where!r}, prefix={self.config.prefix!r}{cluster})"

    @property
    def client(self) -> Client:
        """The redis-py client (created on first use; it connects lazily itself)."""
        return self.connection.client

    def namespace_keys(self, namespace: str) -> NamespaceKeys:
        return NamespaceKeys.of(self.config.prefix, namespace)

    def run_keys(self, namespace: str, run_id: str) -> RunKeys:
        return self.namespace_keys(namespace).run(run_id)

    async def begin(self, start: RunStart) -> RedisCheckpointer:
        keys, incarnation = await self._create(start, "begin")
        return RedisCheckpointer(
            self.connection, keys, start.namespace, 1, incarnation, SaveCursor()
        )

    async def submit(self, start: RunStart) -> None:
        await self._create(start, "submit")

    async def _create(self, start: RunStart, how: str) -> tuple[RunKeys, str]:
        """The CREATE script (transitions.begin or .submit): the run's keys and incarnation."""
        keys = self.run_keys(start.namespace, start.run_id)
        incarnation = transitions.new_incarnation()
        args: list[str | int] = [
            start.run_id,
            codec.FORMAT_VERSION,
            start.namespace,
            start.kind,
            codec.dumps(start.input),
            start.owner,
            repr(start.lease),
            incarnation,
            how,
        ]
        reply = await self.connection.run("create", keys.all(), args)
        if reply[0] == b"exists":
            raise RunExists(start.run_id, start.namespace)
        return keys, incarnation

    async def claim_next(
        self,
        kinds: Sequence[str],
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        """One CLAIM_NEXT script per call, as a rule; more only when it walked
        its budget of index entries, or met a run it could not judge."""
        if not kinds:
            return None
        index = self.namespace_keys(namespace)
        self.notifications.looked(index.tag)
        after: list[bytes | str] = ["", ""]  # (score, run id) of the last entry walked
        while True:
            token = new_token()
            fixed = [
                index.base,
                owner,
                repr(lease),
                token,
                codec.FORMAT_VERSION,
                SCAN_BUDGET,
                self.inline_progress,
            ]
            reply = await self.connection.run(
                "claim_next", [index.leases, index.claimed(token)], [*fixed, *after, *kinds]
            )
            outcome = text(reply[0])
            if outcome == "none":
                return None
            if outcome == "more":
                after = [reply[1], reply[2]]
                continue
            run_id = text(reply[1])
            after = [reply[2], reply[1]]
            if outcome == "judge":
                await self._set_aside(namespace, run_id, fields_of(reply[3]))
                continue
            before, meta, progress = reply[3:]
            keys = index.run(run_id)
            phases, messages = await self._progress(keys, progress)
            try:
                return self._claim_of(namespace, run_id, meta, phases, messages)
            except CorruptCheckpoint as exc:
                damage = exc
            # Its progress does not parse: hand the claim back and quarantine it.
            args = [run_id, fields_of(meta)["epoch"], _reason(damage), *before]
            if await self.connection.run("quarantine_claimed", keys.all(), args):
                log.error("quarantined run %r in namespace %r: %s", run_id, namespace, damage)

    async def _set_aside(self, namespace: str, run_id: str, fields: dict[str, bytes]) -> None:
        """A run claim_next could not judge: quarantined if it does not parse,
        left alone if it is of a newer format version."""
        try:
            decode_record(fields, run_id)
        except UnknownFormat as exc:
            log.debug("skipping run %r in claim_next(): %s", run_id, exc.detail)
        except CorruptCheckpoint as exc:
            if await self.quarantine(run_id, _reason(exc), namespace):
                log.error("quarantined run %r in namespace %r: %s", run_id, namespace, exc)

    async def _progress(self, keys: RunKeys, progress: Any) -> tuple[list[bytes], list[bytes]]:
        """A claimed run's phases and messages: as the claim script answered
        them, or, when there were more than ``inline_progress`` (it answered
        0), read with LRANGE in one more round trip. The claim fenced every
        other writer, so they are what the claim saw, unless its lease ran
        out meanwhile or the run was deleted: then the first write of its
        checkpointer raises LeaseLost."""
        if isinstance(progress, list):
            phases, messages = progress
            return phases, messages
        async with self.connection.translated():
            pipe = self.connection.transaction() or self.client.pipeline(transaction=False)
            async with pipe:
                pipe.lrange(keys.phases, 0, -1)
                pipe.lrange(keys.messages, 0, -1)
                phases, messages = await pipe.execute()
        return phases, messages

    def _claim_of(
        self, namespace: str, run_id: str, meta: Any, phases: Any, messages: Any
    ) -> Claim:
        """The Claim of what a claim script answered; CorruptCheckpoint when
        the record or the progress does not decode."""
        fields = fields_of(meta)
        record = decode_record(fields, run_id)
        state = decode_state(fields, phases, messages, run_id)
        keys = self.run_keys(namespace, run_id)
        cursor = SaveCursor(phases=len(state.phases), messages=len(state.history))
        checkpointer = RedisCheckpointer(
            self.connection, keys, namespace, record.epoch, record.incarnation, cursor
        )
        return Claim(checkpointer, ResumeState(state.history, state.phases), record)

    async def cancel(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> RunRecord:
        keys = self.run_keys(namespace, run_id)
        args = [run_id, codec.FORMAT_VERSION, transitions.CANCELLED, new_token()]
        reply = await self.connection.run("cancel", keys.all(), args)
        outcome = text(reply[0])
        if outcome == "absent":
            raise RunNotFound(run_id, namespace)
        if outcome == "finished":
            raise RunFinished(run_id, namespace, text(reply[1]))
        if outcome != "ok":
            raise _unjudged(reply, run_id)
        return decode_record(fields_of(reply[1]), run_id)

    async def send(
        self, run_id: str, delivery: JSON, namespace: str = DEFAULT_NAMESPACE
    ) -> RunRecord:
        """One SEND script: a waiting run becomes running with its lease
        released, scored and announced as a release is; of concurrent
        senders the first the server runs wins."""
        keys = self.run_keys(namespace, run_id)
        args = [run_id, codec.FORMAT_VERSION, codec.dumps(delivery), new_token()]
        reply = await self.connection.run("send", keys.all(), args)
        outcome = text(reply[0])
        if outcome == "absent":
            raise RunNotFound(run_id, namespace)
        if outcome == "not waiting":
            raise _not_waiting(run_id, namespace, text(reply[1]))
        if outcome != "ok":
            raise _unjudged(reply, run_id)
        return decode_record(fields_of(reply[1]), run_id)

    async def wait_for_change(self, namespace: str, timeout: float) -> bool:
        """True when a script announced that a run of ``namespace`` became
        claimable or finished (also since this task's last ``claim_next`` or
        ``load`` of it); False after ``timeout`` seconds (see
        notifications.py). Never raises for a broken subscription: waits
        are polls until it is back."""
        return await self.notifications.wait(self.namespace_keys(namespace).tag, timeout)

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        index = self.namespace_keys(namespace)
        found: list[RunRecord] = []
        after: list[bytes | str] = ["", ""]  # (score, run id) of the last entry read
        while len(found) < limit:
            count = min(_BATCH, limit - len(found))
            now_ms, entries = await self.connection.run(
                "candidates", [index.leases], [*after, count]
            )
            candidates = list(zip(entries[0::2], entries[1::2], strict=True))
            if not candidates:
                break
            run_ids = [text(member) for member, _ in candidates]
            for (member, score), run_id, fields in zip(
                candidates, run_ids, await self._records(index, run_ids), strict=True
            ):
                after = [score, member]
                record = await self._recoverable(namespace, run_id, fields, now_ms)
                if record is not None:
                    found.append(record)
                    if len(found) == limit:
                        break
            if len(candidates) < count:
                break
        # Already in index order; a record that changed after the index was
        # read (released again, say) is placed by what it says now.
        return sorted(found, key=transitions.interrupted_order)

    async def _recoverable(
        self, namespace: str, run_id: str, fields: dict[str, bytes], now_ms: int
    ) -> RunRecord | None:
        """The record if the run is interrupted and healthy; quarantines a damaged one."""
        if not fields:
            return None  # deleted since the index was read
        try:
            record = decode_record(fields, run_id)
        except UnknownFormat as exc:
            log.warning("skipping run %r in interrupted(): %s", run_id, exc.detail)
            return None
        except CorruptCheckpoint as exc:
            if await self.quarantine(run_id, _reason(exc), namespace):
                log.error("quarantined run %r in namespace %r: %s", run_id, namespace, exc)
            return None
        # Claimed, renewed or finished since the index was read: not interrupted now.
        return record if transitions.is_interrupted(record, now_ms / 1000) else None

    async def _records(
        self, index: NamespaceKeys, run_ids: Sequence[str]
    ) -> list[dict[str, bytes]]:
        """The meta hashes of ``run_ids`` in one pipelined round trip (one slot, one node)."""
        async with self.connection.translated(), self.client.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hgetall(index.run(run_id).meta)
            replies = await pipe.execute()
        return [fields_of(reply) for reply in replies]

    async def _run_ids(self, index: NamespaceKeys, low: str) -> list[str]:
        """The next run ids of the namespace's run index, from ``low`` on (ZRANGEBYLEX)."""
        async with self.connection.translated():
            members = await self.client.zrangebylex(index.runs, low, "+", start=0, num=_BATCH)
        return [text(member) for member in members]

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        keys = self.run_keys(namespace, run_id)
        args = [run_id, owner, repr(lease), new_token(), codec.FORMAT_VERSION, self.inline_progress]
        reply = await self.connection.run("claim", keys.all(), args)
        outcome = text(reply[0])
        if outcome == "none":
            return None
        if outcome in ("version", "corrupt"):
            raise _unjudged(reply, run_id)
        before, meta, progress = reply[1:]
        phases, messages = await self._progress(keys, progress)
        try:
            return self._claim_of(namespace, run_id, meta, phases, messages)
        except CorruptCheckpoint:
            if outcome == "ok":  # not a replayed claim: hand the run back untouched
                args = [run_id, fields_of(meta)["epoch"], *before]
                await self.connection.run("unclaim", keys.all(), args)
            raise

    async def quarantine(
        self, run_id: str, reason: str, namespace: str = DEFAULT_NAMESPACE
    ) -> bool:
        keys = self.run_keys(namespace, run_id)
        args = [run_id, reason, codec.FORMAT_VERSION, namespace]
        return bool(await self.connection.run("quarantine", keys.all(), args))

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        self.notifications.looked(self.namespace_keys(namespace).tag)
        keys = self.run_keys(namespace, run_id)
        async with self.connection.translated():
            await self.connection.scripts()  # a store's first call checks the server
            pipe = self.connection.transaction()
            if pipe is None:
                meta, phases, messages = await self.connection.run("load", keys.all(), [run_id])
            else:
                # One MULTI/EXEC: a consistent snapshot, the lists sent as they are stored.
                async with pipe:
                    pipe.hgetall(keys.meta)
                    pipe.lrange(keys.phases, 0, -1)
                    pipe.lrange(keys.messages, 0, -1)
                    meta, phases, messages = await pipe.execute()
        fields = fields_of(meta)
        if not fields:
            return None
        record = decode_record(fields, run_id)
        return StoredRun(record, decode_state(fields, phases, messages, run_id))

    async def list(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        status: RunStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        index = self.namespace_keys(namespace)
        records: list[RunRecord] = []
        low = f"({cursor}" if cursor is not None else "-"
        # One record more than a page tells whether another page follows.
        while len(records) <= limit:
            run_ids = await self._run_ids(index, low)
            if not run_ids:
                break
            for run_id, fields in zip(run_ids, await self._records(index, run_ids), strict=True):
                if not fields:  # a completed record that completed_ttl expired
                    await self.connection.run("forget", index.run(run_id).all(), [run_id])
                    continue
                try:
                    record = decode_record(fields, run_id)
                except CorruptCheckpoint as exc:
                    log.warning("skipping run %r in list(): %s", run_id, exc.detail)
                    continue
                if status is None or record.status is status:
                    records.append(record)
            if len(run_ids) < _BATCH:
                break
            low = f"({run_ids[-1]}"
        page = tuple(records[:limit])
        more = len(records) > limit
        return RunPage(page, page[-1].run_id if more and page else None)

    async def delete(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        keys = self.run_keys(namespace, run_id)
        return bool(await self.connection.run("delete", keys.all(), [run_id]))

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        index = self.namespace_keys(namespace)
        older_than_ms = max(0, math.floor(older_than * 1000))
        deleted = 0
        low = "-"
        while run_ids := await self._run_ids(index, low):
            keys = [index.runs, index.leases]
            for run_id in run_ids:
                keys += index.run(run_id).own()
            deleted += int(await self.connection.run("purge", keys, [older_than_ms, *run_ids]))
            if len(run_ids) < _BATCH:
                break
            low = f"({run_ids[-1]}"
        return deleted

    async def close(self) -> None:
        """Close the connections; the store is unusable afterwards."""
        await self.notifications.close()
        await self.connection.close()


def open_redis(url: str, **options: Any) -> RedisStore:
    """A store for ``url`` (redis://, rediss://, unix://); connects on first use.

    Raises ConfigurationError for an unknown or malformed option.
    """
    return RedisStore(parse(url, options))
