"""Every error outlast raises, under one base class.

The hierarchy::

    OutlastError
    ├── ConfigurationError         bad URL, bad option, nothing serves a URL
    │   └── UnknownBackend         no installed backend serves the URL's scheme
    ├── StoreError                 a store could not do what was asked
    │   ├── StoreUnavailable       cannot reach / authenticate to the store
    │   ├── RunExists              begin() with a run id that already exists
    │   ├── RunNotFound            no such run in that namespace
    │   ├── LeaseLost              fenced: a newer epoch owns the run
    │   ├── CorruptCheckpoint      a stored record does not parse
    │   └── CheckpointStateError   a save that breaks the append-only contract
    └── RunError                   the run itself stopped with an error
        ├── ModelError             the model failed or gave an unusable reply
        ├── StepLimitExceeded      the tool loop hit max_steps
        ├── DeadlineExceeded       the run's own deadline passed
        ├── CriticKilled           the critic callback stopped the run
        ├── ResumeMismatch         saved phases are not a prefix of the plan
        ├── PoisonRun              recovered more than max_attempts times
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
    """No installed backend serves the URL's scheme."""

    def __init__(self, scheme: str, installed: Sequence[str], package: str | None) -> None:
        self.scheme = scheme
        self.installed = tuple(installed)
        self.package = package
        listing = ", ".join(self.installed) or "none"
        hint = (
            f"install it with `pip install {package}`"
            if package
            else "install the package that provides it"
        )
        super().__init__(
            f"no installed outlast backend serves the URL scheme {scheme!r}; "
            f"installed schemes: {listing}; {hint} "
            "(`outlast backends` lists what is installed)"
        )


class StoreError(OutlastError):
    """A store could not do what was asked."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or refused the credentials."""


class RunExists(StoreError):
    """``begin`` was asked to create a run id that already exists."""

    def __init__(self, run_id: str, namespace: str) -> None:
        self.run_id = run_id
        self.namespace = namespace
        super().__init__(
            f"run {run_id!r} already exists in namespace {namespace!r}; "
            "a run id is begun once (recover it with claim instead)"
        )


class RunNotFound(StoreError):
    """No run with that id exists in that namespace."""

    def __init__(self, run_id: str, namespace: str) -> None:
        self.run_id = run_id
        self.namespace = namespace
        super().__init__(f"no run {run_id!r} in namespace {namespace!r}")


class LeaseLost(StoreError):
    """A newer epoch owns the run: this checkpointer must stop writing.

    Raised by every write of a checkpointer whose epoch was superseded by a
    claim. Nothing was written.
    """

    def __init__(self, run_id: str, epoch: int, detail: str = "") -> None:
        self.run_id = run_id
        self.epoch = epoch
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"run {run_id!r}: epoch {epoch} no longer owns the run; "
            f"another worker claimed it{extra}"
        )


class CorruptCheckpoint(StoreError):
    """A stored record does not parse or has an unknown format version."""

    def __init__(self, run_id: str, detail: str) -> None:
        self.run_id = run_id
        self.detail = detail
        super().__init__(f"run {run_id!r}: stored checkpoint is corrupt: {detail}")


class CheckpointStateError(StoreError):
    """A save broke the append-only contract (phases shrank, history was rewritten)."""


class RunError(OutlastError):
    """The run stopped with an error; the durable record is failed (or released)."""


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
    """The run was recovered more than ``max_attempts`` times and is failed."""


class Shutdown(RunError):
    """The host is shutting down; the run was released for another worker.

    The one shutdown type: the executor matches it with ``isinstance`` on the
    error or anywhere in its ``__cause__`` chain.
    """


def is_shutdown(error: BaseException | None) -> bool:
    """True when ``error`` is, or was caused by, a :class:`Shutdown`."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, Shutdown):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
