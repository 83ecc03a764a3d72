"""URL and option handling: validated up front, never connecting, never showing the password."""

from __future__ import annotations

import pytest

import outlast
from outlast import ConfigurationError
from outlast_postgres import PostgresStore

URL = "postgresql://alice:hunter2-secret@db.example:5433/app"


def test_outlast_open_serves_both_url_schemes_without_connecting() -> None:
    for scheme in ("postgresql", "postgres"):
        store = outlast.open(f"{scheme}://alice:hunter2-secret@db.invalid/app")
        assert isinstance(store, outlast.Store)
        assert isinstance(store.backend, PostgresStore)


def test_backends_lists_postgres() -> None:
    [info] = [b for b in outlast.backends() if b.name == "postgres"]
    assert info.schemes == ("postgresql", "postgres")
    assert info.package == "outlast-postgres"


def test_repr_and_config_never_show_the_password() -> None:
    store = PostgresStore(URL + "?schema=agents&pool_max_size=4")
    assert "hunter2-secret" not in repr(store)
    assert "hunter2-secret" not in repr(store.config)
    assert "***" in repr(store)
    assert "agents" in repr(store)


def test_options_come_from_the_query_and_keywords_win() -> None:
    config = PostgresStore(
        URL + "?schema=agents&pool_max_size=4&connect_timeout=3", pool_max_size=7
    ).config
    assert (config.schema, config.pool_max_size, config.connect_timeout) == ("agents", 7, 3.0)


def test_outlast_options_are_stripped_from_the_conninfo_and_libpq_ones_kept() -> None:
    config = PostgresStore(URL + "?schema=agents&sslmode=disable&pool_min_size=0").config
    assert "schema" not in config.conninfo
    assert "pool_min_size" not in config.conninfo
    assert "sslmode=disable" in config.conninfo


def test_libpq_parameters_are_accepted_as_keywords() -> None:
    config = PostgresStore(URL, application_name="worker-7", sslmode="disable").config
    assert config.connect_kwargs()["application_name"] == "worker-7"
    assert config.connect_kwargs()["autocommit"] is True


def test_an_unknown_option_names_itself_and_hides_the_password() -> None:
    with pytest.raises(ConfigurationError, match="pool_size") as caught:
        outlast.open(URL + "?pool_size=3")
    assert "hunter2-secret" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="shema"):
        PostgresStore(URL, shema="x")


@pytest.mark.parametrize(
    "schema", ["a-b", "1abc", "pg_catalog", 'x"; DROP TABLE runs; --', "", "s" * 64]
)
def test_a_schema_that_is_not_a_plain_identifier_is_rejected(schema: str) -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        PostgresStore(URL, schema=schema)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("pool_min_size", "-1"),
        ("pool_max_size", "0"),
        ("pool_max_size", "many"),
        ("pool_timeout", "0"),
        ("connect_timeout", "soon"),
        ("connect_timeout", "nan"),
        ("prepare_threshold", "-2"),
    ],
)
def test_bad_option_values_are_rejected(option: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=option):
        PostgresStore(URL, **{option: value})


def test_the_pool_cannot_be_smaller_than_its_minimum() -> None:
    with pytest.raises(ConfigurationError, match="at least pool_min_size"):
        PostgresStore(URL + "?pool_min_size=5&pool_max_size=2")


def test_prepared_statements_can_be_turned_off_for_pgbouncer() -> None:
    assert PostgresStore(URL + "?prepare_threshold=none").config.prepare_threshold is None


def test_connect_timeout_is_passed_to_libpq_in_whole_seconds_of_at_least_two() -> None:
    assert PostgresStore(URL, connect_timeout=0.5).config.connect_kwargs()["connect_timeout"] == 2
    assert PostgresStore(URL, connect_timeout=7.2).config.connect_kwargs()["connect_timeout"] == 8
