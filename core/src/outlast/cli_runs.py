"""``outlast runs``: list, show, wait for, send input to, cancel and delete stored runs.

Every one of them acts on runs that already exist, so none creates a store:
a SQLite path that does not exist is reported (see
:func:`outlast.cli_options.open_url`).
"""

from __future__ import annotations

import asyncio
import json
import sys

import click

from outlast import usage
from outlast.cli_options import (
    backend_of,
    limit_option,
    namespace_option,
    plural,
    run,
    run_id_argument,
    url_option,
    when,
    with_store,
)
from outlast.errors import OutlastError, ResultTimeout, RunFailed
from outlast.executor import Executor
from outlast.ports import RunRecord, RunStatus, StoredRun
from outlast.runs import RunResult
from outlast.store import Store
from outlast.submission import usage_of
from outlast.urls import redact


@click.group()
def runs() -> None:
    """Inspect and delete stored runs."""


@runs.command(name="list")
@url_option
@namespace_option
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), default=None)
@limit_option(50, "Runs per page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow every page.")
def list_runs(url: str, namespace: str, status: str | None, limit: int, all_pages: bool) -> None:
    """List runs: id, status, epoch, attempts, kind, last update."""

    async def use(store: Store) -> tuple[list[RunRecord], str]:
        found: list[RunRecord] = []
        cursor = None
        while True:
            page = await store.list(namespace, RunStatus(status) if status else None, limit, cursor)
            found.extend(page.records)
            cursor = page.next_cursor
            if not all_pages or cursor is None:
                break
        return found, ("" if found else await _elsewhere(store, namespace, status))

    records, hint = run(with_store(url, use, existing=True))
    if not records:
        which = f"{status} runs" if status else "runs"
        click.echo(f"no {which} in namespace {namespace!r} of {redact(url)}{hint}")
        return
    click.echo(f"{'RUN ID':<36} {'STATUS':<10} {'EPOCH':>5} {'TRIES':>5}  {'KIND':<20} UPDATED")
    for r in records:
        shown = "queued" if r.queued else r.status.value
        click.echo(
            f"{r.run_id:<36} {shown:<10} {r.epoch:>5} {r.attempts:>5}  "
            f"{r.kind:<20} {when(r.updated_at)}"
        )


async def _elsewhere(store: Store, namespace: str, status: str | None) -> str:
    """Where an empty listing's runs may be: the other namespaces that hold
    runs, for a backend that can list them (SQLite); else how to look."""
    if status is not None and (await store.list(namespace, None, 1)).records:
        return f" (it has runs of another status; drop --status {status} to see them)"
    namespaces = getattr(backend_of(store), "namespaces", None)
    if namespaces is None:
        return "; runs of another namespace are listed with -n NAMESPACE"
    others = {name: count for name, count in (await namespaces()).items() if name != namespace}
    if not others:
        return "; no namespace of this store holds runs"
    listed = ", ".join(f"{name!r} ({plural(count, 'run')})" for name, count in others.items())
    return f"; namespaces with runs: {listed} (list one with -n NAMESPACE)"


@runs.command(name="show")
@run_id_argument
@url_option
@namespace_option
def show_run(run_id: str, url: str, namespace: str) -> None:
    """Show one run: status, epoch, attempts, crashes, phases, transcript, usage."""
    stored = run(with_store(url, lambda store: store.load(run_id, namespace), existing=True))
    if stored is None:
        raise click.ClickException(f"no run {run_id!r} in namespace {namespace!r}")
    for label, value in _rows(stored):
        click.echo(f"{label + ':':<18} {value}")


