"""Every error outlast raises, under one base class.

The hierarchy::

    OutlastError
    ├── ConfigurationError         bad URL, bad option, nothing serves a URL
    │   └── UnknownBackend         no installed backend serves the URL's scheme
    ├── StoreError                 a store could not do what was asked
    │   ├── StoreUnavailable       cannot reach / authenticate to the store
    │   ├── RunExists              begin() with a run id that already exists
    │   ├── RunNotFound            no such run in that namespace
    │   ├── RunFinished            cancel of a run that already completed or failed
    │   ├── NotWaiting             send to a run that is not waiting for input
    │   ├── LeaseLost              fenced: the run is no longer this writer's
    │   ├── CorruptCheckpoint      a stored record does not parse
    │   │   └── UnknownFormat      written by a newer outlast (never quarantined)
    │   └── CheckpointStateError   a save that breaks the append-only contract
    ├── ResultTimeout              waiting for a run's result took too long
    ├── RunWaiting                 the run waits for outside input (not a failure)
    └── RunError                   the run itself stopped with an error
        ├── RunFailed              the run id failed earlier (its stored error)
        ├── ModelError             the model failed or gave an unusable reply
        ├── StepLimitExceeded      the tool loop hit max_steps
        ├── DeadlineExceeded       the run's own deadline passed
        ├── CriticKilled           the critic callback stopped the run
        ├── ResumeMismatch         saved phases are not a prefix of the plan
        ├── PoisonRun              its workers crashed more than max_crashes times
        ├── Cancelled              someone cancelled the run (Executor.cancel)
        ├── WaitTimedOut           a wait for outside input outlasted its timeout
        └── Shutdown               the host is shutting down (run is released)

Adapters translate their driver's exceptions into these at the boundary, most
specific first, with ``raise ... from exc``. No message built here contains a
password: URLs are passed through :func:`outlast.urls.redact` first.
"""

from __future__ import annotations

from collections.abc import Sequence


class OutlastError(Exception):
    """Base class of every error outlast raises."""


class ConfigurationError(OutlastError):
    """A URL or option is wrong; the message says what to change."""


