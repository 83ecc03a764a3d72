"""outlast.adapter.redact: the one function that hides secrets in URLs and messages.

The table of hostile URLs every store is tested against lives in
``outlast_conformance.hostile_urls``; these are the exact outputs.
"""

from __future__ import annotations

import pytest

import outlast
from outlast.adapter import ConfigurationError, merge_options, query_options, redact, scheme_of


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # userinfo passwords, whatever they hold
        ("postgresql://app:s3cret@db/x", "postgresql://app:***@db/x"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            "postgresql://u:s3#cret@h:5432/db?sslmode=disable",
            "postgresql://u:***@h:5432/db?sslmode=disable",
        ),
        ("postgresql://u:s3?cret@h/db", "postgresql://u:***@h/db"),
        ("redis://u:s3@cret@h/0", "redis://u:***@h/0"),
        ("redis://u:s3/cret@h/0", "redis://u:***@h/0"),
        ("postgresql://u:s3%40cret@h/db", "postgresql://u:***@h/db"),
        ("unix://:s3cret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        # options named like secrets, any case, '#' and '@' in their values
        ("postgresql://db/x?user=a&password=s3cret", "postgresql://db/x?user=a&password=***"),
        ("postgresql://h/db?sslpassword=s3#cret&x=1", "postgresql://h/db?sslpassword=***&x=1"),
        (
            "redis://h?ssl_keyfile_password=s3@cret&prefix=p",
            "redis://h?ssl_keyfile_password=***&prefix=p",
        ),
        (
            "x://h?PassWd=a&Client_Secret=b&api_TOKEN=c&aws_access_key_id=d&prefix=e",
            "x://h?PassWd=***&Client_Secret=***&api_TOKEN=***&aws_access_key_id=***&prefix=e",
        ),
        ("x://h?pass%77ord=s3cret", "x://h?pass%77ord=***"),
        # URLs nested in option values, and in free text
        (
            "s3://b/p?endpoint_url=http://ak:s3cret@minio:9000&region=x",
            "s3://b/p?endpoint_url=http://ak:***@minio:9000&region=x",
        ),
        (
            'could not connect to "http://u:s3cret@127.0.0.1:1/b/k"',
            'could not connect to "http://u:***@127.0.0.1:1/b/k"',
        ),
        ("host=h user=u password='s3 cr et' dbname=x", "host=h user=u password=*** dbname=x"),
        (
            "S3Options(endpoint_url='http://u:s3cret@h', sse_kms_key_id=None, max_workers=4)",
            "S3Options(endpoint_url='http://u:***@h', sse_kms_key_id=None, max_workers=4)",
        ),
        # unparseable URLs are redacted too
        ("postgresql://u:s3cret@[::1", "postgresql://u:***@[::1"),
        # nothing to hide: unchanged, byte for byte
        ("sqlite:///./runs.db", "sqlite:///./runs.db"),
        ("sqlite:///home/me@work/runs.db", "sqlite:///home/me@work/runs.db"),
        ("redis://h:6379/0?prefix=a%20b&db=2", "redis://h:6379/0?prefix=a%20b&db=2"),
        ("redis://[::1]:6379/0?prefix=a@b", "redis://[::1]:6379/0?prefix=a@b"),
        ("postgresql://user@h/db", "postgresql://user@h/db"),
        ("no URL here", "no URL here"),
        ("", ""),
    ],
)
def test_redact_hides_every_secret_and_keeps_the_rest(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_an_at_sign_in_a_query_hides_more_than_the_password_never_less() -> None:
    # urlsplit and libpq disagree where such a URL's password ends: hide to the last '@'.
    assert redact("postgresql://h:5432/db?application_name=a@b") == "postgresql://h:***@b"


def test_known_secrets_are_scrubbed_in_every_encoding() -> None:
    text = "auth failed for s3#cret (sent s3%23cret)"
    assert redact(text, secrets=["s3#cret"]) == "auth failed for *** (sent ***)"


def test_redact_is_what_users_and_adapter_authors_import() -> None:
    assert outlast.adapter.redact is redact


@pytest.mark.parametrize(
    "url",
    [
        "redis://u:s3#cret@h:6379/0",
        "redis://u:1234#5678@h",
        "sqlite:///runs.db#x",
        "s3://b/p?endpoint_url=http://u:s3#cret@h:9000",
    ],
)
def test_merge_options_refuses_a_hash_and_says_to_percent_encode_it(url: str) -> None:
    with pytest.raises(ConfigurationError, match="%23") as caught:
        merge_options(url, {}, set())
    assert "cret" not in str(caught.value) and "5678" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["redis://u:s3?cret@h:6379/0", "redis://u:s3/cret@h", "redis://u:1234?cret@h"]
)
def test_merge_options_refuses_an_unencoded_question_mark_or_slash_in_a_password(
    url: str,
) -> None:
    # Otherwise the rest of the password is read as an option name, and echoed as unknown.
    with pytest.raises(ConfigurationError, match="percent-encode") as caught:
        merge_options(url, {}, {"prefix"})
    assert "cret" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["redis://h:6379/0?prefix=a@b", "redis://[::1]/0?prefix=a@b", "redis://u:p@ss@h"]
)
def test_merge_options_accepts_an_at_sign_it_can_place(url: str) -> None:
    merge_options(url, {}, {"prefix"})


def test_an_unparseable_url_is_a_configuration_error_without_its_password() -> None:
    for parse in (scheme_of, query_options):
        with pytest.raises(ConfigurationError, match="not a valid URL") as caught:
            parse("redis://u:s3cret@[::1")
        assert "s3cret" not in str(caught.value)