def _rows(stored: StoredRun) -> list[tuple[str, str]]:
    r = stored.record
    rows = [
        ("run id", r.run_id),
        ("namespace", r.namespace),
        ("kind", r.kind),
        ("status", "queued (submitted, no worker yet)" if r.queued else r.status.value),
        ("epoch", str(r.epoch)),
        ("attempts", f"{r.attempts} (begin and every claim)"),
        ("crashes", f"{r.crashes} (claims after a worker died; the poison limit counts these)"),
        ("owner", _owner(r)),
        ("cancel requested", "yes" if r.cancel_requested else "no"),
        ("lease expires", "-" if r.status is RunStatus.WAITING else when(r.lease_expires_at)),
        ("created", when(r.created_at)),
        ("updated", when(r.updated_at)),
    ]
    if r.status is RunStatus.WAITING:
        rows += _waiting_rows(r)
    if r.status is RunStatus.COMPLETED:
        # complete() clears the saved progress and keeps the result: there
        # are no phases or messages left to count (the record holds no count).
        rows.append(("progress", "cleared on completion (phases and transcript are not kept)"))
        rows.append(("result", repr(r.result)))
        counts = usage_of(r)
    else:
        phases = stored.state.phases
        messages = plural(len(stored.state.history), "message")
        rows += [
            ("completed phases", ", ".join(p.name for p in phases) or "-"),
            ("transcript", f"{messages} since the last completed phase" if phases else messages),
        ]
        counts = usage.of_run(phases, usage.of_messages(stored.state.history))
    if counts:
        rows.append(("usage", ", ".join(f"{name} {count}" for name, count in counts.items())))
    if r.error is not None:
        rows.append(("error", r.error))
    return rows


def _owner(r: RunRecord) -> str:
    if r.status is RunStatus.WAITING:
        return f"none: a waiting run holds no worker (last: {r.owner or '-'})"
    return r.owner or "-"


def _waiting_rows(r: RunRecord) -> list[tuple[str, str]]:
    wait = r.wait if isinstance(r.wait, dict) else {}
    return [
        ("waiting for", f"{wait.get('request')!r} (tool {wait.get('tool')!r})"),
        ("wait times out", when(r.lease_expires_at) if r.lease_expires_at else "never"),
        ("deliver with", f"outlast runs send {r.run_id} JSON"),
    ]


@runs.command(name="wait")
@run_id_argument
@url_option
@namespace_option
@click.option(
    "--timeout", type=float, default=None, help="Seconds to wait at most (default: no limit)."
)
def wait_run(run_id: str, url: str, namespace: str, timeout: float | None) -> None:
    """Wait until a run is terminal; print its result (exit 1 if it failed, 2 on timeout)."""
    if timeout is not None and not timeout > 0:
        raise click.BadParameter("must be a positive number of seconds", param_hint="--timeout")

    async def use(store: Store) -> RunResult:
        return await Executor(store, namespace=namespace).result(run_id, timeout=timeout)

    try:
        finished = asyncio.run(with_store(url, use, existing=True))
    except RunFailed as exc:
        click.echo(f"{run_id}: failed: {exc.error}", err=True)
        sys.exit(1)
    except ResultTimeout as exc:
        click.echo(f"{run_id}: {exc}", err=True)
        sys.exit(2)
    except OutlastError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{run_id}: completed (epoch {finished.epoch}): {finished.output!r}")


@runs.command(name="send")
@run_id_argument
@click.argument("payload", metavar="JSON")
@url_option
@namespace_option
def send_run(run_id: str, payload: str, url: str, namespace: str) -> None:
    """Deliver input to a run waiting for it (see `runs list --status waiting`).

    JSON becomes the result of the tool call that asked; any worker then
    continues the run. Delivered once: a second send is an error.
    """
    try:
        value = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not JSON ({exc.msg} at character {exc.pos}); quote it for the shell, "
            """e.g. '{"approved": true}' or '"yes"'""",
            param_hint="JSON",
        ) from None

    async def use(store: Store) -> RunRecord:
        return await Executor(store, namespace=namespace).send(run_id, value)

    run(with_store(url, use, existing=True))
    click.echo(
        f"{run_id}: input delivered; the run is claimable and the next free worker "
        "(`outlast worker`) continues it"
    )


@runs.command(name="cancel")
@run_id_argument
@url_option
@namespace_option
def cancel_run(run_id: str, url: str, namespace: str) -> None:
    """Cancel a run: failed at once if nobody owns it, else by its worker at its next save."""
    record = run(with_store(url, lambda store: store.cancel(run_id, namespace), existing=True))
    if record.status is RunStatus.FAILED:
        click.echo(f"{run_id}: cancelled (nobody was running it)")
    else:
        click.echo(f"{run_id}: cancel requested; its worker {record.owner!r} stops it shortly")


@runs.command(name="delete")
@run_id_argument
@url_option
@namespace_option
def delete_run(run_id: str, url: str, namespace: str) -> None:
    """Delete a run and everything stored for it."""
    if not run(with_store(url, lambda store: store.delete(run_id, namespace), existing=True)):
        raise click.ClickException(f"no run {run_id!r} in namespace {namespace!r}")
    click.echo(f"deleted {run_id}")
