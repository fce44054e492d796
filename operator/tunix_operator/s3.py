"""Conditional GETs of small S3 objects: botocore's SigV4 signer over botocore's pooled HTTP session.

The operator polls one small JSON object per running run every few seconds. A botocore (or s3fs)
client spends most of a request's CPU in its machinery (endpoint rules, parameter validation,
event hooks, response parsing); here a request is one URL, one signature and one pooled HTTP
exchange, with the pieces botocore itself uses (:class:`botocore.auth.S3SigV4Auth`, its credential
chain, :class:`botocore.httpsession.URLLib3Session`). One :class:`S3Client` per (endpoint, region,
credentials), reused; thread-safe.

Addressing as botocore's: a custom endpoint (MinIO, Ceph, moto) is addressed path-style
(``<endpoint>/<bucket>/<key>``); AWS virtual-hosted (``https://<bucket>.s3.<region>.amazonaws.com``)
unless the bucket name is not a DNS label (dots), then path-style.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions
import botocore.httpsession
import botocore.session
import botocore.utils

DEFAULT_REGION = "us-east-1"
TIMEOUT_SECONDS = 10.0
POOL_CONNECTIONS = 16
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class NotModified(Exception):
    """The object still has the ETag last seen (HTTP 304)."""


class TooLarge(Exception):
    """The object is larger than the caller accepts (not transferred)."""


class S3Client:
    """GETs objects of one S3 endpoint with one set of credentials.

    ``options`` are the s3fs options of :func:`tunix_api.storage.fsspec_options`: ``key``,
    ``secret``, ``token`` and ``client_kwargs`` (``endpoint_url``, ``region_name``). Without a key,
    botocore's default credential chain applies (environment, web identity, instance profile), as it
    would for s3fs; with none found, requests go unsigned (public buckets).
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        client_kwargs = options.get("client_kwargs") or {}
        session = botocore.session.get_session()
        region = client_kwargs.get("region_name") or session.get_config_variable("region")
        self.region = region or DEFAULT_REGION
        self.endpoint = (client_kwargs.get("endpoint_url") or "").rstrip("/") or None
        if options.get("key"):
            credentials: Any = botocore.credentials.Credentials(
                options["key"], options.get("secret") or "", options.get("token")
            )
        else:
            credentials = session.get_credentials()
        self._signer = botocore.auth.S3SigV4Auth(credentials, "s3", self.region) if credentials else None
        proxied = self.endpoint or f"https://s3.{self.region}.amazonaws.com"
        self._http = botocore.httpsession.URLLib3Session(
            proxies=botocore.utils.get_environ_proxies(proxied) or None,
            timeout=TIMEOUT_SECONDS,
            max_pool_connections=POOL_CONNECTIONS,
        )

    def url(self, bucket: str, key: str) -> str:
        quoted = urllib.parse.quote(key, safe="/~")
        if self.endpoint:
            return f"{self.endpoint}/{bucket}/{quoted}"
        if _DNS_BUCKET.match(bucket):
            return f"https://{bucket}.s3.{self.region}.amazonaws.com/{quoted}"
        return f"https://s3.{self.region}.amazonaws.com/{bucket}/{quoted}"

    def get(
        self, bucket: str, key: str, etag: str | None = None, limit: int | None = None
    ) -> tuple[bytes, str | None]:
        """(content, ETag) of ``s3://bucket/key``.

        Raises NotModified when its ETag is still ``etag``, TooLarge when it has more than ``limit``
        bytes, FileNotFoundError (404), PermissionError (401/403), OSError (anything else).
        """
        headers = {"If-None-Match": etag} if etag else {}
        for attempt in (1, 2):  # a pooled connection the server closed: once more on a new one
            request = botocore.awsrequest.AWSRequest(method="GET", url=self.url(bucket, key), headers=headers)
            if self._signer is not None:
                self._signer.add_auth(request)
            prepared = request.prepare()
            prepared.stream_output = True
            try:
                response = self._http.send(prepared)
                return _answer(response, f"s3://{bucket}/{key}", limit)
            except botocore.exceptions.HTTPClientError as exc:
                if attempt == 2:
                    raise OSError(f"s3://{bucket}/{key}: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._http.close()


def _answer(response: Any, where: str, limit: int | None) -> tuple[bytes, str | None]:
    raw = response.raw
    try:
        status = response.status_code
        if status == 200:
            length = int(response.headers.get("Content-Length") or 0)
            if limit is not None and length > limit:
                raw.close()  # not transferred: the connection is dropped, not reused
                raise TooLarge(where)
            return raw.read(), response.headers.get("ETag")
        raw.read()  # an error document: read it so that the connection returns to the pool
        if status == 304:
            raise NotModified(where)
        if status == 404:
            raise FileNotFoundError(where)
        if status in (401, 403):
            raise PermissionError(where)
        raise OSError(f"{where}: HTTP {status}")
    finally:
        raw.release_conn()
