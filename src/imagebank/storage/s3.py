"""S3 (and S3-compatible: MinIO, Ceph, ...) object store.

Layout under ``s3://bucket/prefix``: objects at ``prefix/<key>``, staged bytes at
``prefix/.staging/<token>``.

* ``stage`` uploads to the private staging key with a SHA-256 checksum the server verifies.
* ``publish`` copies each staged object server-side onto its key, then deletes the staging
  keys. S3 makes an object visible only once its PUT, copy or multipart upload completes, so a
  reader sees the whole object or nothing. Objects over 5 GB (the single-copy limit) are copied
  with a managed multipart copy, which completes (becomes visible) last or is aborted.
* A crash leaves staging objects, which ``discard_stale_staging`` removes. A crash in the middle
  of a multipart copy can leave an incomplete multipart upload (never visible, but billed):
  give the bucket a lifecycle rule ``AbortIncompleteMultipartUpload``.

Credentials come from boto3's usual chain (``AWS_*`` environment variables, ``AWS_PROFILE``,
config files, instance roles). The store holds a client, so it is not shared between
processes: each worker opens its own with :func:`imagebank.storage.factory.open_store`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    NoCredentialsError,
    PartialCredentialsError,
)

from imagebank.domain.errors import (
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    StorageError,
)
from imagebank.storage.base import ObjectInfo, StagedObject, validate_key

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CopySourceTypeDef, ObjectTypeDef

log = logging.getLogger(__name__)

STAGING = ".staging"
#: Largest object a single ``CopyObject`` can copy; larger ones use a multipart copy.
MULTIPART_COPY_THRESHOLD = 5 * 1024**3
#: Part size of a multipart copy (server-side, so large parts mean fewer requests).
MULTIPART_COPY_CHUNK = 512 * 1024**2
#: Attempts per request (botocore "standard" retries: backoff with jitter on throttling,
#: 5xx and connection errors).
RETRY_ATTEMPTS = 10
#: Copies run in parallel while publishing a batch.
PUBLISH_CONCURRENCY = 16
_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED_CODES = frozenset({
    "AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled",
})
_BUSY_CODES = frozenset({
    "SlowDown", "503", "ServiceUnavailable", "InternalError", "500", "RequestTimeout",
    "RequestTimeTooSkewed",
})


def _b64_sha256(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3ObjectStore:
    """Objects in an S3 bucket under a prefix."""

    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None = None) -> None:
        if not bucket or "/" in bucket:
            raise ConfigurationError(
                "The S3 store needs a bucket name: write IMAGEBANK_STORE as s3://bucket/prefix."
            )
        prefix = prefix.strip("/")
        if prefix and any(p in ("", ".", "..") for p in prefix.split("/")):
            raise ConfigurationError(
                "The S3 store prefix must be slash-separated names without empty, '.' or "
                "'..' parts: fix IMAGEBANK_STORE."
            )
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.location = f"s3://{bucket}/{prefix}"
        self._base = f"{prefix}/" if prefix else ""
        self._staging = f"{self._base}{STAGING}/"
        self._bucket_checked = False
        if endpoint_url:
            parts = urlsplit(endpoint_url)
            # Never show user:password@ that someone may have put in the URL.
            self._where = f"the S3 endpoint {parts.scheme}://{parts.hostname or ''}" + (
                f":{parts.port}" if parts.port else ""
            )
        else:
            self._where = "AWS S3"
        config = Config(
            retries={"max_attempts": RETRY_ATTEMPTS, "mode": "standard"},
            max_pool_connections=max(32, PUBLISH_CONCURRENCY * 2),
            connect_timeout=10,
            read_timeout=120,
            tcp_keepalive=True,
            # S3-compatible servers are usually reached by path, not by bucket host name.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        # A session per store: boto3's default session is not safe to share between threads.
        session = boto3.session.Session()
        self._client: S3Client = session.client("s3", endpoint_url=endpoint_url, config=config)

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.location!r})"

    # -- keys ------------------------------------------------------------------------------
    def _full(self, key: str) -> str:
        return self._base + validate_key(key)

    def _staging_key(self, token: str) -> str:
        if not token or "/" in token:
            raise ValueError("invalid staging token")
        return self._staging + token

    # -- errors ----------------------------------------------------------------------------
    def _raise(self, exc: Exception, action: str) -> NoReturn:
        """Turn a boto error into an imagebank error a person can act on (no keys, no secrets)."""
        where = f"{self.location} ({self._where})"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise StorageError(
                    f"Cannot {action}: the bucket {self.bucket!r} does not exist at "
                    f"{self._where}. Create it, or fix IMAGEBANK_STORE / "
                    "IMAGEBANK_S3_ENDPOINT_URL."
                ) from exc
            if code in _DENIED_CODES or status == 403:
                raise StorageError(
                    f"Cannot {action}: access to {where} was refused ({code}). Check the AWS "
                    "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and "
                    "that they may read, write, list and delete under this prefix."
                ) from exc
            if code in _BUSY_CODES or (isinstance(status, int) and status >= 500):
                raise StorageError(
                    f"Cannot {action}: {where} is unavailable or overloaded ({code}) even "
                    "after retries. Try again later."
                ) from exc
            raise StorageError(
                f"Cannot {action}: {where} answered {code}"
                + (f" (HTTP {status})" if status else "") + "."
            ) from exc
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            raise StorageError(
                f"Cannot {action}: no AWS credentials were found for {where}. Set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE."
            ) from exc
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            raise StorageError(
                f"Cannot {action}: {self._where} cannot be reached. Check "
                "IMAGEBANK_S3_ENDPOINT_URL and the network."
            ) from exc
        if isinstance(exc, FlexibleChecksumError):
            raise IntegrityError(
                f"Cannot {action}: the bytes read from {where} do not match their stored "
                "checksum. Read again; if it persists, run `imagebank check "
                "--verify-checksums`."
            ) from exc
        raise StorageError(
            f"Cannot {action}: talking to {where} failed ({type(exc).__name__})."
        ) from exc

    @staticmethod
    def _is_missing(exc: ClientError) -> bool:
        return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING_CODES

    def _check_bucket(self) -> None:
        """A HEAD answers 404 for a missing bucket as for a missing key: tell them apart once."""
        if self._bucket_checked:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if self._is_missing(exc):
                exc.response["Error"]["Code"] = "NoSuchBucket"
            self._raise(exc, "read from the object store")
        except BotoCoreError as exc:
            self._raise(exc, "read from the object store")
        self._bucket_checked = True

    # -- writing ---------------------------------------------------------------------------
    def stage(self, data: bytes) -> StagedObject:
        token = uuid.uuid4().hex
        digest = hashlib.sha256(data).digest()
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._staging_key(token), Body=data,
                ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64_sha256(digest),
            )
        except (ClientError, BotoCoreError) as exc:
            self._raise(exc, "write to the object store")
        return StagedObject(token=token, sha256=digest.hex(), size=len(data))

    def publish(self, items: Sequence[tuple[StagedObject, str]]) -> None:
        if not items:
            return
        # Refuse a bad key before anything becomes visible.
        targets = [(staged, self._staging_key(staged.token), self._full(key))
                   for staged, key in items]
        if len(targets) == 1:
            errors = [self._copy_one(*targets[0])]
        else:
            workers = min(len(targets), PUBLISH_CONCURRENCY)
            with ThreadPoolExecutor(max_workers=workers,
                                    thread_name_prefix="imagebank-s3-publish") as pool:
                errors = list(pool.map(lambda t: self._copy_one(*t), targets))
        copied = [source for (_, source, _), error in zip(targets, errors, strict=True)
                  if error is None]
        self._delete_many(copied)
        failed = [e for e in errors if e is not None]
        if failed:
            first = failed[0]
            if isinstance(first, ClientError) and self._is_missing(first):
                raise StorageError(
                    f"Cannot publish to {self.location}: {len(failed)} of {len(targets)} staged "
                    "objects are gone (already published, discarded, or removed as stale "
                    "staging). Ingest them again."
                ) from first
            if isinstance(first, IntegrityError):
                raise first
            self._raise(first, f"publish {len(failed)} of {len(targets)} objects")

    def _copy_one(self, staged: StagedObject, source: str, target: str) -> Exception | None:
        """Copy one staged object onto its key; the error, if any, is returned."""
        copy_source: CopySourceTypeDef = {"Bucket": self.bucket, "Key": source}
        try:
            if staged.size <= MULTIPART_COPY_THRESHOLD:
                result = self._client.copy_object(
                    Bucket=self.bucket, Key=target, CopySource=copy_source,
                    ChecksumAlgorithm="SHA256",
                )
                checksum = result.get("CopyObjectResult", {}).get("ChecksumSHA256")
                expected = _b64_sha256(bytes.fromhex(staged.sha256))
                if checksum and checksum != expected:
                    # The key now holds bytes that are not the staged ones: take them away.
                    self._client.delete_object(Bucket=self.bucket, Key=target)
                    return IntegrityError(
                        f"Publishing to {self.location} produced an object whose SHA-256 is "
                        "not the staged one; it was removed. Ingest it again."
                    )
            else:
                transfer = TransferConfig(
                    multipart_threshold=MULTIPART_COPY_THRESHOLD,
                    multipart_chunksize=MULTIPART_COPY_CHUNK,
                    max_concurrency=8,
                )
                # Managed copy: UploadPartCopy parts, visible only on completion, aborted on
                # failure.
                self._client.copy(
                    copy_source, self.bucket, target,
                    ExtraArgs={"ChecksumAlgorithm": "SHA256"}, Config=transfer,
                )
        except (ClientError, BotoCoreError) as exc:
            return exc
        return None

    def _delete_many(self, keys: Sequence[str]) -> int:
        """Delete full keys in batches; best effort (leftover staging is removed later)."""
        removed = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            chunk = keys[start:start + _DELETE_BATCH]
            try:
                result = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("Could not delete %d staging objects in %s (%s); "
                            "`imagebank check --repair` removes them later.",
                            len(chunk), self.location, type(exc).__name__)
                continue
            errors = result.get("Errors", [])
            if errors:
                log.warning("Could not delete %d staging objects in %s (%s); "
                            "`imagebank check --repair` removes them later.",
                            len(errors), self.location, errors[0].get("Code", "error"))
            removed += len(chunk) - len(errors)
        return removed

    def discard(self, staged: StagedObject) -> None:
        """Remove staged bytes that will not be published (best effort)."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._staging_key(staged.token))
        except (ClientError, BotoCoreError) as exc:
            log.warning("Could not discard a staging object in %s (%s); "
                        "`imagebank check --repair` removes it later.",
                        self.location, type(exc).__name__)

    def put(self, key: str, data: bytes) -> StagedObject:
        """Write ``data`` at ``key`` in one PUT (atomic on S3: the whole object or nothing)."""
        full = self._full(key)
        digest = hashlib.sha256(data).digest()
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=full, Body=data,
                ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64_sha256(digest),
            )
        except (ClientError, BotoCoreError) as exc:
            self._raise(exc, "write to the object store")
        return StagedObject(token=uuid.uuid4().hex, sha256=digest.hex(), size=len(data))

    # -- reading ---------------------------------------------------------------------------
    def _get_object(self, key: str) -> Any:
        full = self._full(key)
        try:
            return self._client.get_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if self._is_missing(exc):
                raise NotFoundError("The object is not in the store.") from exc
            self._raise(exc, "read from the object store")
        except BotoCoreError as exc:
            self._raise(exc, "read from the object store")

    def read_staged(self, staged: StagedObject) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket,
                                               Key=self._staging_key(staged.token))
            with response["Body"] as body:
                return bytes(body.read())
        except (ClientError, BotoCoreError) as exc:
            self._raise(exc, "read from the object store")

    def get(self, key: str) -> bytes:
        body = self._get_object(key)["Body"]
        try:
            with body:
                return bytes(body.read())
        except BotoCoreError as exc:
            self._raise(exc, "read from the object store")

    def open(self, key: str) -> BinaryIO:
        body = self._get_object(key)["Body"]
        return io.BufferedReader(_BodyReader(body, self), buffer_size=1 << 20)

    def stat(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if self._is_missing(exc):
                self._check_bucket()
                return None
            self._raise(exc, "read from the object store")
        except BotoCoreError as exc:
            self._raise(exc, "read from the object store")
        return ObjectInfo(key=key, size=int(head["ContentLength"]))

    def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=full)
        except (ClientError, BotoCoreError) as exc:
            self._raise(exc, "delete from the object store")

    def _list(self, prefix: str) -> Iterator[ObjectTypeDef]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            self._raise(exc, "list the object store")

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` (a plain string prefix), in sorted order.

        S3 lists keys in UTF-8 byte order, which is Python's ``str`` order, so keys stream
        without being held in memory. The staging area is left out.
        """
        start = len(self._base)
        for item in self._list(self._base + prefix):
            full = item["Key"]
            if full.startswith(self._staging):
                continue
            yield full[start:]

    def discard_stale_staging(self, older_than_seconds: float = 3600.0) -> int:
        """Delete staging objects last modified more than ``older_than_seconds`` ago."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        stale: list[str] = []
        removed = 0
        for item in self._list(self._staging):
            if item["LastModified"] < cutoff:
                stale.append(item["Key"])
                if len(stale) >= _DELETE_BATCH:
                    removed += self._delete_many(stale)
                    stale = []
        removed += self._delete_many(stale)
        return removed


class _BodyReader(io.RawIOBase):
    """A botocore StreamingBody as a raw binary stream; errors become imagebank errors."""

    def __init__(self, body: Any, store: S3ObjectStore) -> None:
        self._body = body
        self._store = store

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except BotoCoreError as exc:
            self._store._raise(exc, "read from the object store")
        view[:len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        try:
            return bytes(self._body.read())
        except BotoCoreError as exc:
            self._store._raise(exc, "read from the object store")

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
