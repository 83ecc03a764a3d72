"""A throttling wrapper any checkpointer can use.

Saving after every step is right for slow, expensive steps; for fast loops a
store write per step costs more than it protects. :class:`ThrottledCheckpointer`
writes at most once per ``min_interval``: saves in between only replace the
pending state (the latest cumulative state holds everything, so nothing is
lost by skipping one), a timer writes the pending state once the interval has
passed, and complete / fail / release always flush it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from outlast.messages import JSON
from outlast.ports import Checkpointer, CheckpointState


class ThrottledCheckpointer:
    """Wraps ``inner`` so it is written at most once per ``min_interval`` seconds.

    An error of a timer flush (LeaseLost, say) is raised by the next call.
    """

    def __init__(
        self,
        inner: Checkpointer,
        min_interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0 seconds, got {min_interval!r}")
        self.inner = inner
        self.min_interval = min_interval
        self._clock = clock
        self._pending: CheckpointState | None = None
        self._last_write: float | None = None
        self._timer: asyncio.Task[None] | None = None
        self._timer_error: BaseException | None = None
        self._lock = asyncio.Lock()
        self._cancel_requested = False
        self.writes = 0

    def __repr__(self) -> str:
        return f"ThrottledCheckpointer({self.inner!r}, min_interval={self.min_interval})"

    @property
    def run_id(self) -> str:
        return self.inner.run_id

    @property
    def namespace(self) -> str:
        return self.inner.namespace

    @property
    def epoch(self) -> int:
        return self.inner.epoch

    async def save(self, state: CheckpointState) -> bool:
        """Write now, or keep ``state`` for the timer; returns the latest
        ``cancel_requested`` the inner checkpointer reported."""
        self._raise_timer_error()
        self._pending = state
        wait = self._wait()
        if wait <= 0:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later(wait))
        return self._cancel_requested

    async def flush(self) -> None:
        """Write the pending state now (no-op when nothing is pending)."""
        self._raise_timer_error()
        async with self._lock:
            state, self._pending = self._pending, None
            if state is None:
                return
            try:
                self._cancel_requested = await self.inner.save(state)
            except BaseException:
                if self._pending is None:
                    self._pending = state
                raise
            self._last_write = self._clock()
            self.writes += 1

    async def complete(self, result: JSON, usage: JSON = None) -> None:
        await self._flush_now()
        await self.inner.complete(result, usage)

    async def fail(self, error: str) -> None:
        await self._flush_now()
        await self.inner.fail(error)

    async def release(self) -> None:
        await self._flush_now()
        await self.inner.release()

    async def renew(self) -> bool:
        self._cancel_requested = await self.inner.renew()
        return self._cancel_requested

    async def wait(self, request: JSON, timeout: float | None) -> None:
        await self._flush_now()
        await self.inner.wait(request, timeout)

    def discard(self) -> None:
        """Drop the pending state and the timer (the run lost its lease)."""
        self._pending = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wait(self) -> float:
        if self._last_write is None:
            return 0.0
        return self._last_write + self.min_interval - self._clock()

    async def _flush_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        await self.flush()

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - kept and raised by the next call
            self._timer_error = exc

    def _raise_timer_error(self) -> None:
        error, self._timer_error = self._timer_error, None
        if error is not None:
            raise error
