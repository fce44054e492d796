"""Conditional GETs of small S3 objects: botocore's SigV4 signer over botocore's pooled HTTP session.

The operator polls one small JSON object per running run every few seconds. A botocore (or s3fs)
client spends most of a request's CPU in its machinery (endpoint rules, parameter validation,
event hooks, response parsing); here a request is one URL, one signature and one pooled HTTP
exchange, with the pieces botocore itself uses (its SigV4 signer, its credential chain,
:class:`botocore.httpsession.URLLib3Session`). One :class:`S3Client` per (endpoint, region,
credentials), reused; thread-safe.

An object's URL is signed once, as a presigned URL (SigV4 query authentication, what
``generate_presigned_url`` makes), and reused for ``RESIGN_SECONDS`` (it is valid for
``PRESIGN_SECONDS``), or until the credentials change (rotated keys, refreshed temporary
credentials); the ``If-None-Match`` header is not signed, so the same URL serves every conditional
GET. A request refused (401/403) with a reused URL is signed again and retried once.

Addressing as botocore's: a custom endpoint (MinIO, Ceph, moto) is addressed path-style
(``<endpoint>/<bucket>/<key>``); AWS virtual-hosted (``https://<bucket>.s3.<region>.amazonaws.com``)
unless the bucket name is not a DNS label (dots), then path-style.
"""

from __future__ import annotations

import collections
import re
import threading
import time
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
PRESIGN_SECONDS = 3600  # a signed URL's validity
RESIGN_SECONDS = 600  # a signed URL is reused this long (well within its validity)
MAX_SIGNED_URLS = 100_000
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
        self._credentials = credentials
        self._signed: collections.OrderedDict[tuple[str, str], tuple[str, float, Any]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self.signatures = 0
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
        where = f"s3://{bucket}/{key}"
        for attempt in (1, 2):  # a pooled connection the server closed, a stale URL: once more
            url, reused = self._signed_url(bucket, key)
            request = botocore.awsrequest.AWSPreparedRequest("GET", url, headers, None, True)
            try:
                return _answer(self._http.send(request), where, limit)
            except botocore.exceptions.HTTPClientError as exc:
                if attempt == 2:
                    raise OSError(f"{where}: {type(exc).__name__}") from exc
            except PermissionError:
                if attempt == 2 or not reused:
                    raise
                with self._lock:
                    self._signed.pop((bucket, key), None)
        raise AssertionError("unreachable")

    def _signed_url(self, bucket: str, key: str) -> tuple[str, bool]:
        """(the object's URL, presigned unless there are no credentials; whether it was reused)."""
        url = self.url(bucket, key)
        if self._credentials is None:
            return url, False
        frozen = self._credentials.get_frozen_credentials()  # refreshes temporary credentials
        now = time.monotonic()
        with self._lock:
            cached = self._signed.get((bucket, key))
        if cached is not None and cached[2] == frozen and now - cached[1] < RESIGN_SECONDS:
            return cached[0], True
        request = botocore.awsrequest.AWSRequest(method="GET", url=url)
        botocore.auth.S3SigV4QueryAuth(frozen, "s3", self.region, expires=PRESIGN_SECONDS).add_auth(request)
        with self._lock:
            self.signatures += 1
            self._signed[(bucket, key)] = (request.url, now, frozen)
            self._signed.move_to_end((bucket, key))
            while len(self._signed) > MAX_SIGNED_URLS:
                self._signed.popitem(last=False)
        return request.url, False

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
