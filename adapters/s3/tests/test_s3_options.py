"""s3:// URLs and options: parsed, validated, never carrying credentials."""

from __future__ import annotations

import uuid

import pytest
from s3_testing import BUCKET, REGION, admin_client, s3_store, url_of

import outlast
from outlast.adapter import CheckpointState, ConfigurationError, Message, RunStart
from outlast_s3 import S3Options, parse_url


def test_url_and_query_options_are_parsed() -> None:
    options = parse_url(
        "s3://my-bucket/team/outlast/?region=eu-west-1&endpoint_url=http://127.0.0.1:9000"
        "&sse=aws:kms&sse_kms_key_id=alias/runs&max_workers=4&compact_after=10",
        {},
    )
    assert options == S3Options(
        bucket="my-bucket",
        prefix="team/outlast",
        region="eu-west-1",
        endpoint_url="http://127.0.0.1:9000",
        sse="aws:kms",
        sse_kms_key_id="alias/runs",
        max_workers=4,
        compact_after=10,
    )
    assert options.url == "s3://my-bucket/team/outlast"


def test_keyword_options_win_over_the_query() -> None:
    options = parse_url("s3://b-1?region=eu-west-1", {"region": "us-east-2", "max_workers": 2})
    assert (options.region, options.max_workers, options.prefix) == ("us-east-2", 2, "")


def test_opening_by_url_gives_an_s3_store_without_connecting() -> None:
    store = s3_store(outlast.open("s3://bucket-that-is-never-contacted/p?region=us-east-1"))
    assert repr(store) == "S3Store('s3://bucket-that-is-never-contacted/p')"


def test_the_url_racer_processes_open_carries_every_option() -> None:
    store = s3_store(
        outlast.open(
            "s3://b-1/team/p?region=eu-west-1&endpoint_url=http://127.0.0.1:9000/x%20y"
            "&sse=aws:kms&sse_kms_key_id=alias/runs&max_workers=4&compact_after=10"
            "&addressing_style=path"
        )
    )
    assert s3_store(outlast.open(url_of(store))).options == store.options


def test_credentials_in_the_url_are_refused_without_echoing_the_secret() -> None:
    with pytest.raises(ConfigurationError, match="credentials in an s3:// URL") as caught:
        outlast.open("s3://AKIAEXAMPLE:hunter2-secret@bucket/prefix")
    assert "hunter2-secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "options", "complaint"),
    [
        ("s3://b-1/p?regoin=x", {}, "unknown option"),
        ("s3://b-1/p", {"bogus": 1}, "unknown option"),
        ("s3://b-1/p?sse=rot13", {}, "sse must be one of"),
        ("s3://b-1/p?sse_kms_key_id=k", {}, "needs sse=aws:kms"),
        ("s3://b-1/p?max_workers=0", {}, "max_workers must be an integer >= 1"),
        ("s3://b-1/p?max_workers=many", {}, "max_workers must be an integer"),
        ("s3://b-1/p?compact_after=1", {}, "compact_after must be an integer >= 2"),
        ("s3://b-1/p?endpoint_url=localhost:9000", {}, "endpoint_url must be an http"),
        ("s3:///prefix-only", {}, "expected s3://BUCKET/PREFIX"),
        ("s3://b-1/p?addressing_style=dns", {}, "addressing_style must be one of"),
    ],
)
def test_bad_options_are_configuration_errors(
    url: str, options: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        outlast.open(url, **options)


def test_backend_is_listed_with_its_package() -> None:
    listed = {info.name: info for info in outlast.backends()}
    assert listed["s3"].schemes == ("s3",)
    assert listed["s3"].package == "outlast-s3"


@pytest.mark.asyncio
async def test_server_side_encryption_is_requested_on_every_object(
    s3_endpoint: str, s3_prefix: str
) -> None:
    store = outlast.open(
        f"s3://{BUCKET}/{s3_prefix}?sse=AES256", endpoint_url=s3_endpoint, region=REGION
    )
    try:
        run_id = f"run-{uuid.uuid4().hex[:6]}"
        checkpointer = await store.begin(RunStart(run_id=run_id, kind="k", owner="w"))
        await checkpointer.save(CheckpointState((Message.user("secret plans"),)))
    finally:
        await store.close()
    client = admin_client(s3_endpoint)
    try:
        listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{s3_prefix}/")
        keys = [item["Key"] for item in listing["Contents"]]
        encryption = {
            key: client.head_object(Bucket=BUCKET, Key=key).get("ServerSideEncryption")
            for key in keys
        }
    finally:
        client.close()
    assert len(keys) == 3  # running marker, state object, one segment
    assert set(encryption.values()) == {"AES256"}


@pytest.mark.asyncio
async def test_ids_with_slashes_dots_and_unicode_are_ordinary_names(s3_url: str) -> None:
    store = outlast.open(s3_url)
    ids = ["..", "a/b", "a b ü", "%2F", "."]
    try:
        for run_id in ids:
            checkpointer = await store.begin(
                RunStart(run_id=run_id, kind="k", namespace="team/ü", owner="w")
            )
            await checkpointer.save(CheckpointState((Message.user(run_id),)))
        page = await store.list("team/ü")
        loaded = {run_id: await store.load(run_id, "team/ü") for run_id in ids}
        other = await store.list("team")
    finally:
        await store.close()
    assert [r.run_id for r in page.records] == sorted(ids)
    assert all(
        stored is not None and stored.state.history == (Message.user(run_id),)
        for run_id, stored in loaded.items()
    )
    assert other.records == ()
