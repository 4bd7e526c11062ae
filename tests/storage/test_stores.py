"""The ObjectStore contract, run against every adapter: local files, memory, and S3 over HTTP
(moto's server on loopback)."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from imagebank.domain.errors import (
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    StorageError,
)
from imagebank.storage import local as local_module
from imagebank.storage import s3 as s3_module
from imagebank.storage.base import ObjectInfo, ObjectStore, StagedObject
from imagebank.storage.factory import open_store
from imagebank.storage.local import LocalObjectStore
from imagebank.storage.memory import MemoryObjectStore
from imagebank.storage.s3 import S3ObjectStore

STORES = ["local", "memory", "s3"]
BAD_KEYS = ["../x", "/abs", "a//b", "", "a/./b", "a/..", "a/", ".staging/x"]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    if request.param == "memory":
        return MemoryObjectStore()
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("moto_endpoint")
    return S3ObjectStore(bucket, "archive/objects", endpoint_url=endpoint)


def data_of(n: int, size: int = 1000) -> bytes:
    return (f"object {n} ".encode() * (size // 8 + 1))[:size]


# -- the contract ---------------------------------------------------------------------------
def test_satisfies_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    assert store.location


def test_put_get_round_trip_with_sha256(store: ObjectStore) -> None:
    data = os.urandom(4096)
    staged = store.put("p/dicom/ab/cd/obj.dcm", data)
    assert isinstance(staged, StagedObject)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.size == len(data)
    assert store.get("p/dicom/ab/cd/obj.dcm") == data


def test_empty_object(store: ObjectStore) -> None:
    staged = store.put("p/empty", b"")
    assert staged.size == 0
    assert staged.sha256 == hashlib.sha256(b"").hexdigest()
    assert store.get("p/empty") == b""
    assert store.stat("p/empty") == ObjectInfo(key="p/empty", size=0)


def test_stage_then_publish_many(store: ObjectStore) -> None:
    blobs = {f"p/dicom/{n % 4:02d}/{n:04d}.dcm": data_of(n, 100 + n) for n in range(40)}
    staged = [(store.stage(data), key) for key, data in blobs.items()]
    for s, key in staged:
        assert s.sha256 == hashlib.sha256(blobs[key]).hexdigest()
        assert s.size == len(blobs[key])
    store.publish(staged)
    for key, data in blobs.items():
        assert store.get(key) == data
    assert list(store.keys()) == sorted(blobs)


def test_publish_nothing_is_a_no_op(store: ObjectStore) -> None:
    store.publish([])
    assert list(store.keys()) == []


def test_staged_objects_are_invisible_until_published(store: ObjectStore) -> None:
    staged = store.stage(b"not yet")
    assert store.stat("p/k") is None
    with pytest.raises(NotFoundError):
        store.get("p/k")
    assert list(store.keys()) == []
    store.publish([(staged, "p/k")])
    assert store.get("p/k") == b"not yet"
    assert list(store.keys()) == ["p/k"]


def test_publish_is_idempotent_with_identical_bytes(store: ObjectStore) -> None:
    data = data_of(7)
    first = store.stage(data)
    store.publish([(first, "p/same")])
    second = store.stage(data)
    assert second.sha256 == first.sha256
    store.publish([(second, "p/same")])
    store.put("p/same", data)
    assert store.get("p/same") == data
    assert list(store.keys()) == ["p/same"]


def test_get_of_a_missing_key_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFoundError):
        store.get("p/missing")
    with pytest.raises(NotFoundError):
        store.open("p/missing")


def test_stat(store: ObjectStore) -> None:
    assert store.stat("p/a") is None
    store.put("p/a", b"12345")
    assert store.stat("p/a") == ObjectInfo(key="p/a", size=5)


def test_delete(store: ObjectStore) -> None:
    store.put("p/a", b"1")
    store.put("p/b", b"2")
    store.delete("p/a")
    assert store.stat("p/a") is None
    with pytest.raises(NotFoundError):
        store.get("p/a")
    assert list(store.keys()) == ["p/b"]
    store.delete("p/a")  # deleting what is gone is fine


def test_keys_are_sorted_filtered_by_prefix_and_exclude_staging(store: ObjectStore) -> None:
    wanted = ["q/dicom/00/01/b.dcm", "p/dicom/ff/00/a.dcm", "p/dicom/00/01/c.dcm",
              "p/quarantine/aa/x.bin", "q/dicom/00/00/a.dcm"]
    for key in wanted:
        store.put(key, key.encode())
    leftover = store.stage(b"staged, never published")
    assert list(store.keys()) == sorted(wanted)
    assert list(store.keys("p/")) == sorted(k for k in wanted if k.startswith("p/"))
    assert list(store.keys("p/dicom/")) == ["p/dicom/00/01/c.dcm", "p/dicom/ff/00/a.dcm"]
    assert list(store.keys("z/")) == []
    assert all(".staging" not in k for k in store.keys())
    store.discard(leftover)


def test_keys_are_sorted_across_depths(store: ObjectStore, request: pytest.FixtureRequest
                                       ) -> None:
    wanted = ["a/z", "a/b/c", "a-b/x", "b"]
    for key in wanted:
        store.put(key, b"1")
    assert list(store.keys()) == sorted(wanted)


def test_keys_prefix_is_a_string_prefix(store: ObjectStore, request: pytest.FixtureRequest
                                        ) -> None:
    for key in ["p1/x", "p10/y", "p2/z"]:
        store.put(key, b"1")
    assert list(store.keys("p1")) == ["p1/x", "p10/y"]


def test_keys_never_list_the_staging_area(store: ObjectStore, request: pytest.FixtureRequest
                                          ) -> None:
    store.stage(b"private")
    assert list(store.keys(".staging")) == []


def test_discard_stale_staging_removes_leftovers_and_keeps_objects(store: ObjectStore) -> None:
    store.put("p/kept", b"published")
    for n in range(3):
        store.stage(data_of(n))
    assert store.discard_stale_staging(older_than_seconds=-60) == 3
    assert store.discard_stale_staging(older_than_seconds=-60) == 0
    assert store.get("p/kept") == b"published"
    assert list(store.keys()) == ["p/kept"]


def test_discard_stale_staging_keeps_fresh_staging(store: ObjectStore,
                                                   request: pytest.FixtureRequest) -> None:
    staged = store.stage(b"in flight")
    assert store.discard_stale_staging(older_than_seconds=3600) == 0
    store.publish([(staged, "p/k")])
    assert store.get("p/k") == b"in flight"


def test_publishing_a_discarded_object_fails_cleanly(store: ObjectStore,
                                                     request: pytest.FixtureRequest) -> None:
    staged = store.stage(b"gone")
    store.discard(staged)
    with pytest.raises(StorageError):
        store.publish([(staged, "p/k")])
    assert store.stat("p/k") is None


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_invalid_keys_are_refused_on_write(store: ObjectStore, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.put(bad, b"x")
    staged = store.stage(b"x")
    with pytest.raises(ValueError, match="invalid object key"):
        store.publish([(staged, bad)])
    assert list(store.keys()) == []


def test_invalid_keys_are_refused_on_read(store: ObjectStore,
                                          request: pytest.FixtureRequest) -> None:
    for bad in BAD_KEYS:
        for call in (store.get, store.open, store.stat, store.delete):
            with pytest.raises(ValueError, match="invalid object key"):
                call(bad)


def test_open_streams(store: ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    store.put("p/big", data)
    with store.open("p/big") as stream:
        chunks = []
        while chunk := stream.read(64 * 1024):
            assert len(chunk) <= 64 * 1024
            chunks.append(chunk)
    assert b"".join(chunks) == data
    with store.open("p/big") as stream:
        assert stream.read(10) == data[:10]
        assert stream.read() == data[10:]
    with store.open("p/big") as stream:  # closing before the end is fine
        assert stream.read(1) == data[:1]


# -- local files only -----------------------------------------------------------------------
def test_local_crash_between_stage_and_publish_leaves_nothing_at_the_key(tmp_path: Path
                                                                         ) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    staged = store.stage(b"half-done batch")
    del store  # the process dies before publish

    reopened = LocalObjectStore(root)
    assert reopened.stat("p/k") is None
    assert not (root / "p" / "k").exists()
    assert list(reopened.keys()) == []
    assert (root / ".staging" / staged.token).exists()
    assert reopened.discard_stale_staging(older_than_seconds=-60) == 1
    assert list((root / ".staging").iterdir()) == []


def test_local_publish_failure_leaves_no_partial_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StorageError, match="Cannot publish"):
        store.put("p/k", b"never visible")
    monkeypatch.undo()
    assert not (root / "p" / "k").exists()
    assert store.stat("p/k") is None
    assert [p.name for p in root.rglob("*") if p.is_file() and ".staging" not in p.parts] == []


def test_local_stage_failure_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    real_open = open

    class DiskFull:
        def __init__(self, path: Any, mode: str) -> None:
            self.handle = real_open(path, mode)

        def __enter__(self) -> DiskFull:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(local_module, "open", DiskFull, raising=False)
    with pytest.raises(StorageError, match="No space left"):
        store.put("p/k", b"0123456789")
    monkeypatch.undo()
    assert store.stat("p/k") is None
    assert list((root / ".staging").iterdir()) == []


# -- S3 only --------------------------------------------------------------------------------
@pytest.fixture
def s3_store(s3_bucket: str, moto_endpoint: str) -> S3ObjectStore:
    return S3ObjectStore(s3_bucket, "archive/objects", endpoint_url=moto_endpoint)


def _all_keys(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_s3_layout_and_checksums(s3_store: S3ObjectStore, s3_client: Any,
                                 s3_bucket: str) -> None:
    assert s3_store.location == f"s3://{s3_bucket}/archive/objects"
    data = data_of(1, 5000)
    sha_b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    staged = s3_store.stage(data)
    staging_key = f"archive/objects/.staging/{staged.token}"
    assert _all_keys(s3_client, s3_bucket) == [staging_key]
    head = s3_client.head_object(Bucket=s3_bucket, Key=staging_key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha_b64

    s3_store.publish([(staged, "p/dicom/k.dcm")])
    assert _all_keys(s3_client, s3_bucket) == ["archive/objects/p/dicom/k.dcm"]
    head = s3_client.head_object(Bucket=s3_bucket, Key="archive/objects/p/dicom/k.dcm",
                                 ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha_b64


def test_s3_publish_uses_multipart_copy_for_large_objects(
        s3_store: S3ObjectStore, s3_client: Any, s3_bucket: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    chunk = 5 * 1024 * 1024  # S3's smallest part
    monkeypatch.setattr(s3_module, "MULTIPART_COPY_THRESHOLD", chunk)
    monkeypatch.setattr(s3_module, "MULTIPART_COPY_CHUNK", chunk)
    calls: list[str] = []
    real_copy = s3_store._client.copy

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append("copy")
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(s3_store._client, "copy", spy)
    data = os.urandom(chunk + 1024 * 1024)
    small = s3_store.stage(b"small")
    large = s3_store.stage(data)
    s3_store.publish([(small, "p/small"), (large, "p/large")])
    assert calls == ["copy"]
    assert s3_store.get("p/large") == data
    assert s3_store.get("p/small") == b"small"
    assert sorted(_all_keys(s3_client, s3_bucket)) == ["archive/objects/p/large",
                                                       "archive/objects/p/small"]
    head = s3_client.head_object(Bucket=s3_bucket, Key="archive/objects/p/large", PartNumber=1)
    assert head["PartsCount"] == 2
    uploads = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert uploads == []


def test_s3_publish_refuses_a_copy_with_the_wrong_checksum(
        s3_store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_copy_object = s3_store._client.copy_object

    def corrupting(**kwargs: Any) -> Any:
        result = real_copy_object(**kwargs)
        result["CopyObjectResult"]["ChecksumSHA256"] = base64.b64encode(b"x" * 32).decode()
        return result

    monkeypatch.setattr(s3_store._client, "copy_object", corrupting)
    staged = s3_store.stage(b"payload")
    with pytest.raises(IntegrityError):
        s3_store.publish([(staged, "p/k")])
    assert s3_store.stat("p/k") is None


def test_s3_store_without_prefix(s3_bucket: str, moto_endpoint: str, s3_client: Any) -> None:
    store = S3ObjectStore(s3_bucket, "", endpoint_url=moto_endpoint)
    store.put("p/k", b"x")
    store.stage(b"y")
    assert list(store.keys()) == ["p/k"]
    assert store.discard_stale_staging(older_than_seconds=-60) == 1
    assert _all_keys(s3_client, s3_bucket) == ["p/k"]


def test_s3_missing_bucket_is_a_storage_error(moto_endpoint: str, aws_env: None) -> None:
    store = S3ObjectStore("no-such-bucket-here", "x", endpoint_url=moto_endpoint)
    for call in (lambda: store.get("p/secret-key"), lambda: store.stat("p/secret-key"),
                 lambda: store.put("p/secret-key", b"1"), lambda: list(store.keys())):
        with pytest.raises(StorageError, match="does not exist") as info:
            call()
        assert "secret-key" not in str(info.value)
        assert "no-such-bucket-here" in str(info.value)


def test_s3_without_credentials_says_what_to_set(s3_bucket: str, moto_endpoint: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3ObjectStore(s3_bucket, "x", endpoint_url=moto_endpoint)
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID") as info:
        store.get("p/k")
    assert "testing" not in str(info.value)


def test_s3_unreachable_endpoint(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "RETRY_ATTEMPTS", 1)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3ObjectStore("b", "x", endpoint_url=f"http://user:pw@127.0.0.1:{port}")
    with pytest.raises(StorageError, match="cannot be reached") as info:
        store.stat("p/k")
    assert "pw" not in str(info.value)


def test_s3_store_open_returns_a_binary_stream(s3_store: S3ObjectStore) -> None:
    s3_store.put("p/k", b"line one\nline two\n")
    with s3_store.open("p/k") as stream:
        assert stream.readable()
        assert stream.readline() == b"line one\n"
        assert list(stream) == [b"line two\n"]


# -- open_store -----------------------------------------------------------------------------
def test_open_store_folder(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "objs"))
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "objs"
    store.put("p/k", b"x")
    assert (tmp_path / "objs" / "p" / "k").read_bytes() == b"x"


def test_open_store_file_url(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'objs'}", durable=False)
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "objs"
    assert store.durable is False
    assert store.location == (tmp_path / "objs").resolve().as_uri()


def test_open_store_s3(s3_bucket: str, moto_endpoint: str, s3_client: Any) -> None:
    store = open_store(f"s3://{s3_bucket}/some/prefix/", s3_endpoint_url=moto_endpoint)
    assert isinstance(store, S3ObjectStore)
    assert store.location == f"s3://{s3_bucket}/some/prefix"
    assert store.endpoint_url == moto_endpoint
    store.put("p/k", b"x")
    assert _all_keys(s3_client, s3_bucket) == ["some/prefix/p/k"]
    assert store.get("p/k") == b"x"


@pytest.mark.parametrize("location", ["ftp://host/path", "http://host/bucket", "s3://",
                                      "s3:///prefix", "s3://bucket/a//b", "s3://bucket/../x"])
def test_open_store_refuses_bad_locations(location: str) -> None:
    with pytest.raises(ConfigurationError):
        open_store(location, s3_endpoint_url="http://127.0.0.1:9")


def test_a_staged_object_can_be_read_back_until_it_is_published(store: ObjectStore) -> None:
    staged = store.stage(b"staged bytes \x00\x01")
    assert store.read_staged(staged) == b"staged bytes \x00\x01"
    store.publish([(staged, "p/dicom/aa/bb/readback.dcm")])
    assert store.get("p/dicom/aa/bb/readback.dcm") == b"staged bytes \x00\x01"
    with pytest.raises((StorageError, NotFoundError)):
        store.read_staged(staged)  # published: no longer in the staging area
