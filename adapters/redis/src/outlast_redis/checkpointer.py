"""``RedisCheckpointer``: one run's writes, each one script fenced by the epoch.

Every method is one script on the run's slot that checks (epoch is mine AND
status is running) and writes in the same atomic step, or writes nothing and
answers why. ``renew``, ``release``, ``complete`` and ``fail`` then adjust the
namespace's lease index in a second step (see store.py for why that is safe).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from outlast import codec
from outlast.delta import SaveCursor
from outlast.errors import CheckpointStateError, LeaseLost
from outlast.messages import JSON
from outlast.ports import CheckpointState
from outlast_redis.errors import translated

if TYPE_CHECKING:
    from outlast_redis.store import RedisStore


def _token() -> str:
    """Marks one call, so its retry by redis-py is recognised as the same write."""
    return uuid.uuid4().hex


def raise_unless_ok(reply: Any, run_id: str, epoch: int) -> Any:
    """``reply`` when the script wrote; else the outlast error saying why not."""
    code = reply[0].decode()
    if code == "ok":
        return reply
    if code == "state":
        what, stored = reply[1].decode(), int(reply[2])
        raise CheckpointStateError(
            f"run {run_id!r}: the save does not extend what is stored ({stored} {what} "
            "stored); history only grows by appending and phases only grow"
        )
    if code == "lost":
        raise LeaseLost(run_id, epoch)
    if code == "gone":
        raise LeaseLost(run_id, epoch, "the run was deleted")
    raise LeaseLost(run_id, epoch, f"the run is {code}")


class RedisCheckpointer:
    """The durable record of one run at one epoch."""

    def __init__(
        self, store: RedisStore, namespace: str, run_id: str, epoch: int, cursor: SaveCursor
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._run_id = run_id
        self._epoch = epoch
        self._cursor = cursor
        self._keys = store.run_keys(namespace, run_id).all()
        self._leases = store.namespace_keys(namespace).leases

    def __repr__(self) -> str:
        return f"RedisCheckpointer(run_id={self._run_id!r}, epoch={self._epoch})"

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def epoch(self) -> int:
        return self._epoch

    async def save(self, state: CheckpointState) -> None:
        """One EVALSHA: the delta's phases and messages, appended if the epoch is mine."""
        delta = self._cursor.delta(state)
        args: list[str | int] = [
            self._epoch,
            delta.first_phase,
            delta.segment,
            delta.first_message,
            len(delta.phases),
            *(codec.encode_phase(phase) for phase in delta.phases),
            *(codec.encode_message(message) for message in delta.messages),
        ]
        await self._write("save", args)
        self._cursor = delta.after

    async def complete(self, result: JSON) -> None:
        ttl_ms = self._store.config.completed_ttl_ms
        await self._write("complete", [self._epoch, codec.dumps(result), ttl_ms, _token()])
        async with translated(self._store.where):
            await self._store.client.zrem(self._leases, self._run_id)

    async def fail(self, error: str) -> None:
        await self._write("fail", [self._epoch, error, _token()])
        async with translated(self._store.where):
            await self._store.client.zrem(self._leases, self._run_id)

    async def release(self) -> None:
        await self._write("release", [self._epoch, _token()])
        async with translated(self._store.where):
            await self._store.client.zadd(self._leases, {self._run_id: 0})

    async def renew(self) -> None:
        reply = await self._write("renew", [self._epoch, _token()])
        async with translated(self._store.where):
            await self._store.client.zadd(self._leases, {self._run_id: int(reply[1])}, gt=True)

    async def _write(self, script: str, args: list[Any]) -> Any:
        async with translated(self._store.where):
            scripts = await self._store.ready()
            reply = await getattr(scripts, script)(keys=self._keys, args=args)
        return raise_unless_ok(reply, self._run_id, self._epoch)
