"""One answer to "fsspec options for this URI", shared by the operator and the trainer."""

from __future__ import annotations

from tunix_api.storage import fsspec_options, scheme
from tunix_api.training import StorageSpec

MINIO = StorageSpec(endpoint_url="http://minio:9000", region="eu-1")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "sk", "OTHER": "x"}


def test_s3_uris_get_endpoint_region_and_credentials() -> None:
    assert fsspec_options("s3://b/p", MINIO, CREDENTIALS) == {
        "client_kwargs": {"endpoint_url": "http://minio:9000", "region_name": "eu-1"},
        "key": "id",
        "secret": "sk",
    }
    assert fsspec_options("S3A://b/p", StorageSpec()) == {}  # nothing set, nothing passed


def test_other_schemes_and_plain_paths_get_nothing() -> None:
    for uri in ("file:///tmp/x", "gs://b/run", "/data/golden.jsonl", "data/golden.jsonl"):
        assert fsspec_options(uri, MINIO, CREDENTIALS) == {}, uri


def test_no_uri_means_the_runs_storage_uri_or_an_operator_supplied_base() -> None:
    assert fsspec_options(None, StorageSpec(uri="gs://b/run", endpoint_url="http://x")) == {}
    assert fsspec_options(None, StorageSpec(uri="s3://b/run", endpoint_url="http://x")) == {
        "client_kwargs": {"endpoint_url": "http://x"}
    }
    assert fsspec_options(None, StorageSpec(endpoint_url="http://x")) == {
        "client_kwargs": {"endpoint_url": "http://x"}
    }


def test_scheme() -> None:
    assert (scheme("S3://b"), scheme("/p"), scheme("file:///p")) == ("s3", "", "file")
