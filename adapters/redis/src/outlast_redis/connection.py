"""``RedisConnection``: the client and its scripts, shared by a store and its checkpointers.

A store and every checkpointer it hands out run their scripts through one
connection object, so a checkpointer never reaches into its store. Its first
use loads the scripts and checks, once, that the server persists writes
(:mod:`outlast_redis.persistence`).
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisClusterException

from outlast.adapter import StoreError
from outlast_redis import scripts as lua
from outlast_redis.config import RedisConfig
from outlast_redis.errors import REDIS_ERRORS, translate, translated
from outlast_redis.persistence import warn_if_not_persistent

Client = Redis | RedisCluster


def new_token() -> str:
    """Marks one write, so its retry by redis-py is recognised as the same write."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Scripts:
    """Every script, registered with one client (loaded on first use, called by SHA)."""

    create: AsyncScript
    save: AsyncScript
    complete: AsyncScript
    fail: AsyncScript
    release: AsyncScript
    renew: AsyncScript
    wait: AsyncScript
    send: AsyncScript
    cancel: AsyncScript
    claim: AsyncScript
    claim_next: AsyncScript
    unclaim: AsyncScript
    quarantine: AsyncScript
    quarantine_claimed: AsyncScript
    load: AsyncScript
    delete: AsyncScript
    forget: AsyncScript
    purge: AsyncScript
    candidates: AsyncScript

    def all(self) -> list[AsyncScript]:
        return [getattr(self, name) for name in self.__slots__]

    @classmethod
    def register(cls, client: Client) -> Scripts:
        sources = {
            "create": lua.CREATE,
            "save": lua.SAVE,
            "complete": lua.COMPLETE,
            "fail": lua.FAIL,
            "release": lua.RELEASE,
            "renew": lua.RENEW,
            "wait": lua.WAIT,
            "send": lua.SEND,
            "cancel": lua.CANCEL,
            "claim": lua.CLAIM,
            "claim_next": lua.CLAIM_NEXT,
            "unclaim": lua.UNCLAIM,
            "quarantine": lua.QUARANTINE,
            "quarantine_claimed": lua.QUARANTINE_CLAIMED,
            "load": lua.LOAD,
            "delete": lua.DELETE,
            "forget": lua.FORGET,
            "purge": lua.PURGE,
            "candidates": lua.CANDIDATES,
        }
        return cls(**{name: client.register_script(text) for name, text in sources.items()})


class RedisConnection:
    """The redis-py client of one store (created on first use) and its loaded scripts."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.where = config.redacted_url
        """The server's URL without its password, for messages."""
        self._client: Client | None = None
        self._scripts: Scripts | None = None
        self._loading = asyncio.Lock()
        self._closed = False
        self._answered = False
        self._cluster_transactions = True
        """False once redis-py said its Cluster client has no MULTI/EXEC (before 6.x)."""

    def translated(self) -> AbstractAsyncContextManager[None]:
        """:func:`~outlast_redis.errors.translated` for this server: its
        redacted URL, its password scrubbed, and until it has answered once
        over rediss://, the hint that it may not speak TLS."""
        return translated(
            self.where,
            secrets=self.config.secrets,
            tls_unconfirmed=self.config.tls and not self._answered,
        )

    @property
    def client(self) -> Client:
        """The redis-py client (created on first use; it connects lazily itself)."""
        if self._closed:
            raise StoreError(f"the Redis store at {self.where} is closed")
        if self._client is None:
            options: dict[str, Any] = {"decode_responses": False, **self.config.client_options}
            if self.config.cluster:
                self._client = RedisCluster.from_url(self.config.url, **options)
            else:
                if self.config.db is not None:
                    options["db"] = self.config.db
                self._client = Redis.from_url(self.config.url, **options)
        return self._client

    async def scripts(self) -> Scripts:
        """The scripts, loaded into the server(s) before their first use.

        Loading them up front (once per store) matters on Cluster: redis-py's
        NOSCRIPT fallback is not safe when many calls hit it at once on a
        fresh cluster client (it can run a script twice or drop connections
        under a command). Later NOSCRIPTs (a restart, SCRIPT FLUSH) still
        reload through the fallback, and every script is safe to repeat.
        Then, once per store, it checks that the server persists writes (a
        WARNING when it keeps nothing on disk). Call inside ``translated``.
        """
        if self._scripts is None:
            async with self._loading:
                if self._scripts is None:
                    registered = Scripts.register(self.client)
                    await self._load(registered)
                    self._answered = True
                    await warn_if_not_persistent(self.client, self.config)
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

    def transaction(self) -> Any | None:
        """A MULTI/EXEC pipeline (one round trip, one atomic step), or None
        where redis-py cannot send one: its Cluster client before cluster
        transactions. Every key given to one must share a slot."""
        client = self.client
        if not isinstance(client, RedisCluster):
            return client.pipeline(transaction=True)
        if not self._cluster_transactions:
            return None
        try:
            return client.pipeline(transaction=True)
        except RedisClusterException:
            self._cluster_transactions = False
            return None

    async def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run the script named ``script``; outlast errors instead of redis-py's.

        Every save comes through here, so it is :meth:`translated` and
        redis-py's ``Script.__call__`` unrolled: EVALSHA, and on NOSCRIPT (a
        restarted or flushed server) SCRIPT LOAD and EVALSHA again.
        """
        try:
            loaded = self._scripts if self._scripts is not None else await self.scripts()
            called: AsyncScript = getattr(loaded, script)
            client = self.client
            try:
                return await client.evalsha(called.sha, len(keys), *keys, *args)
            except NoScriptError:
                called.sha = await client.script_load(called.script)
                return await client.evalsha(called.sha, len(keys), *keys, *args)
        except REDIS_ERRORS as exc:
            raise translate(
                exc,
                self.where,
                secrets=self.config.secrets,
                tls_unconfirmed=self.config.tls and not self._answered,
            ) from exc

    async def close(self) -> None:
        """Close the connections; the connection is unusable afterwards."""
        self._closed = True
        if self._client is not None:
            client, self._client, self._scripts = self._client, None, None
            await client.aclose()
