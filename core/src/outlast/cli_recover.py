"""``outlast recover APP``: claim and continue what is claimable now, and say
what is not claimable yet.

Per run it prints how the run ended, at which epoch, which finished phases
it skipped and how many saved messages it restored. A run whose worker was
killed (``kill -9``) is not claimable until its lease runs out: recover says
how many runs are still leased and when the first lease expires, and
``--wait`` waits for them (at most until the last of those leases ends) and
recovers each as it becomes claimable. SIGTERM or SIGINT stops cleanly: a
run in progress is released (``released N``) and the exit status is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import click

from outlast.cli_app import load_app
from outlast.cli_options import (
    duration,
    limit_option,
    plural,
    run,
    url_option,
    verbose_option,
    when,
    with_store,
)
from outlast.executor import Executor
from outlast.ports import DEFAULT_NAMESPACE, CheckpointerFactory, Claim, RunRecord, RunStatus
from outlast.recovery import RecoveryReport
from outlast.retention import RetentionSchedule
from outlast.store import Store

WAIT_GRACE = 1.0
"""Seconds --wait waits past the last lease's expiry (clocks of two processes
or a server's clock are not the same instant)."""

SHORTEST_STEP = 0.2
"""Seconds between looks while a lease that looks expired here is not yet
expired by the store's clock."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What one claim handed back: the finished phases and the saved messages."""

    epoch: int
    phases: tuple[str, ...]
    messages: int
    first_start: bool


