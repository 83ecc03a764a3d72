"""The check that an endpoint honours conditional writes, once per store.

A store that silently ignored If-None-Match or If-Match would let two
claimers both win, so a store proves the endpoint honours both before its
first write, and refuses to run on one that does not.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import NoReturn

from outlast.adapter import ConfigurationError, codec
from outlast_s3.objects import ObjectClient, PreconditionFailed
from outlast_s3.options import S3Options

_PROBE_BODY = codec.dumps({"v": codec.FORMAT_VERSION, "type": "probe"}).encode()


class ConditionalWritesProbe:
    """Proves once, before the first write, that the endpoint honours
    If-None-Match and If-Match on PutObject (4 requests on a throw-away object)."""

    def __init__(self, objects: ObjectClient, options: S3Options) -> None:
        self._objects = objects
        self._options = options
        self._checked = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Return once the endpoint is known to honour conditional writes;
        ConfigurationError when it does not."""
        if self._checked:
            return
        async with self._lock:
            if not self._checked:  # another task may have probed meanwhile
                await self._probe()
            self._checked = True

    async def _probe(self) -> None:
        root = f"{self._options.prefix}/" if self._options.prefix else ""
        key = f"{root}.outlast-probe-{uuid.uuid4().hex}"
        await self._objects.put(key, _PROBE_BODY, if_none_match=True)
        try:
            if not await self._refused(key, if_none_match=True):
                self._missing("If-None-Match")
            if not await self._refused(key, if_match=f'"{"0" * 32}"'):
                self._missing("If-Match")
        finally:
            await self._objects.delete([key])

    async def _refused(
        self, key: str, *, if_match: str | None = None, if_none_match: bool = False
    ) -> bool:
        try:
            await self._objects.put(
                key, _PROBE_BODY, if_match=if_match, if_none_match=if_none_match
            )
        except PreconditionFailed:
            return True
        return False

    def _missing(self, header: str) -> NoReturn:
        raise ConfigurationError(
            f"the S3 endpoint of {self._options.url!r} ignored {header} on PutObject; "
            "outlast-s3 needs S3 conditional writes (If-None-Match and If-Match) to fence "
            "runs safely: use Amazon S3 or an S3-compatible store that supports them"
        )