class UnknownBackend(ConfigurationError):
    """No installed backend serves the URL's scheme.

    ``suggestion`` is the installed or known scheme closest to a typo
    (``postgress`` -> ``postgres``), or None.
    """

    def __init__(
        self,
        scheme: str,
        installed: Sequence[str],
        package: str | None,
        *,
        suggestion: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.installed = tuple(installed)
        self.package = package
        self.suggestion = suggestion
        listing = ", ".join(self.installed) or "none"
        typo = f" (did you mean {suggestion!r}?)" if suggestion else ""
        if package:
            hint = f"install it with `pip install {package}` "
        elif suggestion:
            hint = ""  # a typo: installing something is not the fix
        else:
            hint = "install the package that provides it "
        super().__init__(
            f"no installed outlast backend serves the URL scheme {scheme!r}{typo}; "
            f"installed schemes: {listing}; {hint}"
            "(`outlast backends` lists what is installed)"
        )


class StoreError(OutlastError):
    """A store could not do what was asked."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or refused the credentials."""


class RunExists(StoreError):
    """A run with that id already exists, so it is not begun (or run) again.

    Stores raise it from ``begin``; the executor raises it, with ``detail``
    saying how the existing run stands, when a run id is reused for a run
    that is still going or for another kind.
    """

    def __init__(self, run_id: str, namespace: str, detail: str = "") -> None:
        self.run_id = run_id
        self.namespace = namespace
        self.detail = detail
        why = detail or "a run id is begun once (recover it with claim instead)"
        super().__init__(f"run {run_id!r} already exists in namespace {namespace!r}; {why}")


class RunNotFound(StoreError):
    """No run with that id exists in that namespace."""

    def __init__(self, run_id: str, namespace: str) -> None:
        self.run_id = run_id
        self.namespace = namespace
        super().__init__(f"no run {run_id!r} in namespace {namespace!r}")


class RunFinished(StoreError):
    """The run already completed or failed: there is nothing to cancel."""

    def __init__(self, run_id: str, namespace: str, status: str) -> None:
        self.run_id = run_id
        self.namespace = namespace
        self.status = status
        super().__init__(
            f"run {run_id!r} in namespace {namespace!r} already {status}; "
            "only a run that is still running (or queued) can be cancelled"
        )


class NotWaiting(StoreError):
    """``send`` to a run that is not waiting for input: it never waited, or
    its input was delivered already (a second send), or it ended."""

    def __init__(self, run_id: str, namespace: str, status: str) -> None:
        self.run_id = run_id
        self.namespace = namespace
        self.status = status
        super().__init__(
            f"run {run_id!r} in namespace {namespace!r} is not waiting for input (it is "
            f"{status}); input is delivered once, to a run that waits: see "
            "`outlast runs list --status waiting`"
        )


class ResultTimeout(OutlastError, TimeoutError):
    """A wait for a run's result ran out of time; the run goes on."""


class LeaseLost(StoreError):
    """The run is no longer this writer's: this checkpointer must stop writing.

    Raised by every write of a checkpointer whose epoch was superseded by a
    claim, whose run ended (completed, failed) or was deleted. Nothing was
    written. ``detail`` says which.
    """

    def __init__(self, run_id: str, epoch: int, detail: str = "") -> None:
        self.run_id = run_id
        self.epoch = epoch
        self.detail = detail or "another worker claimed it"
        super().__init__(f"run {run_id!r}: epoch {epoch} no longer owns the run ({self.detail})")


class CorruptCheckpoint(StoreError):
    """A stored record does not parse.

    Recovery quarantines such a run: it is failed with this error's text,
    keeping what is stored for forensics, so it leaves the work list.
    """

    def __init__(self, run_id: str, detail: str) -> None:
        self.run_id = run_id
        self.detail = detail
        super().__init__(f"run {run_id!r}: stored checkpoint is corrupt: {detail}")


class UnknownFormat(CorruptCheckpoint):
    """A record carries a format version this outlast does not read.

    A newer outlast wrote it (a rolling upgrade): it is skipped, never
    quarantined, so a newer worker can still recover it.
    """


class CheckpointStateError(StoreError):
    """A save broke the append-only contract (phases shrank, history was rewritten)."""


class RunError(OutlastError):
    """The run stopped with an error; the durable record is failed (or released)."""


class RunFailed(RunError):
    """The run id names a run that failed earlier; ``error`` is its stored error.

    Raised instead of running a failed run again: a run id is an
    idempotency key.
    """

    def __init__(self, run_id: str, error: str) -> None:
        self.run_id = run_id
        self.error = error
        super().__init__(
            f"run {run_id!r} failed earlier: {error} (a run id runs once; use a new run "
            "id to try again, or delete the failed run)"
        )


class ModelError(RunError):
    """The model raised, or replied with something the loop cannot use."""


class StepLimitExceeded(RunError):
    """The model/tool loop used all of its ``max_steps``."""


class DeadlineExceeded(RunError):
    """The run's own deadline passed before it finished."""


class CriticKilled(RunError):
    """The critic callback decided the run must stop."""


class ResumeMismatch(RunError):
    """The saved completed phases are not a prefix of the plan being resumed."""


class PoisonRun(RunError):
    """The run crashed its workers more than ``max_crashes`` times and is failed."""


class Cancelled(RunError):
    """Someone cancelled the run (``Executor.cancel``, ``outlast runs cancel``)."""


class WaitTimedOut(RunError):
    """A tool waited for outside input (``AwaitInput``) longer than its
    timeout allowed, and chose to fail the run then."""


class Shutdown(RunError):
    """The host is shutting down; the run was released for another worker."""


class RunWaiting(OutlastError):
    """The run waits for outside input: a tool asked for it (``AwaitInput``).

    Not a failure: the run is saved as ``waiting``, holds no worker, and
    continues on whichever worker claims it after ``Executor.send`` (or
    ``outlast runs send``) delivers the input. ``Executor.result`` waits for
    its end.
    """

    def __init__(self, run_id: str, request: object) -> None:
        self.run_id = run_id
        self.request = request
        super().__init__(
            f"run {run_id!r} waits for input ({request!r:.200}); deliver it with "
            f"Executor.send or `outlast runs send {run_id} JSON`"
        )
