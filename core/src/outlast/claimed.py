"""Continuing a claimed run: what recovery and a worker do with every claim.

Before anything runs, a claim is checked against two limits:

* a run whose workers crashed more than ``max_crashes`` times is failed as a
  PoisonRun instead of being run again (a release by a shutdown is no crash;
  a queued run's first claim is a start, no crash either);
* a run someone asked to cancel while its owner was dying is failed as
  cancelled at once.

Otherwise the run continues on the same record, at the claim's epoch, from
the claim's resume state.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from outlast import transitions
from outlast.attempt import TRANSIENT, finish
from outlast.errors import Cancelled, LeaseLost, PoisonRun, RunWaiting, Shutdown, StoreError
from outlast.events import Event, EventKind
from outlast.plugins import emit
from outlast.ports import Claim
from outlast.runs import RunResult

if TYPE_CHECKING:
    from outlast.executor import Executor


class Outcome(enum.StrEnum):
    """How a claimed run ended, as recovery and workers report it."""

    COMPLETED = "completed"
    FAILED = "failed"
    RELEASED = "released"
    WAITING = "waiting"
    """Parked: a tool asked for outside input (see :mod:`outlast.waiting`)."""
    LEFT = "left"
    """Stopped and left running for recovery: the store became unreachable,
    or another worker took the run over."""


LEFT_RUNNING: tuple[type[BaseException], ...] = (LeaseLost, StoreError, *TRANSIENT)
"""How a claimed run ends when it stopped and stays for recovery."""


@dataclass(frozen=True, slots=True)
class Ended:
    """A claimed run's end: its outcome, and its result or error."""

    outcome: Outcome
    result: RunResult | None = None
    error: BaseException | None = None


async def continue_claimed(executor: Executor, claim: Claim, started: float) -> Ended:
    """Apply the poison limit and a pending cancel, then run the claim to its end.

    ``started`` is when the claim was asked for (``time.monotonic()``), for
    the claim event's duration. Never raises for the run's own error: it is
    the Ended's ``error``.
    """
    cp = claim.checkpointer
    record = claim.record
    emit(
        Event(
            EventKind.CLAIM,
            cp.run_id,
            cp.namespace,
            cp.epoch,
            time.monotonic() - started,
            attempt=record.attempts,
        )
    )
    refused: BaseException | None = None
    if record.crashes > executor.max_crashes:
        refused = PoisonRun(
            f"run {cp.run_id} crashed its workers {record.crashes} times "
            f"(max_crashes={executor.max_crashes}); it is failed instead of retried forever"
        )
    elif record.cancel_requested:
        refused = Cancelled(transitions.CANCELLED.removeprefix("Cancelled: "))
    if refused is not None:
        await finish(cp, None, False, refused, None)
        return Ended(Outcome.FAILED, error=refused)
    try:
        result = await executor.run(
            record.kind,
            record.input,
            resume=claim.resume,
            checkpointer=cp,
            claimed=record,
            claimed_at=started,
        )
    except Shutdown as exc:
        return Ended(Outcome.RELEASED, error=exc)
    except RunWaiting as exc:
        return Ended(Outcome.WAITING, error=exc)
    except LEFT_RUNNING as exc:
        return Ended(Outcome.LEFT, error=exc)
    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
        return Ended(Outcome.FAILED, error=exc)
    return Ended(Outcome.COMPLETED, result=result)
