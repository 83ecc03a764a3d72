"""Helpers the PostgreSQL tests share (a module name no other test folder uses)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def with_options(url: str, **options: object) -> str:
    """``url`` with ``options`` added to (or replacing those of) its query."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({key: str(value) for key, value in options.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))
