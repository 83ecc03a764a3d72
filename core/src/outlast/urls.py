"""Store URLs: parsing helpers, secret redaction and backend descriptions."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlsplit

from outlast.errors import ConfigurationError

DEFAULT_URL = "sqlite:///./.outlast/runs.db"
URL_ENV = "OUTLAST_URL"

KNOWN_PACKAGES: Mapping[str, str] = {
    "postgresql": "outlast-postgres",
    "postgres": "outlast-postgres",
    "redis": "outlast-redis",
    "rediss": "outlast-redis",
    "unix": "outlast-redis",
    "s3": "outlast-s3",
}
"""Which package serves the schemes of the first-party adapters."""

SECRET_WORDS = ("password", "passwd", "secret", "token", "key")
"""An option whose name contains one of these (any case) holds a secret."""

HIDDEN = "***"
"""What :func:`redact` shows in place of a secret."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_SPACE = re.compile(r"\s")
# name=value as a URL query, a libpq key=value string or a Python repr writes it;
# a quoted value runs to its closing quote, any other to the next '&' or blank.
_OPTION = re.compile(
    r"(?<![\w.%\-])(?P<name>[\w.%\-]+)(?P<equals>[ \t]*=[ \t]*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^&\s]*)"
)


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What ``outlast_backends`` returns for one backend."""

    name: str
    schemes: tuple[str, ...]
    package: str
    version: str
    capabilities: tuple[str, ...] = field(default=())


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased; ConfigurationError when it has none or
    cannot be split (an unclosed ``[``)."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:  # urlsplit's own texts ("Invalid IPv6 URL") hold no secret
        raise ConfigurationError(f"{redact(url)!r} is not a valid URL ({exc})") from exc
    if not scheme or "://" not in url:
        raise ConfigurationError(
            f"{redact(url)!r} is not a store URL; expected scheme://..., for example {DEFAULT_URL}"
        )
    return scheme


def redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret replaced by ``***``: safe for reprs, logs and errors.

    ``text`` is a URL, or any message that quotes URLs or options (a driver's
    error text, a repr). Hidden are:

    * the password of every URL in it, nested ones too
      (``s3://b?endpoint_url=http://user:***@host``): everything from the first
      ``:`` after ``scheme://`` to the last ``@`` before the next URL or blank,
      so a ``#``, ``?``, ``/``, ``@`` or ``%`` in the password cannot end it
      early (a URL whose query holds an ``@`` may lose more than its password);
    * the value of every option whose name contains password, passwd, secret,
      token or key, in any case, written ``name=value`` (a URL's query, a
      libpq ``key=value`` string, a repr), a quoted value up to its closing
      quote, any other up to the next ``&`` or blank;
    * each of ``secrets`` (the password a caller passed as a keyword option),
      also percent-encoded and percent-decoded.

    User names, hosts and other options are kept, so the text still says where.
    Never raises; text with nothing to hide comes back unchanged.
    """
    try:
        hidden = _hide_passwords(_hide_options(text))
        for secret in secrets:
            for form in {secret, quote(secret, safe=""), unquote(secret), unquote_plus(secret)}:
                if form:
                    hidden = hidden.replace(form, HIDDEN)
        return hidden
    except Exception:  # noqa: BLE001 - redaction must never be why an error report fails
        return "<text withheld: it could not be redacted>"


def _is_secret_option(name: str) -> bool:
    """Whether an option called ``name`` holds a secret (see :data:`SECRET_WORDS`)."""
    lowered = unquote(name).lower()
    return any(word in lowered for word in SECRET_WORDS)


def _hide_passwords(text: str) -> str:
    starts = list(_SCHEME.finditer(text))
    kept: list[str] = []
    done = 0
    for index, start in enumerate(starts):
        begin = start.end()
        end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
        blank = _SPACE.search(text, begin, end)
        end = blank.start() if blank else end
        at = text.rfind("@", begin, end)
        if at < 0 or begin < done:
            continue
        user, colon, password = text[begin:at].partition(":")
        if not colon or not password or user.startswith(("/", "[")):
            continue
        kept.append(text[done:begin] + user + ":" + HIDDEN)
        done = at
    kept.append(text[done:])
    return "".join(kept)


def _hide_options(text: str) -> str:
    def hide(match: re.Match[str]) -> str:
        # A repr's `key=None,` holds nothing to hide (and keeps its comma).
        if not _is_secret_option(match["name"]) or match["value"] in ("", "None,", "None)"):
            return match[0]
        return match["name"] + match["equals"] + HIDDEN

    return _OPTION.sub(hide, text)


def query_options(url: str) -> dict[str, str]:
    """The URL's query string as a dict (last value wins)."""
    try:
        return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    except ValueError as exc:
        raise ConfigurationError(f"{redact(url)!r} is not a valid URL ({exc})") from exc


def merge_options(url: str, options: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """URL query options overridden by keyword ``options``; unknown names rejected.

    Adapters use this so every backend reports a misspelled option the same
    way. Refused first: a ``#`` (no store reads a fragment; in a password or
    a nested URL it would cut it short) and a password holding a ``?`` or
    ``/`` that is not percent-encoded (URL parsers would read the rest of it
    as a query or a path, and an error could then echo it).
    """
    if "#" in url:
        raise ConfigurationError(
            f"{redact(url)!r} holds a '#', which would end the URL there (no store reads "
            "a fragment); percent-encode it as %23"
        )
    _refuse_reserved_characters_in_password(url)
    merged: dict[str, Any] = {**query_options(url), **options}
    unknown = sorted(set(merged) - known)
    if any("@" in name for name in unknown):  # `user:1234?56@host`: the rest of a password
        raise ConfigurationError(_RESERVED.format(redact(url)))
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} for {redact(url)!r}; "
            f"known options: {', '.join(sorted(known)) or 'none'}"
        )
    return merged


_RESERVED = (
    "{!r}: the password in this URL holds a character that URLs reserve; "
    "percent-encode it (# as %23, ? as %3F, / as %2F, @ as %40, % as %25)"
)


def _refuse_reserved_characters_in_password(url: str) -> None:
    """ConfigurationError for ``scheme://user:pa?ss@host``-like URLs.

    urlsplit ends the host part at the first ``/``, ``?`` or ``#``, so it
    reads ``user:pa`` as a host and a port. When an ``@`` follows (before any
    nested URL) and that "port" is not a number, the ``@`` ends a password
    holding one of those characters.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    netloc = parts.netloc
    if "@" in netloc or ":" not in netloc or netloc.endswith("]"):
        return
    rest = url[url.find("://") + 3 + len(netloc) :]
    nested = _SCHEME.search(rest)
    if "@" in (rest[: nested.start()] if nested else rest) and not _is_port(netloc):
        raise ConfigurationError(_RESERVED.format(redact(url)))


def _is_port(netloc: str) -> bool:
    return netloc.rpartition(":")[2].isdigit()
