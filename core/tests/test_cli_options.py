"""What every ``outlast`` command shares: --url everywhere (and what --help
says of it), limits, and a URL scheme typo."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import outlast
from outlast.cli import main
from outlast.errors import UnknownBackend
from outlast.urls import DEFAULT_URL, URL_ENV


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command of ``group``, as the words that name it."""
    found: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def command_of(words: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for word in words:
        assert isinstance(command, click.Group)
        command = command.commands[word]
    return command


@pytest.mark.parametrize("words", commands(main), ids=" ".join)
def test_every_command_takes_url(words: tuple[str, ...]) -> None:
    assert "--url" in [opt for p in command_of(words).params for opt in p.opts]


@pytest.mark.parametrize("words", [("runs", "list"), ("recover",), ("migrate",), ("backends",)])
def test_help_shows_the_url_from_the_environment_redacted(words: tuple[str, ...]) -> None:
    from_env = "postgresql://alice:s3cret@db.example/runs"
    shown = CliRunner().invoke(main, [*words, "--help"], env={URL_ENV: from_env})
    assert shown.exit_code == 0, shown.output
    text = "".join(shown.output.split())  # help text wraps anywhere, even inside a word
    assert f"[default:postgresql://alice:***@db.example/runs(from${URL_ENV})]" in text
    assert "s3cret" not in text
    assert DEFAULT_URL not in text
    plain = CliRunner().invoke(main, [*words, "--help"], env={URL_ENV: None})
    assert f"[default:{DEFAULT_URL}]" in "".join(plain.output.split())


def test_migrate_takes_the_url_as_argument_or_option(tmp_path: Path) -> None:
    runner = CliRunner()
    as_argument = runner.invoke(main, ["migrate", f"sqlite:///{tmp_path}/a/runs.db"])
    assert as_argument.exit_code == 0, as_argument.output
    assert "schema is up to date" in as_argument.output
    assert (tmp_path / "a" / "runs.db").is_file()
    as_option = runner.invoke(main, ["migrate", "--url", f"sqlite:///{tmp_path}/b/runs.db"])
    assert as_option.exit_code == 0, as_option.output
    assert (tmp_path / "b" / "runs.db").is_file()
    from_env = runner.invoke(main, ["migrate"], env={URL_ENV: "memory://"})
    assert "memory://: this backend has no schema to migrate" in from_env.output
    both = runner.invoke(main, ["migrate", "memory://", "--url", "memory://other"])
    assert both.exit_code == 2
    assert "give the URL once" in both.output


def test_backends_says_which_backend_serves_the_url() -> None:
    runner = CliRunner()
    served = runner.invoke(main, ["backends", "--url", "sqlite:///x.db"])
    assert served.exit_code == 0, served.output
    assert "--url sqlite:///x.db is served by sqlite (outlast)" in served.output
    from_env = runner.invoke(main, ["backends"], env={URL_ENV: "memory://:pw@x"})
    assert "$OUTLAST_URL memory://" in from_env.output
    assert ":pw@" not in from_env.output
    typo = runner.invoke(main, ["backends", "--url", "sqllite:///x.db"])
    assert typo.exit_code == 1
    assert "sqlite     sqlite://" in typo.output  # the listing still comes first
    assert "(did you mean 'sqlite'?)" in typo.output


@pytest.mark.parametrize("limit", ["0", "-3"])
@pytest.mark.parametrize("words", [("runs", "list"), ("recover", "app:app")])
def test_a_limit_below_1_is_rejected(words: tuple[str, ...], limit: str) -> None:
    result = CliRunner().invoke(main, [*words, "--url", "memory://", "--limit", limit])
    assert result.exit_code == 2
    assert f"Invalid value for '--limit': {limit} is not in the range x>=1" in result.output


@pytest.mark.parametrize(("typo", "meant"), [("postgress", "postgres"), ("sqllite", "sqlite")])
def test_a_scheme_typo_gets_did_you_mean(typo: str, meant: str) -> None:
    with pytest.raises(UnknownBackend) as raised:
        outlast.open(f"{typo}://user:pw@host/db")
    assert raised.value.suggestion == meant
    assert f"(did you mean {meant!r}?)" in str(raised.value)
    result = CliRunner().invoke(main, ["runs", "list", "--url", f"{typo}://user:pw@host/db"])
    assert result.exit_code == 1
    assert f"URL scheme {typo!r} (did you mean {meant!r}?)" in result.output
    assert ":pw@" not in result.output


def test_an_unknown_scheme_without_a_close_match_suggests_nothing() -> None:
    with pytest.raises(UnknownBackend) as raised:
        outlast.open("mongodb://localhost/0")
    assert raised.value.suggestion is None
    assert "did you mean" not in str(raised.value)
    assert "install the package that provides it" in str(raised.value)
