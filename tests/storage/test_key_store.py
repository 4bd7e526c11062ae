"""The key store: 32 random bytes per name, private files written once, atomically; key files
given by the user in raw, hex or base64 form, refused with one clear line otherwise."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from imagebank.domain.errors import ConfigurationError, ConflictError, InvalidInputError
from imagebank.storage.keys import (
    KEY_BYTES,
    FileKeyStore,
    KeyStore,
    MemoryKeyStore,
    create,
    fingerprint,
    get_or_create,
    read_key_file,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_key_is_made_once_private_and_reused(tmp_path: Path) -> None:
    store = FileKeyStore.in_data_folder(tmp_path / "data")  # the data folder does not exist
    key, created = get_or_create(store, "default")
    assert created and len(key) == KEY_BYTES
    path = tmp_path / "data" / "keys" / "deid" / "default.key"
    assert store.path("default") == path
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700
    assert path.read_text() == key.hex() + "\n"  # the same file works as --key-file
    assert os.listdir(path.parent) == ["default.key"]  # no temporary file left
    again, created = get_or_create(FileKeyStore.in_data_folder(tmp_path / "data"), "default")
    assert again == key and not created
    other, _ = get_or_create(store, "trial-7")
    assert other != key  # every name its own random key
    assert read_key_file(path) == key


def test_concurrent_creation_gives_one_key(tmp_path: Path) -> None:
    store = FileKeyStore.in_data_folder(tmp_path)
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def make() -> None:
        barrier.wait()
        keys.append(get_or_create(store, "shared")[0])

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert sorted(os.listdir(tmp_path / "keys" / "deid")) == ["shared.key"]


def test_a_key_is_never_replaced(tmp_path: Path) -> None:
    store = FileKeyStore.in_data_folder(tmp_path)
    first = create(store, "proj")
    with pytest.raises(ConflictError, match="never replaced") as raised:
        create(store, "proj", os.urandom(32))
    assert fingerprint(first) in raised.value.message
    assert first.hex() not in raised.value.message
    assert store.get("proj") == first


def test_a_store_key_others_can_read_is_refused(tmp_path: Path) -> None:
    store = FileKeyStore.in_data_folder(tmp_path)
    key = create(store, "proj")
    store.path("proj").chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600") as raised:
        store.get("proj")
    assert key.hex() not in raised.value.message


def test_names_are_project_ids(tmp_path: Path) -> None:
    store = FileKeyStore.in_data_folder(tmp_path)
    for bad in ("../escape", "Upper", "", "a/b", "x" * 65):
        with pytest.raises(InvalidInputError):
            get_or_create(store, bad)
    assert not (tmp_path / "keys").exists() or not any((tmp_path / "keys").rglob("*.key"))


def test_memory_store_follows_the_protocol() -> None:
    store = MemoryKeyStore()
    assert isinstance(store, KeyStore) and isinstance(FileKeyStore("/nowhere"), KeyStore)
    key, created = get_or_create(store, "p")
    assert created and get_or_create(store, "p") == (key, False)


def _private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_key_files_raw_hex_and_base64(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert read_key_file(_private(tmp_path / "raw", key)) == key
    assert read_key_file(_private(tmp_path / "hex", key.hex().upper().encode() + b"\n")) == key
    assert read_key_file(_private(tmp_path / "b64", base64.b64encode(key) + b"\r\n")) == key
    assert read_key_file(_private(tmp_path / "url", base64.urlsafe_b64encode(key))) == key
    longer = os.urandom(48)
    assert read_key_file(_private(tmp_path / "long", longer.hex().encode())) == longer


@pytest.mark.parametrize(("content", "words"), [
    (b"", "does not hold a key"),
    (b"correct horse battery staple and more words", "A passphrase is not a key"),
    (b"abcdef0123", "hexadecimal digits"),
    (base64.b64encode(b"\x01" * 16), "does not hold a key"),
    (b"\x00\x01\x02\xff" * 4, "holds 16 bytes"),
    (b"\xff" * 5000, "too large"),
])
def test_bad_key_files_are_one_line_errors(tmp_path: Path, content: bytes, words: str) -> None:
    path = _private(tmp_path / "key", content)
    with pytest.raises(InvalidInputError, match=words) as raised:
        read_key_file(path)
    assert "\n" not in raised.value.message and str(path) in raised.value.message


def test_key_file_others_may_read_missing_or_a_folder(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(os.urandom(32).hex())
    path.chmod(0o640)
    with pytest.raises(InvalidInputError, match="chmod 600"):
        read_key_file(path)
    with pytest.raises(InvalidInputError, match="no key file"):
        read_key_file(tmp_path / "absent")
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_key_file(tmp_path)


def test_fingerprints_tell_keys_apart_without_showing_them() -> None:
    a, b = bytes(32), bytes(31) + b"\x01"
    assert fingerprint(a) == fingerprint(bytes(32)) != fingerprint(b)
    assert len(fingerprint(a)) == 19 and a.hex()[:8] not in fingerprint(a).replace(":", "")
