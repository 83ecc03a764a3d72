"""The ``outlast`` command line (click)."""

from __future__ import annotations

import asyncio
import datetime
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from outlast.errors import OutlastError, ResultTimeout, RunFailed
from outlast.executor import Executor
from outlast.plugins import backends, broken_plugins
from outlast.plugins import open as open_store
from outlast.ports import DEFAULT_NAMESPACE, CheckpointerFactory, RunRecord, RunStatus
from outlast.retention import parse_duration
from outlast.runs import RunResult
from outlast.urls import DEFAULT_URL, URL_ENV, redact
from outlast.worker import WorkerStats

T = TypeVar("T")

url_option = click.option(
    "--url",
    envvar=URL_ENV,
    default=DEFAULT_URL,
    show_default=True,
    help=f"Store URL (or ${URL_ENV}).",
)
namespace_option = click.option(
    "--namespace", "-n", default=DEFAULT_NAMESPACE, show_default=True, help="Run namespace."
)


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except OutlastError as exc:
        raise click.ClickException(str(exc)) from exc


async def _with_store(url: str, use: Callable[[CheckpointerFactory], Awaitable[T]]) -> T:
    store = open_store(url)
    try:
        return await use(store)
    finally:
        await store.close()


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log outlast's INFO messages.")
@click.version_option(package_name="outlast")
def main(verbose: bool) -> None:
    """outlast: LLM-agent runs that outlast the process running them."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@main.command()
@url_option
def demo(url: str) -> None:
    """Run a plan, SIGTERM its worker mid-phase, recover it in this process."""
    from outlast.demo import run_demo

    _run(run_demo(url))


@main.command(name="backends")
def list_backends() -> None:
    """List the installed backends, their URL schemes and versions."""
    for info in backends():
        schemes = ", ".join(f"{s}://" for s in info.schemes)
        extra = f"  [{', '.join(info.capabilities)}]" if info.capabilities else ""
        click.echo(f"{info.name:<10} {schemes:<32} {info.package} {info.version}{extra}")
    for broken in broken_plugins():
        click.echo(f"{broken.name:<10} BROKEN ({broken.value}): {broken.error}", err=True)


@main.group()
def runs() -> None:
    """Inspect and delete stored runs."""


@runs.command(name="list")
@url_option
@namespace_option
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), default=None)
@click.option("--limit", default=50, show_default=True, help="Runs per page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow every page.")
def list_runs(url: str, namespace: str, status: str | None, limit: int, all_pages: bool) -> None:
    """List runs: id, status, epoch, attempts, kind, last update."""

    async def use(store: CheckpointerFactory) -> list[RunRecord]:
        found: list[RunRecord] = []
        cursor = None
        while True:
            page = await store.list(namespace, RunStatus(status) if status else None, limit, cursor)
            found.extend(page.records)
            cursor = page.next_cursor
            if not all_pages or cursor is None:
                return found

    records = _run(_with_store(url, use))
    if not records:
        click.echo(f"no runs in namespace {namespace!r} of {redact(url)}")
        return
    click.echo(f"{'RUN ID':<36} {'STATUS':<10} {'EPOCH':>5} {'TRIES':>5}  {'KIND':<20} UPDATED")
    for r in records:
        status = "queued" if r.queued else r.status.value
        click.echo(
            f"{r.run_id:<36} {status:<10} {r.epoch:>5} {r.attempts:>5}  "
            f"{r.kind:<20} {_when(r.updated_at)}"
        )


@runs.command(name="show")
@click.argument("run_id")
@url_option
@namespace_option
def show_run(run_id: str, url: str, namespace: str) -> None:
    """Show one run: status, epoch, attempts, phases, transcript length."""
    stored = _run(_with_store(url, lambda store: store.load(run_id, namespace)))
    if stored is None:
        raise click.ClickException(f"no run {run_id!r} in namespace {namespace!r}")
    r = stored.record
    rows = [
        ("run id", r.run_id),
        ("namespace", r.namespace),
        ("kind", r.kind),
        ("status", "queued (submitted, no worker yet)" if r.queued else r.status.value),
        ("epoch", str(r.epoch)),
        ("attempts", f"{r.attempts} (begin and every claim)"),
        ("crashes", f"{r.crashes} (claims after a worker died; the poison limit counts these)"),
        ("owner", r.owner or "-"),
        ("cancel requested", "yes" if r.cancel_requested else "no"),
        ("lease expires", _when(r.lease_expires_at)),
        ("created", _when(r.created_at)),
        ("updated", _when(r.updated_at)),
        ("completed phases", ", ".join(p.name for p in stored.state.phases) or "-"),
        ("transcript", f"{len(stored.state.history)} messages"),
    ]
    if r.error is not None:
        rows.append(("error", r.error))
    if r.status is RunStatus.COMPLETED:
        rows.append(("result", repr(r.result)))
    for label, value in rows:
        click.echo(f"{label + ':':<18} {value}")


@runs.command(name="wait")
@click.argument("run_id")
@url_option
@namespace_option
@click.option(
    "--timeout", type=float, default=None, help="Seconds to wait at most (default: no limit)."
)
def wait_run(run_id: str, url: str, namespace: str, timeout: float | None) -> None:
    """Wait until a run is terminal; print its result (exit 1 if it failed, 2 on timeout)."""
    if timeout is not None and not timeout > 0:
        raise click.BadParameter("must be a positive number of seconds", param_hint="--timeout")

    async def use(store: CheckpointerFactory) -> RunResult:
        return await Executor(store, namespace=namespace).result(run_id, timeout=timeout)

    try:
        finished = asyncio.run(_with_store(url, use))
    except RunFailed as exc:
        click.echo(f"{run_id}: failed: {exc.error}", err=True)
        sys.exit(1)
    except ResultTimeout as exc:
        click.echo(f"{run_id}: {exc}", err=True)
        sys.exit(2)
    except OutlastError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{run_id}: completed (epoch {finished.epoch}): {finished.output!r}")


@runs.command(name="cancel")
@click.argument("run_id")
@url_option
@namespace_option
def cancel_run(run_id: str, url: str, namespace: str) -> None:
    """Cancel a run: failed at once if nobody owns it, else by its worker at its next save."""
    record = _run(_with_store(url, lambda store: store.cancel(run_id, namespace)))
    if record.status is RunStatus.FAILED:
        click.echo(f"{run_id}: cancelled (nobody was running it)")
    else:
        click.echo(f"{run_id}: cancel requested; its worker {record.owner!r} stops it shortly")


@runs.command(name="delete")
@click.argument("run_id")
@url_option
@namespace_option
def delete_run(run_id: str, url: str, namespace: str) -> None:
    """Delete a run and everything stored for it."""
    if not _run(_with_store(url, lambda store: store.delete(run_id, namespace))):
        raise click.ClickException(f"no run {run_id!r} in namespace {namespace!r}")
    click.echo(f"deleted {run_id}")


def _load_app(spec: str, store: CheckpointerFactory) -> Executor:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{spec!r} is not module:object", param_hint="APP")
    sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="APP") from exc
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise click.BadParameter(f"{module_name!r} has no {attribute!r}", param_hint="APP")
    if isinstance(target, Executor):
        if target.store is None:
            target.store = store
        return target
    if callable(target):
        built = target(store)
        if isinstance(built, Executor):
            return built
    raise click.BadParameter(
        f"{spec} must be an Executor or a callable taking the store and returning one",
        param_hint="APP",
    )


@main.command()
@click.argument("app")
@url_option
@click.option("--limit", default=100, show_default=True, help="Most runs to recover.")
def recover(app: str, url: str, limit: int) -> None:
    """Claim and continue interrupted runs of APP (module:object: an Executor,
    or a callable taking the store and returning one)."""

    async def use(store: CheckpointerFactory) -> int:
        executor = _load_app(app, store)
        candidates = await (executor.store or store).interrupted(executor.namespace, limit)
        click.echo(f"{len(candidates)} interrupted run(s) in namespace {executor.namespace!r}")
        with click.progressbar(length=len(candidates), label="recovering") as bar:

            def progress(record: RunRecord, outcome: str) -> None:
                bar.update(1)
                click.echo(f"  {record.run_id}: {outcome}")

            with executor.handle_signals():
                report = await executor.recover(limit=limit, progress=progress)
        for run_id, error in report.errors.items():
            click.echo(f"  {run_id}: {type(error).__name__}: {error}", err=True)
        for run_id, error in report.left.items():
            click.echo(f"  {run_id}: left running: {type(error).__name__}: {error}", err=True)
        for run_id, reason in report.skipped.items():
            click.echo(f"  {run_id}: skipped: {reason}", err=True)
        click.echo(
            f"recovered {len(report.results)}, failed {len(report.errors)}, "
            f"released {len(report.released)}, left running {len(report.left)}, "
            f"skipped {len(report.skipped)}"
        )
        return 1 if report.errors or report.left else 0

    sys.exit(_run(_with_store(url, use)))


@main.command()
@click.argument("app")
@url_option
@click.option("--concurrency", "-c", default=1, show_default=True, help="Runs at once.")
@click.option(
    "--poll-interval",
    default=1.0,
    show_default=True,
    help="Seconds between looks for work when the store does not notify.",
)
@click.option(
    "--drain-timeout",
    default=30.0,
    show_default=True,
    help="Seconds to wait for running runs to be released on shutdown.",
)
def worker(
    app: str, url: str, concurrency: int, poll_interval: float, drain_timeout: float
) -> None:
    """Work as a long-running worker for APP (module:object, as for recover).

    Claims queued and interrupted runs of the kinds APP registers, runs up to
    --concurrency at once, and keeps going through store outages. SIGTERM or
    SIGINT: stop claiming, release the running runs, exit 0; a second signal
    exits at once.
    """
    if concurrency < 1:
        raise click.BadParameter("must be at least 1", param_hint="--concurrency")

    async def use(store: CheckpointerFactory) -> WorkerStats:
        executor = _load_app(app, store)
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)

        def on_signal() -> None:
            if executor.shutting_down:
                click.echo("outlast worker: second signal, exiting now", err=True)
                os._exit(1)
            click.echo("outlast worker: shutting down, releasing running runs", err=True)
            executor.shutdown()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
        click.echo(
            f"outlast worker {executor.owner}: kinds {', '.join(executor.kinds) or '(none)'} "
            f"of namespace {executor.namespace!r} on {redact(url)}, {concurrency} at a time"
        )
        try:
            return await executor.serve(
                concurrency=concurrency,
                poll_interval=poll_interval,
                drain_timeout=drain_timeout,
            )
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    stats = _run(_with_store(url, use))
    ended = ", ".join(f"{outcome} {count}" for outcome, count in sorted(stats.ended.items()))
    click.echo(f"outlast worker: stopped; claimed {stats.claimed} ({ended or 'none ended'})")


@main.command()
@url_option
@namespace_option
@click.option(
    "--older-than", default="7d", show_default=True, help="Age of terminal runs to remove."
)
def gc(url: str, namespace: str, older_than: str) -> None:
    """Retention: delete completed and failed runs older than --older-than."""
    try:
        seconds = parse_duration(older_than)
    except OutlastError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    removed = _run(_with_store(url, lambda store: store.purge(seconds, namespace)))
    click.echo(f"removed {removed} terminal run(s) older than {older_than} from {namespace!r}")


@main.command()
@click.argument("url", envvar=URL_ENV)
def migrate(url: str) -> None:
    """Create or upgrade the store's schema (idempotent; stores without one need nothing)."""

    async def use(store: CheckpointerFactory) -> bool:
        step = getattr(getattr(store, "backend", store), "migrate", None)
        if step is None:
            return False
        await step()
        return True

    if _run(_with_store(url, use)):
        click.echo(f"{redact(url)}: schema is up to date")
    else:
        click.echo(f"{redact(url)}: this backend has no schema to migrate")


if __name__ == "__main__":
    main()
