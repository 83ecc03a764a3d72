"""``ChangeListener``: one pub/sub subscription per store, waking ``wait_for_change``.

The scripts that make a run claimable or finished PUBLISH the namespace's tag
on the channel ``<prefix>:changes`` (see scripts.py, ``notify``). A store
subscribes to that channel once, lazily on its first wait, over a connection
of its own, and one task reads it and wakes whoever waits on the namespace
named. On Cluster the subscription is redis-py's ClusterPubSub on one node:
classic PUBLISH is forwarded to every node, so one node hears every
namespace.

A caller looks, then waits: a worker's ``claim_next`` finds nothing, then it
waits for a change. A change announced between the two would reach no
waiter, and the run would wait for the next poll. So ``claim_next`` and
``load`` note (per task, and for the tasks it starts) how many announcements
of the namespace the listener had heard, and a wait that follows returns at
once when more have come since.

A notification is a hint, never a guarantee (the contract of
``ChangeNotifier``: callers poll as well). So the listener never raises to a
waiter: when the subscription breaks, it logs once, resubscribes with
backoff, and then wakes every waiter, since news may have been lost
meanwhile; until then waits simply last their timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

import redis
from redis import exceptions as redis_errors
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from outlast.adapter import StoreError, redact
from outlast_redis.connection import RedisConnection
from outlast_redis.records import text

log = logging.getLogger("outlast.redis")

KEEPALIVE = 30.0
"""Seconds of silence after which the subscription is PINGed."""

PONG_WITHIN = 30.0
"""Seconds a PINGed subscription may stay silent before it is taken for dead
(a half-open TCP connection) and opened again."""

_FIRST_RETRY = 0.1
_LAST_RETRY = 5.0
_CLOSE_WITHIN = 10.0

CLUSTER_PUBSUB = hasattr(RedisCluster, "pubsub")
"""Whether redis-py's asyncio Cluster client has pub/sub (redis-py >= 8.0)."""


@dataclass(slots=True)
class _Look:
    """What a listener had heard of a namespace when a task looked at it: its
    announcements, and the subscriptions lost and regained (after which
    anything may have changed). Shared with the tasks it starts, so the
    first wait that uses it uses it up for all of them."""

    heard: tuple[int, int]
    used: bool = False


_looks: ContextVar[Mapping[tuple[int, str], _Look] | None] = ContextVar(
    "outlast_redis_looks", default=None
)
"""Per task: the last look at each namespace (by tag) through each listener
(by id); the tasks it starts inherit it."""


