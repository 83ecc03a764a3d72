"""What every ``outlast`` command shares: its options, opening the store, errors.

Every command takes ``--url`` (default ``$OUTLAST_URL``, else the local
SQLite file); its ``--help`` shows the URL that would be used, password
redacted. Commands that act on runs that already exist open a SQLite store
with ``create=False``, so a mistyped path is reported, never created.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import pluggy

from outlast import ids
from outlast.errors import ConfigurationError, OutlastError
from outlast.events import Event
from outlast.hookspecs import hookimpl
from outlast.plugins import open as open_store
from outlast.plugins import plugin_manager
from outlast.ports import DEFAULT_NAMESPACE, CheckpointerFactory
from outlast.store import Store
from outlast.urls import DEFAULT_URL, URL_ENV, redact, scheme_of

T = TypeVar("T")


class UrlOption(click.Option):
    """``--url``, whose help shows the default in effect when it is shown:
    ``$OUTLAST_URL`` (redacted) when set, else the built-in one."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        spec, text = record
        from_env = os.environ.get(URL_ENV)
        default = f"{redact(from_env)} (from ${URL_ENV})" if from_env else DEFAULT_URL
        return spec, f"{text}  [default: {default}]"


url_option = click.option(
    "--url",
    cls=UrlOption,
    envvar=URL_ENV,
    default=DEFAULT_URL,
    show_default=False,  # UrlOption shows it, from the environment of the --help
    help=f"Store URL (or ${URL_ENV}).",
)


def checked(check: Callable[[object], str]) -> Callable[[click.Context, click.Parameter, str], str]:
    """A click callback applying one of :mod:`outlast.ids`' checks: a bad
    name is a usage error naming the rule, not a ValueError traceback."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
        try:
            return check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc

    return callback


namespace_option = click.option(
    "--namespace",
    "-n",
    default=DEFAULT_NAMESPACE,
    show_default=True,
    callback=checked(ids.check_namespace),
    help="Run namespace.",
)
run_id_argument = click.argument("run_id", callback=checked(ids.check_run_id))


def limit_option(default: int, text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--limit N``, an integer of at least 1; ``text`` is its help."""
    return click.option(
        "--limit", type=click.IntRange(min=1), default=default, show_default=True, help=text
    )


# -- logging (-v) -----------------------------------------------------------------

events_log = logging.getLogger("outlast.events")


class EventLog:
    """Logs every durable-run event at INFO: what ``-v`` shows of a run.

    The executor reports each store operation (begin, save, claim, complete,
    fail, release, lease_lost) to ``outlast_event`` observers; this one turns
    them into log lines.
    """

    @hookimpl
    def outlast_event(self, event: Event) -> None:
        failed = f": {event.error}" if event.error else ""
        events_log.info(
            "run %s epoch %d: %s (%.1f ms)%s",
            event.run_id,
            event.epoch,
            event.kind.value,
            event.duration * 1000,
            failed,
        )


_EVENT_LOG = "outlast.cli.events"


def configure_logging(verbose: bool) -> None:
    """WARNING and up from everything; with ``verbose``, INFO from outlast
    and its backends' packages too, and a line per durable-run event (stderr)."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        return
    manager = plugin_manager()
    if manager.has_plugin(_EVENT_LOG):
        return
    # outlast's loggers and those of the installed backends (outlast_postgres,
    # outlast.redis...) only: another library's INFO stays quiet.
    loggers = [logging.getLogger(name) for name in _outlast_logger_names(manager)]
    for logger in loggers:
        logger.setLevel(logging.INFO)
    manager.register(EventLog(), name=_EVENT_LOG)
    click.get_current_context().call_on_close(lambda: _quiet_again(manager, loggers))


def _outlast_logger_names(manager: pluggy.PluginManager) -> set[str]:
    """``outlast`` and the top-level package of every registered backend plugin."""
    names = {"outlast"}
    for plugin in manager.get_plugins():
        module = getattr(plugin, "__name__", None)
        if isinstance(module, str):
            names.add(module.split(".")[0])
    return names


def _quiet_again(manager: pluggy.PluginManager, loggers: list[logging.Logger]) -> None:
    """Undo configure_logging(True) when the command ends (tests invoke many)."""
    plugin = manager.get_plugin(_EVENT_LOG)
    if plugin is not None:
        manager.unregister(plugin)
    for logger in loggers:
        logger.setLevel(logging.NOTSET)


def _verbose_callback(ctx: click.Context, _param: click.Parameter, verbose: bool) -> None:
    if verbose and not ctx.resilient_parsing:
        configure_logging(True)


verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    expose_value=False,
    callback=_verbose_callback,
    help="Log outlast's INFO messages (as `outlast -v COMMAND`).",
)


# -- running a command --------------------------------------------------------------


def run(coro: Awaitable[T]) -> T:
    """Run ``coro``; an outlast error becomes a one-line error (exit 1)."""

    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except OutlastError as exc:
        raise click.ClickException(str(exc)) from exc


def open_url(url: str, *, existing: bool = False) -> Store:
    """The store at ``url``. ``existing``: the command acts on runs already
    stored, so a SQLite file that does not exist is an error, not created."""
    options: dict[str, Any] = {}
    try:
        if existing and scheme_of(url) == "sqlite":
            options["create"] = False
    except ConfigurationError:
        pass  # open() reports a malformed URL in its own words
    return open_store(url, **options)


async def with_store(
    url: str, use: Callable[[Store], Awaitable[T]], *, existing: bool = False
) -> T:
    """``use(store)`` on the store at ``url``, closed afterwards."""
    store = open_url(url, existing=existing)
    try:
        return await use(store)
    finally:
        await store.close()


def backend_of(store: CheckpointerFactory) -> object:
    """The backend's own object behind a Store (``SqliteStore``...)."""
    return store.backend if isinstance(store, Store) else store


# -- words ---------------------------------------------------------------------------


def when(timestamp: float | None) -> str:
    """A POSIX time as UTC text, or ``-``."""
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: float) -> str:
    """``45s``, ``3m 20s``, ``2h 5m``: a wait in words."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


def plural(count: int, noun: str) -> str:
    """``1 run``, ``3 runs``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
