"""storage.py against file:// and a local S3 (moto); metrics.py."""

from __future__ import annotations

import json
import pathlib

import boto3
import pytest
from prometheus_client import generate_latest

from tunix_api.training import StorageSpec
from tunix_operator.metrics import OperatorMetrics
from tunix_operator.storage import ArtifactReader, read_json


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


def test_s3_reader_uses_endpoint_and_secret_credentials(s3_endpoint: str) -> None:
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="art")
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
