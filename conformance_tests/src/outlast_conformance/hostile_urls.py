"""Hostile store URLs: one table of secrets placed where parsers let them leak.

Every store's tests (first-party and third-party) check the same promise:
whatever a user does with a URL holding a password, no repr, error or log line
shows the password. The table builds, from one URL of the store's own (a
server that refuses connections, a temporary path), a URL per place a secret
hides:

* the password of ``scheme://user:PASSWORD@host`` (and ``:PASSWORD@``), for
  every password in :data:`PASSWORDS`: plain, or holding a ``#``, ``?``,
  ``@``, ``/``, a bare ``%`` or percent-escapes (``%23``), each written into
  the URL as it is;
* each option named like a secret (:data:`SECRET_OPTIONS`: password,
  sslpassword, ssl_keyfile_password, ...) with each of those passwords as
  its value;
* a password inside a URL nested in an option (``endpoint_url=http://u:PW@h``);
* a password beside an unknown option, beside a bad option value (the
  store's own, e.g. ``connect_timeout=soon``), and in a URL no parser can
  split (``[::1``).

A store's test opens each one with :func:`exercise` and checks what a user
could see with :func:`assert_no_secret`::

    import pytest
    from outlast_conformance.hostile_urls import (
        HostileUrl, assert_no_secret, exercise, hostile_urls,
    )

    @pytest.mark.asyncio
    @pytest.mark.parametrize("hostile", hostile_urls("mystore://127.0.0.1:1/db"), ids=str)
    async def test_no_secret_is_shown(hostile: HostileUrl) -> None:
        assert_no_secret(await exercise(hostile.url), hostile.secret)

The secrets are written so that any leaked piece of one is found: each is
two distinctive six-character words around the hostile characters, and
:func:`assert_no_secret` looks for the whole secret, its percent-decoded
form and each word.
"""

from __future__ import annotations

import asyncio
import logging
import re
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus

import outlast
from outlast.adapter import RunStart

PASSWORDS: dict[str, str] = {
    "plain": "Zx81qWLm55vT",
    "hash": "Zx81qW#Lm55vT",
    "question": "Zx81qW?Lm55vT",
    "at": "Zx81qW@Lm55vT",
    "slash": "Zx81qW/Lm55vT",
    "percent": "Zx81qW%Lm55vT",
    "escaped": "Zx81qW%23%3F%40Lm55vT",
}
"""Passwords by name, each written into URLs exactly as shown (none is
percent-encoded for the URL; ``escaped`` holds escapes that decode to
``#?@``)."""

SECRET_OPTIONS = (
    "password",
    "PASSWORD",
    "sslpassword",
    "ssl_keyfile_password",
    "passwd",
    "client_secret",
    "api_token",
    "aws_secret_access_key",
)
"""Query options named like secrets (some a store knows, most it rejects)."""

NESTED_OPTION = "endpoint_url"
"""The option that carries a URL with a password in it."""

UNKNOWN_OPTION = "no_such_option=1"
"""An option no store knows: its error must not show the URL's password."""

EXERCISE_WITHIN = 60.0
"""Seconds :func:`exercise` allows a store to fail or succeed, at most."""

_WORD = re.compile(r"[A-Za-z0-9]{4,}")


@dataclass(frozen=True, slots=True)
class HostileUrl:
    """A URL with ``secret`` in it; ``name`` says where (the test id)."""

    name: str
    url: str
    secret: str

    def __str__(self) -> str:
        return self.name


