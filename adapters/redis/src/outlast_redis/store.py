"""``RedisStore``: the CheckpointerFactory on Redis or Redis Cluster.

Each run lives in three keys on one slot (see keys.py); each write of a run is
one Lua script there, so the epoch check and the write are one atomic step.

The per-namespace indexes live on the namespace's own slot, which on Cluster
is usually another node: a script cannot change a run and its index entries
atomically. So the indexes are *hints* kept by a second, idempotent step, and
every reader checks them against the run itself:

* ``begin`` reserves the index entries first (lease score 0), creates the run,
  then records the true lease expiry. A crash in between leaves a run that is
  indexed (found and healed by ``interrupted``) or an entry without a run
  (dropped by the next reader), never a run nobody can find.
* A lease's index score is never later than the true expiry: ``renew`` and
  ``claim`` only raise it after the run's script succeeded, ``release`` lowers
  it to 0. ``interrupted`` takes the candidates whose score has passed,
  re-reads each run, returns the truly interrupted ones, raises stale scores
  and drops entries of finished or deleted runs.
* ``claim`` itself decides on the run's own keys, by the run's server clock:
  a stale index entry can make a run a candidate, never a wrong winner.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from outlast import codec
from outlast.delta import SaveCursor
from outlast.errors import CorruptCheckpoint, RunExists
from outlast.ports import (
    DEFAULT_NAMESPACE,
    Claim,
    ResumeState,
    RunPage,
    RunRecord,
    RunStart,
    RunStatus,
    StoredRun,
    validate_lease,
    validate_start,
)
from outlast_redis import scripts as lua
from outlast_redis.checkpointer import RedisCheckpointer
from outlast_redis.config import RedisConfig, parse
from outlast_redis.errors import translated
from outlast_redis.keys import NamespaceKeys, RunKeys
from outlast_redis.records import decode_lease, decode_record, decode_state, fields_of

log = logging.getLogger("outlast.redis")

_BATCH = 100
"""Index entries read per round trip by interrupted, list and purge."""

Client = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class Scripts:
    """Every script, registered with one client (loaded on first use, called by SHA)."""

    begin: AsyncScript
    save: AsyncScript
    complete: AsyncScript
    fail: AsyncScript
    release: AsyncScript
    renew: AsyncScript
    claim: AsyncScript
    unclaim: AsyncScript
    load: AsyncScript
    purge: AsyncScript
    index_reserve: AsyncScript
    index_confirm: AsyncScript
    index_heal: AsyncScript
    index_forget: AsyncScript
    index_candidates: AsyncScript

    def all(self) -> list[AsyncScript]:
        return [getattr(self, name) for name in self.__slots__]

    @classmethod
    def register(cls, client: Client) -> Scripts:
        sources = {
            "begin": lua.BEGIN,
            "save": lua.SAVE,
            "complete": lua.COMPLETE,
            "fail": lua.FAIL,
            "release": lua.RELEASE,
            "renew": lua.RENEW,
            "claim": lua.CLAIM,
            "unclaim": lua.UNCLAIM,
            "load": lua.LOAD,
            "purge": lua.PURGE,
            "index_reserve": lua.INDEX_RESERVE,
            "index_confirm": lua.INDEX_CONFIRM,
            "index_heal": lua.INDEX_HEAL,
            "index_forget": lua.INDEX_FORGET,
            "index_candidates": lua.INDEX_CANDIDATES,
        }
        return cls(**{name: client.register_script(text) for name, text in sources.items()})


def _text(member: bytes | str) -> str:
    return member.decode() if isinstance(member, bytes) else member


def lease_ms(lease: float) -> int:
    """A lease in whole milliseconds, never 0."""
    return max(1, math.ceil(lease * 1000))


class RedisStore:
    """A CheckpointerFactory on Redis; connects on first use."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self._client: Client | None = None
        self._scripts: Scripts | None = None
        self._loading = asyncio.Lock()
        self.where = config.redacted_url

    def __repr__(self) -> str:
        cluster = ", cluster" if self.config.cluster else ""
        return f"RedisStore({self.where!r}, prefix={self.config.prefix!r}{cluster})"

    @property
    def client(self) -> Client:
        """The redis-py client (created on first use; it connects lazily itself)."""
        if self._client is None:
            options: dict[str, Any] = {"decode_responses": False, **self.config.client_options}
            if self.config.cluster:
                self._client = RedisCluster.from_url(self.config.url, **options)
            else:
                if self.config.db is not None:
                    options["db"] = self.config.db
                self._client = Redis.from_url(self.config.url, **options)
        return self._client

    async def ready(self) -> Scripts:
        """The scripts, loaded into the server(s) before their first use.

        Loading them up front (once per store) matters on Cluster: redis-py's
        NOSCRIPT fallback is not safe when many calls hit it at once on a
        fresh cluster client (it can run a script twice or drop connections
        under a command). Later NOSCRIPTs (a restart, SCRIPT FLUSH) still
        reload through the fallback, and every script is safe to repeat.
        """
        if self._scripts is None:
            async with self._loading:
                if self._scripts is None:
                    registered = Scripts.register(self.client)
                    async with translated(self.where):
                        await self._load(registered)
                    self._scripts = registered
        return self._scripts

    async def _load(self, registered: Scripts) -> None:
        client = self.client
        if isinstance(client, RedisCluster):
            # SCRIPT LOAD goes to every primary; one script at a time.
            for script in registered.all():
                await client.script_load(script.script)
            return
        async with client.pipeline(transaction=False) as pipe:
            for script in registered.all():
                pipe.script_load(script.script)
            await pipe.execute()

    def run_keys(self, namespace: str, run_id: str) -> RunKeys:
        return RunKeys.of(self.config.prefix, namespace, run_id)

    def namespace_keys(self, namespace: str) -> NamespaceKeys:
        return NamespaceKeys.of(self.config.prefix, namespace)

    async def begin(self, start: RunStart) -> RedisCheckpointer:
        validate_start(start)
        run_keys = self.run_keys(start.namespace, start.run_id)
        index = self.namespace_keys(start.namespace).all()
        args: list[str | int] = [
            codec.FORMAT_VERSION,
            start.run_id,
            start.namespace,
            start.kind,
            codec.dumps(start.input),
            start.owner,
            lease_ms(start.lease),
            uuid.uuid4().hex,
        ]
        async with translated(self.where):
            scripts = await self.ready()
            await scripts.index_reserve(keys=index, args=[start.run_id])
            reply = await scripts.begin(keys=run_keys.all(), args=args)
            if reply[0] == b"exists":
                raise RunExists(start.run_id, start.namespace)
            await scripts.index_confirm(keys=index, args=[start.run_id, int(reply[1])])
        return RedisCheckpointer(self, start.namespace, start.run_id, 1, SaveCursor())

    async def interrupted(
        self, namespace: str = DEFAULT_NAMESPACE, limit: int = 100
    ) -> list[RunRecord]:
        index = self.namespace_keys(namespace)
        found: list[RunRecord] = []
        offset = 0
        async with translated(self.where):
            scripts = await self.ready()
            while len(found) < limit:
                now_ms, entries = await scripts.index_candidates(
                    keys=index.all(), args=[offset, _BATCH]
                )
                candidates = [
                    (member.decode(), float(score))
                    for member, score in zip(entries[0::2], entries[1::2], strict=True)
                ]
                if not candidates:
                    break
                records = await self._hashes(namespace, [run_id for run_id, _ in candidates])
                stay = 0
                for (run_id, score), fields in zip(candidates, records, strict=True):
                    if await self._judge(index, run_id, score, fields, now_ms, found):
                        stay += 1
                offset += stay
                if len(candidates) < _BATCH:
                    break
        found.sort(key=lambda record: (record.lease_expires_at or 0.0, record.run_id))
        return found[:limit]

    async def _judge(
        self,
        index: NamespaceKeys,
        run_id: str,
        score: float,
        fields: dict[str, bytes],
        now_ms: int,
        found: list[RunRecord],
    ) -> bool:
        """Check one candidate against its run; heal its index entry.

        Returns True when the entry stays among the candidates.
        """
        scripts = await self.ready()
        if not fields:
            await scripts.index_forget(keys=index.all(), args=[run_id])
            return False
        try:
            record = decode_record(fields, run_id)
            expires = decode_lease(fields, run_id)
        except CorruptCheckpoint as exc:
            log.warning("skipping run %r in interrupted(): %s", run_id, exc.detail)
            return True
        if record.status is not RunStatus.RUNNING:
            await self.client.zrem(index.leases, run_id)
            return False
        if expires is None or expires <= now_ms:
            found.append(record)
            return True
        healed = await scripts.index_heal(keys=index.all(), args=[run_id, score, expires])
        return not healed

    async def _hashes(self, namespace: str, run_ids: Sequence[str]) -> list[dict[str, bytes]]:
        """The meta hashes of ``run_ids`` in one pipelined round trip (per node)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hgetall(self.run_keys(namespace, run_id).meta)
            replies = await pipe.execute()
        return [fields_of(reply) for reply in replies]

    async def claim(
        self, run_id: str, *, owner: str, lease: float, namespace: str = DEFAULT_NAMESPACE
    ) -> Claim | None:
        validate_lease(lease)
        run_keys = self.run_keys(namespace, run_id)
        async with translated(self.where):
            scripts = await self.ready()
            reply = await scripts.claim(
                keys=run_keys.all(), args=[owner, lease_ms(lease), uuid.uuid4().hex]
            )
            if reply[0] == b"none":
                return None
            if reply[0] == b"corrupt":
                raise CorruptCheckpoint(run_id, f"the run's {reply[1].decode()} does not parse")
            before, meta, phases, messages = reply[1:]
            fields = fields_of(meta)
            epoch = int(fields_of(meta).get("epoch", b"0"))
            try:
                record = decode_record(fields, run_id)
                state = decode_state(fields, phases, messages, run_id)
                expires = decode_lease(fields, run_id)
            except CorruptCheckpoint:
                if reply[0] != b"ok":  # a replayed claim: the first answer undid it
                    raise
                # Hand the run back untouched, as if never claimed: nobody
                # holds this epoch, and the next claimer reports the same.
                await scripts.unclaim(keys=run_keys.all(), args=[epoch, *before])
                raise
            index = self.namespace_keys(namespace)
            await self.client.zadd(index.leases, {run_id: expires or 0}, gt=True)
        cursor = SaveCursor(phases=len(state.phases), messages=len(state.history))
        checkpointer = RedisCheckpointer(self, namespace, run_id, epoch, cursor)
        return Claim(checkpointer, ResumeState(state.history, state.phases), record)

    async def load(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> StoredRun | None:
        async with translated(self.where):
            scripts = await self.ready()
            meta, phases, messages = await scripts.load(keys=self.run_keys(namespace, run_id).all())
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
        if limit <= 0:
            return RunPage(())
        index = self.namespace_keys(namespace)
        records: list[RunRecord] = []
        low = f"({cursor}" if cursor is not None else "-"
        async with translated(self.where):
            scripts = await self.ready()
            while len(records) <= limit:
                members = await self.client.zrangebylex(index.runs, low, "+", start=0, num=_BATCH)
                run_ids = [_text(member) for member in members]
                if not run_ids:
                    break
                for run_id, fields in zip(
                    run_ids, await self._hashes(namespace, run_ids), strict=True
                ):
                    if not fields:  # finished with a TTL, or a begin that died
                        await scripts.index_forget(keys=index.all(), args=[run_id])
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
        index = self.namespace_keys(namespace)
        async with translated(self.where):
            scripts = await self.ready()
            removed: int = await self.client.delete(*self.run_keys(namespace, run_id).all())
            await scripts.index_forget(keys=index.all(), args=[run_id])
        return removed > 0

    async def purge(self, older_than: float, namespace: str = DEFAULT_NAMESPACE) -> int:
        index = self.namespace_keys(namespace)
        older_than_ms = max(0, math.floor(older_than * 1000))
        deleted = 0
        low = "-"
        async with translated(self.where):
            scripts = await self.ready()
            while True:
                members = await self.client.zrangebylex(index.runs, low, "+", start=0, num=_BATCH)
                run_ids = [_text(member) for member in members]
                if not run_ids:
                    break
                outcomes = await asyncio.gather(
                    *(
                        scripts.purge(
                            keys=self.run_keys(namespace, run_id).all(), args=[older_than_ms]
                        )
                        for run_id in run_ids
                    )
                )
                for run_id, outcome in zip(run_ids, outcomes, strict=True):
                    if outcome[0] in (b"deleted", b"gone"):
                        deleted += outcome[0] == b"deleted"
                        await scripts.index_forget(keys=index.all(), args=[run_id])
                if len(run_ids) < _BATCH:
                    break
                low = f"({run_ids[-1]}"
        return deleted

    async def close(self) -> None:
        """Close the connections; the store is unusable afterwards."""
        if self._client is not None:
            client, self._client, self._scripts = self._client, None, None
            await client.aclose()

    async def corrupt(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Damage a run's saved transcript (for the conformance suite's corrupt-record tests)."""
        async with translated(self.where):
            await self.client.rpush(self.run_keys(namespace, run_id).messages, "{not json")


def open_redis(url: str, **options: Any) -> RedisStore:
    """A store for ``url`` (redis://, rediss://, unix://); connects on first use.

    Raises ConfigurationError for an unknown or malformed option.
    """
    return RedisStore(parse(url, options))
