"""fsspec options for a run's object storage: one answer for the operator and the trainer (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunix_api.training import StorageSpec

S3_SCHEMES = ("s3", "s3a")
# Keys of a credentials Secret (and of the trainer's environment) -> s3fs options.
S3_CREDENTIAL_OPTIONS = {
    "AWS_ACCESS_KEY_ID": "key",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_SESSION_TOKEN": "token",
}


def scheme(uri: str) -> str:
    """The URI's scheme, lower-case; "" for a plain path."""
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def fsspec_options(
    uri: str | None, storage: StorageSpec, credentials: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """fsspec keyword arguments to open ``uri`` with the run's ``storage`` settings.

    The S3 endpoint, region and ``credentials`` (a Secret's data, as :data:`S3_CREDENTIAL_OPTIONS`
    names them) apply to s3:// URIs only. ``uri`` None means "the run's storage.uri, or a base URI
    the operator supplies": the options are kept then, as that base is S3 wherever they are set.
    Without credentials, s3fs reads them from the AWS environment variables (the trainer's case).
    """
    target = uri if uri is not None else storage.uri
    if target is not None and scheme(target) not in S3_SCHEMES:
        return {}
    client_kwargs: dict[str, str] = {}
    if storage.endpoint_url:
        client_kwargs["endpoint_url"] = storage.endpoint_url
    if storage.region:
        client_kwargs["region_name"] = storage.region
    options: dict[str, Any] = {"client_kwargs": client_kwargs} if client_kwargs else {}
    for key, option in S3_CREDENTIAL_OPTIONS.items():
        if credentials and credentials.get(key):
            options[option] = credentials[key]
    return options
