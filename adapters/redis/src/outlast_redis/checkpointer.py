"""``RedisCheckpointer``: one run's writes, each one script fenced by epoch and incarnation.

Every method is one script on the namespace's slot that checks
(:func:`outlast.transitions.owned`: the run exists, is the incarnation this
checkpointer began or claimed, holds its epoch and is running), writes the
record and its index entries in the same atomic step, or writes nothing and
answers why.
"""

from __future__ import annotations

import math
from typing import Any

from outlast.adapter import (
    JSON,
    CheckpointState,
    CheckpointStateError,
    LeaseLost,
    SaveCursor,
    codec,
)
from outlast_redis.connection import RedisConnection, new_token
from outlast_redis.keys import RunKeys
from outlast_redis.records import flag, text


def raise_unless_ok(reply: Any, run_id: str, epoch: int) -> Any:
    """``reply`` when the script wrote; else the outlast error saying why not."""
    code = text(reply[0])
    if code == "ok":
        return reply
    if code == "state":
        what, stored = text(reply[1]), int(reply[2])
        raise CheckpointStateError(
            f"run {run_id!r}: the save does not extend what is stored ({stored} {what} "
            "stored); history only grows by appending and phases only grow"
        )
    if code == "deleted":
        raise LeaseLost(run_id, epoch, "the run was deleted")
    if code == "reborn":
        raise LeaseLost(run_id, epoch, "the run was deleted and begun again")
    if code == "epoch":
        raise LeaseLost(run_id, epoch, f"epoch {text(reply[1])} owns it now")
    if code == "ended":
        raise LeaseLost(run_id, epoch, f"the run is {text(reply[1])}")
    raise LeaseLost(run_id, epoch, f"the store answered {code!r}")


def wait_ms(timeout: float | None) -> int | str:
    """A wait's timeout in whole milliseconds (one already past: 0), or ``""``
    for none, as the WAIT script takes it; ValueError when not a number."""
    if timeout is None:
        return ""
    if not math.isfinite(timeout):
        raise ValueError(f"a wait's timeout must be a finite number of seconds, not {timeout!r}")
    return max(0, math.ceil(timeout * 1000))


class RedisCheckpointer:
    """The durable record of one run at one epoch of one incarnation."""

    def __init__(
        self,
        connection: RedisConnection,
        keys: RunKeys,
        namespace: str,
        epoch: int,
        incarnation: str,
        cursor: SaveCursor,
    ) -> None:
        self._connection = connection
        self._keys = keys
        self._all_keys = keys.all()
        self._saved_keys = keys.saved()
        self._namespace = namespace
        self._epoch = epoch
        self._incarnation = incarnation
        self._cursor = cursor

    def __repr__(self) -> str:
        return f"RedisCheckpointer(run_id={self.run_id!r}, epoch={self._epoch})"

    @property
    def run_id(self) -> str:
        return self._keys.run_id

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def epoch(self) -> int:
        return self._epoch

    async def save(self, state: CheckpointState) -> bool:
        """One EVALSHA: the delta's phases and messages, appended if the run is mine.

        A save with nothing new still runs the script: it checks ownership
        and moves ``updated_at``. Returns whether a cancel was requested.
        """
        delta = self._cursor.delta(state)
        args: list[str | int] = [
            self._keys.run_id,
            self._epoch,
            self._incarnation,
            delta.first_phase,
            delta.segment,
            delta.first_message,
            len(delta.phases),
            *(codec.encode_phase(phase) for phase in delta.phases),
            *(codec.encode_message(message) for message in delta.messages),
        ]
        reply = await self._connection.run("save", self._saved_keys, args)
        raise_unless_ok(reply, self.run_id, self._epoch)
        self._cursor = delta.after
        return flag(reply[1], self.run_id)

    async def complete(self, result: JSON, usage: JSON = None) -> None:
        ttl_ms = self._connection.config.completed_ttl_ms
        args = [codec.dumps(result), ttl_ms, new_token(), codec.dumps(usage)]
        await self._write("complete", args)

    async def fail(self, error: str) -> None:
        await self._write("fail", [error, new_token()])

    async def release(self) -> None:
        await self._write("release", [new_token()])

    async def renew(self) -> bool:
        """One EVALSHA; returns whether a cancel was requested."""
        reply = await self._write("renew", [new_token()])
        return flag(reply[1], self.run_id)

    async def wait(self, request: JSON, timeout: float | None) -> None:
        """One EVALSHA: the run waits for a send, holding no lease; the wait
        times out ``timeout`` seconds from now by the server's clock."""
        args = [codec.dumps(request), wait_ms(timeout), new_token()]
        await self._write("wait", args)

    async def _write(self, script: str, args: list[Any]) -> Any:
        owned = [self._keys.run_id, self._epoch, self._incarnation]
        reply = await self._connection.run(script, self._all_keys, [*owned, *args])
        return raise_unless_ok(reply, self.run_id, self._epoch)