class _NotingStore(Store):
    """The executor's store, noting what each claim restored, for recover's lines."""

    def __init__(self, store: CheckpointerFactory) -> None:
        retention = store.retention if isinstance(store, Store) else None
        schedule = None if retention is None else RetentionSchedule(retention)
        super().__init__(store, retention=schedule)
        self.restored: dict[str, Restored] = {}

    async def claim_next(
        self,
        kinds: Sequence[str],
        *,
        owner: str,
        lease: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Claim | None:
        claim = await super().claim_next(kinds, owner=owner, lease=lease, namespace=namespace)
        if claim is not None:
            record = claim.record
            self.restored[record.run_id] = Restored(
                epoch=record.epoch,
                phases=tuple(p.name for p in claim.resume.completed_phases),
                messages=len(claim.resume.history),
                first_start=record.epoch == 1 and record.attempts == 1,
            )
        return claim


def said(run_id: str, outcome: str, restored: Restored | None) -> str:
    """One run's line: ``ID: recovered (epoch 2): skipped 2 finished phases
    (research, outline); restored 6 saved messages``."""
    if restored is None:
        return f"{run_id}: {outcome}"
    if restored.first_start:
        ended = "completed" if outcome == "recovered" else outcome
        return f"{run_id}: {ended} (epoch 1): a queued run, started from its beginning"
    if restored.phases:
        skipped = f"skipped {plural(len(restored.phases), 'finished phase')} "
        skipped += f"({', '.join(restored.phases)})"
    else:
        skipped = "no finished phase to skip"
    restored_messages = plural(restored.messages, "saved message")
    return f"{run_id}: {outcome} (epoch {restored.epoch}): {skipped}; restored {restored_messages}"


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A step of a progress bar on stderr, shown only when stderr is a
    terminal: piped or logged output never holds bar frames, and stdout
    stays the report."""
    if total and sys.stderr.isatty():
        with click.progressbar(length=total, label="recovering", file=sys.stderr) as bar:
            yield lambda: bar.update(1)
    else:
        yield lambda: None


@click.command()
@click.argument("app")
@url_option
@limit_option(100, "Most runs to recover.")
@click.option(
    "--wait",
    is_flag=True,
    help="Also wait for the runs still leased now (a killed worker's runs become "
    "claimable when their lease runs out) and recover them; waits at most until "
    "the last of those leases ends.",
)
@verbose_option
def recover(app: str, url: str, limit: int, wait: bool) -> None:
    """Claim and continue interrupted runs of APP (module:object: an Executor,
    or a callable taking the store and returning one).

    Prints each run's end, epoch, skipped phases and restored messages, and
    how many runs are still leased (a killed worker's, until the lease runs
    out). SIGTERM or SIGINT releases the run in progress and exits 0; exit 1
    when a run failed or was left running.
    """

    async def use(store: Store) -> int:
        executor = load_app(app, store)
        noting = _NotingStore(executor.store or store)
        executor.store = noting
        with executor.handle_signals():
            return await _recover(executor, noting, limit, wait)

    sys.exit(run(with_store(url, use)))


async def _recover(executor: Executor, store: _NotingStore, limit: int, wait: bool) -> int:
    namespace = executor.namespace
    candidates = await store.interrupted(namespace, limit)
    click.echo(
        f"{plural(len(candidates), 'claimable run')} (interrupted or queued) "
        f"in namespace {namespace!r}"
    )
    report = await _round(executor, store, limit, len(candidates))
    leased = await _leased(store, namespace)
    if leased:
        click.echo(_leased_note(leased, namespace, wait))
    if wait and leased and not executor.stopping.is_set():
        report = await _wait_and_recover(executor, store, limit, report, leased)
        still = [r for r in await _leased(store, namespace) if r.kind in executor.registry]
        if executor.stopping.is_set():
            click.echo("stopped waiting: shutting down")
        elif still:
            click.echo(
                f"still leased after waiting: {plural(len(still), 'run')} (its worker is alive "
                "and renewing, or --limit was reached; `outlast runs list --status running`)"
            )
    for run_id, error in report.errors.items():
        click.echo(f"  {run_id}: {type(error).__name__}: {error}", err=True)
    for run_id, error in report.left.items():
        click.echo(f"  {run_id}: left running: {type(error).__name__}: {error}", err=True)
    for run_id, reason in report.skipped.items():
        click.echo(f"  {run_id}: skipped: {reason}", err=True)
    for run_id in report.waiting:
        click.echo(f"  {run_id}: waiting for input (`outlast runs send {run_id} JSON`)")
    waiting = f", waiting {len(report.waiting)}" if report.waiting else ""
    click.echo(
        f"recovered {len(report.results)}, failed {len(report.errors)}, "
        f"released {len(report.released)}, left running {len(report.left)}, "
        f"skipped {len(report.skipped)}{waiting}"
    )
    return 1 if report.errors or report.left else 0


async def _round(
    executor: Executor, store: _NotingStore, limit: int, expected: int
) -> RecoveryReport:
    """One ``executor.recover``, each run's line printed as it ends."""
    with _progress(expected) as step:

        def progress(record: RunRecord, outcome: str) -> None:
            step()
            click.echo("  " + said(record.run_id, outcome, store.restored.get(record.run_id)))

        return await executor.recover(limit=limit, progress=progress)


async def _leased(store: Store, namespace: str) -> list[RunRecord]:
    """The namespace's running runs whose lease has not run out, by expiry."""
    now = time.time()
    found: list[RunRecord] = []
    cursor = None
    while True:
        page = await store.list(namespace, RunStatus.RUNNING, 500, cursor)
        found += [
            r for r in page.records if r.lease_expires_at is not None and r.lease_expires_at > now
        ]
        cursor = page.next_cursor
        if cursor is None:
            return sorted(found, key=lambda r: (r.lease_expires_at or 0.0, r.run_id))


def _leased_note(leased: list[RunRecord], namespace: str, waiting: bool) -> str:
    first = leased[0].lease_expires_at or 0.0
    note = (
        f"{plural(len(leased), 'run')} still leased in namespace {namespace!r}: a worker "
        "holds each (alive, or killed before it could release it; a killed worker's run "
        "becomes claimable when its lease runs out). The first lease expires in "
        f"{duration(first - time.time())} (at {when(first)})."
    )
    if not waiting:
        them = "it" if len(leased) == 1 else "them"
        note += f" Run recover again then, or add --wait to wait for {them}."
    return note


async def _wait_and_recover(
    executor: Executor,
    store: _NotingStore,
    limit: int,
    report: RecoveryReport,
    leased: list[RunRecord],
) -> RecoveryReport:
    """Until the runs of this app's kinds that are leased now become claimable
    (at most until the last lease ends), recover each as it does."""
    ours = [r for r in leased if r.kind in executor.registry]
    if not ours:
        click.echo("none of them is of a kind this app registers: nothing to wait for")
        return report
    last = max(r.lease_expires_at or 0.0 for r in ours)
    longest = last - time.time() + WAIT_GRACE
    deadline = time.monotonic() + longest
    click.echo(
        f"waiting up to {duration(longest)} for {plural(len(ours), 'leased run')} "
        "(SIGINT/SIGTERM stops waiting)"
    )
    while not executor.stopping.is_set():
        leased_now = await _leased(store, executor.namespace)
        pending = [r for r in leased_now if r.kind in executor.registry]
        room = limit - _taken(report)
        left = deadline - time.monotonic()
        if not pending or room <= 0 or left <= 0:
            break
        first = pending[0].lease_expires_at or 0.0
        step = min(max(first - time.time(), SHORTEST_STEP), left)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(executor.stopping.wait(), timeout=step)
        if executor.stopping.is_set():
            break
        report = _merged(report, await _round(executor, store, room, len(pending)))
    return report


def _taken(report: RecoveryReport) -> int:
    return (
        len(report.results)
        + len(report.errors)
        + len(report.released)
        + len(report.left)
        + len(report.waiting)
    )


def _merged(before: RecoveryReport, after: RecoveryReport) -> RecoveryReport:
    """Both rounds' runs; the later round's view of what was skipped."""
    return RecoveryReport(
        results=[*before.results, *after.results],
        errors={**before.errors, **after.errors},
        released=[*before.released, *after.released],
        left={**before.left, **after.left},
        skipped=after.skipped,
        waiting=[*before.waiting, *after.waiting],
    )
