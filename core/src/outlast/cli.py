"""The ``outlast`` command line (click).

The commands live by what they do: :mod:`outlast.cli_runs` (``outlast
runs ...``), :mod:`outlast.cli_recover` (``outlast recover``), and here the
group, ``backends``, ``worker``, ``gc``, ``migrate`` and ``demo``. What every
command shares (``--url``, opening the store, errors) is
:mod:`outlast.cli_options`; loading the user's ``module:object`` is
:mod:`outlast.cli_app`.
"""

from __future__ import annotations

import asyncio
import os
import signal

import click
from click.core import ParameterSource

from outlast.cli_app import load_app
from outlast.cli_options import (
    configure_logging,
    namespace_option,
    run,
    url_option,
    verbose_option,
    with_store,
)
from outlast.cli_recover import recover
from outlast.cli_runs import runs
from outlast.errors import ConfigurationError, OutlastError
from outlast.plugins import backends, broken_plugins, unknown_backend
from outlast.retention import parse_duration
from outlast.store import Store
from outlast.urls import URL_ENV, redact, scheme_of
from outlast.worker import WorkerStats


@click.group()
@click.option(
    "-v", "--verbose", is_flag=True, help="Log outlast's INFO messages (and every durable step)."
)
@click.version_option(package_name="outlast")
def main(verbose: bool) -> None:
    """outlast: LLM-agent runs that outlast the process running them.

    Every command takes --url (default: $OUTLAST_URL, else the SQLite file
    ./.outlast/runs.db).
    """
    configure_logging(verbose)


main.add_command(runs)
main.add_command(recover)


@main.command()
@url_option
@verbose_option
def demo(url: str) -> None:
    """Run a plan, stop its worker mid-phase (SIGTERM, then kill -9), recover it here."""
    from outlast.demo import run_demo

    run(run_demo(url))


@main.command(name="backends")
@url_option
@click.pass_context
def list_backends(ctx: click.Context, url: str) -> None:
    """List the installed backends, their URL schemes and versions, and which
    one serves --url."""
    installed = backends()
    for info in installed:
        schemes = ", ".join(f"{s}://" for s in info.schemes)
        extra = f"  [{', '.join(info.capabilities)}]" if info.capabilities else ""
        click.echo(f"{info.name:<10} {schemes:<32} {info.package} {info.version}{extra}")
    for broken in broken_plugins():
        click.echo(f"{broken.name:<10} BROKEN ({broken.value}): {broken.error}", err=True)
    given = ctx.get_parameter_source("url")
    if given is ParameterSource.COMMANDLINE:
        source = "--url"
    elif given is ParameterSource.ENVIRONMENT:
        source = f"${URL_ENV}"
    else:
        source = "the default URL"
    try:
        scheme = scheme_of(url)
    except ConfigurationError as exc:
        raise click.ClickException(f"{source}: {exc}") from exc
    serving = next((info for info in installed if scheme in info.schemes), None)
    if serving is None:
        raise click.ClickException(f"{source} {redact(url)}: {unknown_backend(scheme)}")
    click.echo(f"\n{source} {redact(url)} is served by {serving.name} ({serving.package})")


@main.command()
@click.argument("app")
@url_option
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs at once.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds between looks for work when the store does not notify.",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for running runs to be released on shutdown.",
)
@verbose_option
def worker(
    app: str, url: str, concurrency: int, poll_interval: float, drain_timeout: float
) -> None:
    """Work as a long-running worker for APP (module:object, as for recover).

    Claims queued and interrupted runs of the kinds APP registers, runs up to
    --concurrency at once, and keeps going through store outages. SIGTERM or
    SIGINT: stop claiming, release the running runs, exit 0; a second signal
    exits at once.
    """

    async def use(store: Store) -> WorkerStats:
        executor = load_app(app, store)
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

    stats = run(with_store(url, use))
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
    removed = run(with_store(url, lambda store: store.purge(seconds, namespace), existing=True))
    click.echo(f"removed {removed} terminal run(s) older than {older_than} from {namespace!r}")


@main.command()
@click.argument("url_argument", metavar="[URL]", required=False)
@url_option
@click.pass_context
def migrate(ctx: click.Context, url_argument: str | None, url: str) -> None:
    """Create or upgrade the store's schema (idempotent; stores without one need nothing).

    The URL is --url (or $OUTLAST_URL), or, as before, the argument URL.
    """
    if url_argument is not None:
        given = ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE
        if given and url_argument != url:
            raise click.UsageError("give the URL once: as the argument or as --url, not both")
        url = url_argument

    async def use(store: Store) -> bool:
        step = getattr(store.backend, "migrate", None)
        if step is None:
            return False
        await step()
        return True

    if run(with_store(url, use)):
        click.echo(f"{redact(url)}: schema is up to date")
    else:
        click.echo(f"{redact(url)}: this backend has no schema to migrate")


if __name__ == "__main__":
    main()
