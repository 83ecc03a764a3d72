"""The test side of the multi-process races: N racer processes, commanded together."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from types import TracebackType

from outlast.adapter import redact

START_MARGIN = 0.05
"""Seconds between sending a command and the moment every racer acts on it."""


class Racers:
    """``count`` racer processes (see :mod:`outlast_conformance.racer`) on one store URL."""

    def __init__(self, url: str, namespace: str, count: int, timeout: float) -> None:
        self.url = url
        self.namespace = namespace
        self.count = count
        self.timeout = timeout
        self._processes: list[asyncio.subprocess.Process] = []

    async def __aenter__(self) -> Racers:
        for _ in range(self.count):
            self._processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "outlast_conformance.racer",
                    self.url,
                    self.namespace,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        replies = await self._replies(self.timeout * 3)  # cold starts import the adapter
        assert all(reply.get("ready") for reply in replies), replies
        return self

    async def race(self, op: str, run_id: str) -> int:
        """Every racer does ``op`` on ``run_id`` at once; how many won."""
        replies = await self.each([{"op": op, "run_id": run_id}] * self.count)
        return sum(1 for won in replies if won)

    async def each(self, commands: list[dict[str, object]]) -> list[bool]:
        """Racer i does ``commands[i]``, all starting at the same moment; who won."""
        return [bool(reply.get("won")) for reply in await self.replies_to(commands)]

    async def replies_to(self, commands: list[dict[str, object]]) -> list[dict[str, object]]:
        """Racer i does ``commands[i]``, all starting at the same moment; their replies."""
        at = time.monotonic() + START_MARGIN
        for process, command in zip(self._processes, commands, strict=True):
            assert process.stdin is not None
            process.stdin.write(json.dumps({**command, "at": at}).encode() + b"\n")
        await asyncio.gather(*(p.stdin.drain() for p in self._processes if p.stdin))
        replies = await self._replies(self.timeout)
        errors = [reply["error"] for reply in replies if "error" in reply]
        assert not errors, f"racer processes failed: {errors}"
        return replies

    async def _replies(self, within: float) -> list[dict[str, object]]:
        async def one(process: asyncio.subprocess.Process) -> dict[str, object]:
            assert process.stdout is not None
            line = await process.stdout.readline()
            if not line:
                stderr = await process.stderr.read() if process.stderr else b""
                raise AssertionError(
                    f"racer process {process.pid} exited ({process.returncode}): "
                    f"{stderr.decode(errors='replace')[-2000:]}"
                )
            reply: dict[str, object] = json.loads(line)
            return reply

        try:
            return await asyncio.wait_for(
                asyncio.gather(*(one(p) for p in self._processes)), within
            )
        except TimeoutError:
            raise AssertionError(
                f"racer processes did not answer within {within}s (store {redact(self.url)!r})"
            ) from None

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for process in self._processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in self._processes:
            try:
                await asyncio.wait_for(process.wait(), self.timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
