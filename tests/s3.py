"""A local S3 endpoint (moto) for tests.

The root ``tests/conftest.py`` registers it (``pytest_plugins``), so every test can ask for the
fixtures by name; importing them into a module would register a second, separately cached
``moto_server``. ``moto_server`` is
session-scoped and sets the AWS environment (test credentials, region, endpoint)
for its lifetime; ``s3_bucket`` yields ``s3://<fresh bucket>`` per test.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Iterator

import pytest

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": None,
    "AWS_SECURITY_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def _clear_s3fs_cache() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server; AWS env vars point at it until the session ends."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    with contextlib.redirect_stdout(io.StringIO()):  # moto announces itself on stdout
        server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {**_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint}
    saved = {name: os.environ.get(name) for name in env}
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _clear_s3fs_cache()
    try:
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _clear_s3fs_cache()
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: str) -> Iterator[str]:
    """``s3://<bucket>``: a fresh, empty bucket on the moto server."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:20]}"
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    _clear_s3fs_cache()
    try:
        yield f"s3://{name}"
    finally:
        _clear_s3fs_cache()