class ChangeListener:
    """The subscription of one store to its prefix's change channel."""

    def __init__(self, connection: RedisConnection, channel: str) -> None:
        self._connection = connection
        self._channel = channel
        self._waiters: dict[str, set[asyncio.Future[bool]]] = {}
        self._heard: dict[str, int] = {}
        """Announcements heard, for the namespaces (by tag) someone looked at."""
        self._breaks = 0
        self._task: asyncio.Task[None] | None = None
        self._was_subscribed = False
        self._warned = False
        self._closed = False
        self.subscribed = False
        """Whether the subscription stands now (a wait started now hears news)."""

    def waiting(self, tag: str) -> int:
        """How many callers wait on the namespace of ``tag`` now."""
        return len(self._waiters.get(tag, ()))

    def looked(self, tag: str) -> None:
        """Note that this task just read the namespace of ``tag`` (a claim, a
        load): its next wait returns at once if a change is heard meanwhile."""
        if self.subscribed:
            look = _Look((self._heard.setdefault(tag, 0), self._breaks))
            _looks.set({**(_looks.get() or {}), (id(self), tag): look})

    async def wait(self, tag: str, timeout: float) -> bool:
        """True as soon as a change of the namespace of ``tag`` is announced
        (or was, since this task last looked at it; or the subscription came
        back after a break); False after ``timeout``."""
        if self._closed:
            raise StoreError(f"the Redis store at {self._connection.where} is closed")
        if self._connection.config.cluster and not CLUSTER_PUBSUB:
            self._warn_polling()
            await asyncio.sleep(timeout)
            return False
        look = (_looks.get() or {}).get((id(self), tag))
        if look is not None and not look.used:
            look.used = True  # the next wait waits, unless the task looks again
            if look.heard != (self._heard.get(tag, 0), self._breaks):
                return True
        self._start()
        woken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(tag, set())
        waiters.add(woken)
        try:
            return await asyncio.wait_for(woken, timeout)
        except TimeoutError:
            return False
        finally:
            waiters.discard(woken)
            if not waiters and self._waiters.get(tag) is waiters:
                del self._waiters[tag]

    async def close(self) -> None:
        """Unsubscribe; every waiter returns False."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=_CLOSE_WITHIN)
            if not task.done():  # never seen; a shutdown must not hang on it
                log.warning("the change listener of %s did not stop", self._connection.where)
        self._wake(None, woken=False)

    def _warn_polling(self) -> None:
        if not self._warned:
            self._warned = True  # once per store is enough
            log.warning(
                "redis-py %s has no pub/sub for asyncio Redis Cluster (it came in redis-py "
                "8.0); waits for new runs at %s are polls",
                redis.__version__,
                self._connection.where,
            )

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(
                self._listen(), name=f"outlast-redis changes of {self._connection.where}"
            )

    def _wake(self, tag: str | None, *, woken: bool = True) -> None:
        """Answer the waiters of ``tag``'s namespace, or every waiter (None)."""
        if tag in self._heard:
            self._heard[tag] += 1
        for name in list(self._waiters) if tag is None else [tag]:
            for waiter in self._waiters.pop(name, set()):
                if not waiter.done():
                    waiter.set_result(woken)

    async def _listen(self) -> None:
        """Follow the channel for the store's life, subscribing again after a break."""
        pause = _FIRST_RETRY
        while not self._closed:
            pubsub: PubSub | None = None
            try:
                pubsub = await self._pubsub()
                await pubsub.subscribe(self._channel)
                async for _ in self._follow(pubsub):
                    pause = _FIRST_RETRY  # subscribed again: the next break starts afresh
            except StoreError:
                return  # the store was closed
            except Exception as exc:  # noqa: BLE001 - the listener outlives any failure: waits poll meanwhile
                why = redact(str(exc), secrets=self._connection.config.secrets)
                if self.subscribed:
                    log.warning(
                        "lost the change subscription to Redis at %s (%s); workers poll "
                        "until it is back",
                        self._connection.where,
                        why,
                    )
                else:
                    log.debug("cannot subscribe to changes at %s: %s", self._connection.where, why)
                self.subscribed = False
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not security
            pause = min(pause * 2, _LAST_RETRY)

    async def _pubsub(self) -> PubSub:
        """A new PubSub of the store's client (a connection of its own)."""
        client = self._connection.client
        if isinstance(client, RedisCluster):
            await client.initialize()  # its slot map routes SUBSCRIBE to a node
        return client.pubsub()

    async def _follow(self, pubsub: PubSub) -> AsyncIterator[None]:
        """Read the subscription, waking waiters; yields at every (re)subscription.

        Raises when the connection fails and redis-py's own retries (which
        reconnect and resubscribe) did not mend it.
        """
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=PONG_WITHIN if pinged else KEEPALIVE)
            if message is None:
                if pinged:
                    raise redis_errors.ConnectionError(
                        f"no answer to a PING in {PONG_WITHIN:g}s on the subscription"
                    )
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if message["type"] == "subscribe":
                if self._was_subscribed:
                    self._breaks += 1
                    self._wake(None)  # news may have been lost while away
                self._was_subscribed = self.subscribed = True
                yield
            elif message["type"] == "message":
                self._wake(text(message["data"]))
