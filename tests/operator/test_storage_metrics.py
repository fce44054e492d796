"""storage.py against file:// and a local S3 (moto): reused clients, conditional reads, the Secret cache;
metrics.py."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import boto3
import pytest
from prometheus_client import generate_latest

from tests.operator.factories import pod, run_body
from tunix_api.training import StorageSpec
from tunix_operator.metrics import OperatorMetrics
from tunix_operator.storage import ArtifactReader, CredentialsCache, FilesystemPool, JsonReads, read_json


def test_file_reader(tmp_path: pathlib.Path) -> None:
    (tmp_path / "progress.json").write_text(json.dumps({"step": 4}))
    (tmp_path / "summary.json").write_text("[not an object]")
    reader = ArtifactReader(tmp_path.as_uri(), StorageSpec(), None)
    assert reader.progress() == {"step": 4}
    assert reader.summary() is None
    assert read_json((tmp_path / "missing.json").as_uri(), {}) is None
    (tmp_path / "broken.json").write_text("{")
    assert read_json((tmp_path / "broken.json").as_uri(), {}) is None


@pytest.fixture()
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def art_bucket(endpoint: str) -> Any:
    """A boto3 client of the moto server at ``endpoint`` (explicit test credentials, no environment),
    with the bucket ``art`` created."""
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="art")
    return s3


def test_s3_reader_uses_endpoint_and_secret_credentials(s3_endpoint: str) -> None:
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    s3 = art_bucket(s3_endpoint)
    s3.put_object(Bucket="art", Key="ns/r1/progress.json", Body=json.dumps({"step": 7, "totalSteps": 9}))
    spec = StorageSpec(endpoint_url=s3_endpoint, region="us-east-1")
    reader = ArtifactReader("s3://art/ns/r1", spec, creds)
    assert reader.progress() == {"step": 7, "totalSteps": 9}
    assert reader.summary() is None
    s3.put_object(Bucket="art", Key="ns/r1/progress.json", Body=json.dumps({"step": 8}))
    assert reader.progress() == {"step": 8}


def test_metrics_count_runs_by_phase() -> None:
    metrics = OperatorMetrics()
    metrics.observe_phase("ns", "a", "Running")
    metrics.observe_phase("ns", "b", "Running")
    metrics.observe_phase("ns", "a", "Succeeded")
    with metrics.timed():
        pass
    metrics.errors.inc()
    text = generate_latest(metrics.registry).decode()
    assert 'tunix_runs{phase="Running"} 1.0' in text
    assert 'tunix_runs{phase="Succeeded"} 1.0' in text
    assert "tunix_reconcile_errors_total 1.0" in text
    assert "tunix_reconcile_duration_seconds_count 1.0" in text
    metrics.forget("ns", "b")
    assert 'tunix_runs{phase="Running"} 0.0' in generate_latest(metrics.registry).decode()


# ---- cheap reads at scale ------------------------------------------------------------------------


def test_one_filesystem_per_options_is_reused(tmp_path: pathlib.Path) -> None:
    pool = FilesystemPool(size=2)
    reads = JsonReads(pool)
    (tmp_path / "a.json").write_text(json.dumps({"a": 1}))
    for _ in range(3):
        assert reads.read((tmp_path / "a.json").as_uri(), {}) == {"a": 1}
    assert pool.created == 1
    s3 = {"key": "k1", "secret": "s1", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    first, _ = pool.open("s3://art/x", s3)
    again, path = pool.open("s3://art/y", dict(s3))
    assert first is again and path == "art/y" and pool.created == 2
    rotated, _ = pool.open("s3://art/x", {**s3, "secret": "s2"})  # new credentials: a new client
    assert rotated is not first and pool.created == 3


def test_an_unchanged_file_is_not_read_again(tmp_path: pathlib.Path) -> None:
    reads = JsonReads()
    target = tmp_path / "progress.json"
    target.write_text(json.dumps({"step": 1}))
    uri = target.as_uri()
    assert reads.read(uri, {}) == {"step": 1}
    assert reads.read(uri, {}) == {"step": 1}
    assert reads.counts == {"read": 1, "unchanged": 1}
    replacement = tmp_path / "progress.json.tmp"  # the trainer replaces the file atomically
    replacement.write_text(json.dumps({"step": 22}))
    replacement.replace(target)
    assert reads.read(uri, {}) == {"step": 22}
    target.unlink()
    assert reads.read(uri, {}) is None
    assert reads.counts == {"read": 2, "unchanged": 1, "missing": 1}


def test_s3_reads_are_conditional_gets(s3_endpoint: str) -> None:
    s3 = art_bucket(s3_endpoint)
    s3.put_object(Bucket="art", Key="ns/r1/progress.json", Body=json.dumps({"step": 7}))
    seen: list[str] = []
    reads = JsonReads(observer=seen.append)
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    reader = ArtifactReader("s3://art/ns/r1", StorageSpec(endpoint_url=s3_endpoint), creds, reads)
    assert [reader.progress() for _ in range(3)] == [{"step": 7}] * 3
    assert seen == ["read", "unchanged", "unchanged"]  # 304 Not Modified: no body sent twice
    s3.put_object(Bucket="art", Key="ns/r1/progress.json", Body=json.dumps({"step": 8}))
    assert reader.progress() == {"step": 8} and seen[-1] == "read"
    assert reads.pool.created == 1


def test_secrets_are_read_once_then_cached_until_refused_or_old() -> None:
    now = [0.0]
    calls: list[tuple[str, str]] = []

    def read(namespace: str, name: str) -> dict[str, str] | None:
        calls.append((namespace, name))
        return {"AWS_ACCESS_KEY_ID": "k"} if name == "creds" else None

    cache = CredentialsCache(read, max_age_seconds=300, missing_seconds=10, clock=lambda: now[0])
    assert [cache.get("ns", "creds") for _ in range(5)] == [{"AWS_ACCESS_KEY_ID": "k"}] * 5
    assert cache.get("ns", "absent") is None and cache.get("ns", "absent") is None
    assert calls == [("ns", "creds"), ("ns", "absent")]
    cache.invalidate("ns", "creds")  # a storage read was refused: read the Secret again
    cache.get("ns", "creds")
    now[0] = 11.0  # a missing Secret is looked for again soon; a present one is kept longer
    cache.get("ns", "creds")
    cache.get("ns", "absent")
    assert calls == [("ns", "creds"), ("ns", "absent"), ("ns", "creds"), ("ns", "absent")]
    now[0] = 400.0
    cache.get("ns", "creds")
    assert calls[-1] == ("ns", "creds") and len(calls) == 5


def test_a_refused_read_drops_the_cached_secret(tmp_path: pathlib.Path) -> None:
    class Refusing(JsonReads):
        def read(self, uri: str, options: Any) -> dict[str, Any] | None:
            raise PermissionError(uri)

    from tests.operator.test_reconciler import FakeKube, reconciler

    kube = FakeKube({"r1": run_body(storage={"credentialsSecret": "creds"})})
    kube.secrets["creds"] = {"AWS_ACCESS_KEY_ID": "old"}
    rec = reconciler(kube, tmp_path)
    rec.inner.reads = Refusing()
    rec.reconcile("ns", "r1")
    kube.pods = [pod()]
    for _ in range(3):
        rec.reconcile("ns", "r1")
    assert kube.calls.count("read-secret-creds") == 3  # refused each time: read again each time
    rec.inner.reads = JsonReads()
    for _ in range(3):
        rec.reconcile("ns", "r1")
    assert kube.calls.count("read-secret-creds") == 4  # accepted: cached


def test_queue_and_storage_metrics_are_exported() -> None:
    metrics = OperatorMetrics()
    metrics.queue_depth.set(3)
    metrics.storage_reads.labels(result="unchanged").inc()
    text = generate_latest(metrics.registry).decode()
    assert "tunix_reconcile_queue_depth 3.0" in text
    assert 'tunix_storage_reads_total{result="unchanged"} 1.0' in text
    assert "tunix_reconciles_in_flight 0.0" in text


def test_s3_urls_are_addressed_as_botocore_does() -> None:
    from tunix_operator.s3 import S3Client

    custom = S3Client({"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://minio:9000/"}})
    assert custom.url("art", "ns/r 1/progress.json") == "http://minio:9000/art/ns/r%201/progress.json"
    aws = S3Client({"key": "k", "secret": "s", "client_kwargs": {"region_name": "eu-west-1"}})
    assert aws.url("art", "a/b.json") == "https://art.s3.eu-west-1.amazonaws.com/a/b.json"
    assert aws.url("my.bucket", "k") == "https://s3.eu-west-1.amazonaws.com/my.bucket/k"


def test_s3_objects_too_large_are_not_transferred(s3_endpoint: str) -> None:
    from tunix_operator.storage import MAX_JSON_BYTES

    s3 = art_bucket(s3_endpoint)
    s3.put_object(Bucket="art", Key="big/progress.json", Body=b" " * (MAX_JSON_BYTES + 1) + b"{}")
    s3.put_object(Bucket="art", Key="small/progress.json", Body=b'{"step": 1}')
    reads = JsonReads()
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    assert reads.read("s3://art/big/progress.json", options) is None
    assert reads.read("s3://art/small/progress.json", options) == {"step": 1}  # the pool still works
    assert reads.read("s3://art/none/progress.json", options) is None
    assert reads.counts == {"read": 2, "missing": 1}


def test_s3_urls_are_signed_as_botocores_presigned_urls_and_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime

    import botocore.auth
    import botocore.config

    from tunix_operator.s3 import S3Client

    monkeypatch.setattr(
        botocore.auth, "get_current_datetime", lambda: datetime.datetime(2026, 11, 26, 3, 0, 0)
    )
    endpoint = "http://minio:9000"
    creds = {"key": "AKIDEXAMPLE", "secret": "wJalrXUtnFEMI/K7MDENG", "token": None}
    client = S3Client({**creds, "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"}})
    url, reused = client._signed_url("art", "ns/r 1/progress.json")
    botos = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id=creds["key"],
        aws_secret_access_key=creds["secret"],
        config=botocore.config.Config(signature_version="s3v4"),
    )
    expected = botos.generate_presigned_url(
        "get_object", Params={"Bucket": "art", "Key": "ns/r 1/progress.json"}, ExpiresIn=3600
    )
    assert url == expected and not reused
    assert client._signed_url("art", "ns/r 1/progress.json") == (url, True) and client.signatures == 1