def hostile_urls(base: str, *, bad_value: str | None = None) -> list[HostileUrl]:
    """The table, built from ``base`` (a URL of the store, without a password).

    ``bad_value`` (``"connect_timeout=soon"``) is a known option with a value
    the store refuses; the table then holds a password beside it too.
    """
    scheme, _, rest = base.partition("://")
    rest = rest.rpartition("@")[2] if "@" in rest.split("/", 1)[0] else rest
    joiner = "&" if "?" in rest else "?"
    table: list[HostileUrl] = []
    for kind, password in PASSWORDS.items():
        with_password = f"{scheme}://user:{password}@{rest}"
        table.append(HostileUrl(f"userinfo-{kind}", with_password, password))
        table.append(HostileUrl(f"no-user-{kind}", f"{scheme}://:{password}@{rest}", password))
        for option in SECRET_OPTIONS:
            url = f"{base}{joiner}{option}={password}"
            table.append(HostileUrl(f"option-{option}-{kind}", url, password))
        nested = f"{NESTED_OPTION}=http://user:{password}@127.0.0.1:9"
        table.append(HostileUrl(f"nested-{kind}", f"{base}{joiner}{nested}", password))
        unknown = f"{with_password}{joiner}{UNKNOWN_OPTION}"
        table.append(HostileUrl(f"unknown-option-{kind}", unknown, password))
        if bad_value is not None:
            bad = f"{with_password}{joiner}{bad_value}"
            table.append(HostileUrl(f"bad-value-{kind}", bad, password))
    plain = PASSWORDS["plain"]
    table.append(HostileUrl("unparseable", f"{scheme}://user:{plain}@[::1/x", plain))
    return table


def secret_pieces(secret: str) -> list[str]:
    """What must not appear for ``secret`` to stay hidden: the secret as
    written, percent-decoded, and each run of 4 or more letters and digits."""
    forms = {secret, unquote(secret), unquote_plus(secret)}
    for form in list(forms):
        forms.update(_WORD.findall(form))
    return sorted(forms, key=lambda form: (-len(form), form))


def assert_no_secret(texts: str | Iterable[str], secret: str, *, case: str = "") -> None:
    """Fail, naming the piece and the text, if any text shows any piece of ``secret``.

    ``texts`` is one text or many (reprs, error messages, tracebacks, log
    lines); ``case`` (a hostile URL's name) starts the failure message. Pieces
    are those of :func:`secret_pieces`, so ``secret`` must be made of
    distinctive words (like :data:`PASSWORDS`): a common word would be found
    in innocent text.
    """
    prefix = f"{case}: " if case else ""
    for text in [texts] if isinstance(texts, str) else texts:
        for piece in secret_pieces(secret):
            assert piece not in text, f"{prefix}the secret's piece {piece!r} is shown in: {text!r}"


async def exercise(url: str, **options: Any) -> list[str]:
    """Use ``url`` as a user would; return every text that could reach them.

    Opens it with :func:`outlast.open` (with keyword ``options``), loads a
    run, begins one and closes the store, stopping at the first error. The
    texts are: the store's repr, each error's message, repr and traceback
    (its causes included), and every log line at DEBUG and above, from any
    logger, meanwhile. An error that is not an :class:`outlast.OutlastError`
    fails (with AssertionError): stores raise only outlast's errors.
    """
    texts: list[str] = []
    with _logged(texts):
        try:
            store = outlast.open(url, **options)
        except Exception as exc:  # noqa: BLE001 - every error's text is checked below
            _note(texts, exc)
            return texts
        texts += [repr(store), repr(store.backend)]
        try:
            async with asyncio.timeout(EXERCISE_WITHIN):
                await store.load("hostile-url-probe")
                await store.begin(RunStart(run_id="hostile-url-probe", kind="hostile"))
        except Exception as exc:  # noqa: BLE001 - as above
            _note(texts, exc)
        finally:
            await store.close()
    return texts


def _note(texts: list[str], exc: Exception) -> None:
    texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    assert isinstance(exc, outlast.OutlastError), (
        f"{type(exc).__name__} escaped, not an outlast error: {texts[-1]}"
    )


@contextmanager
def _logged(texts: list[str]) -> Iterator[None]:
    """Every log record of any logger, formatted with its traceback, into ``texts``."""

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            texts.append(self.format(record))

    root = logging.getLogger()
    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
