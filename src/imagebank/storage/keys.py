"""The key store: de-identification keys, kept as files in the data folder (STYLE.md practice
5: a protocol, a file adapter and an in-memory one).

A key is 32 random bytes (``secrets.token_bytes``) under a name (a project ID, or
``default``), for a purpose (``deid``): ``DATA/keys/<purpose>/<name>.key``, holding the key as
64 hexadecimal digits and a newline, so that the same file can be handed to
``imagebank deid --key-file`` or installed at another site that shares the project's key.

* The folders are mode 0700 and the files 0600. A key file that others may read is refused,
  as ssh refuses such a private key: the key is what keeps pseudonyms from being reversed by
  hashing candidate identifiers.
* A key is written once, atomically: a temporary file in the same folder, written, fsynced,
  then *linked* to its name (never replacing a key already there, even when two processes
  create one at the same moment), and the folder fsynced.
* A key is never logged, printed or put in a message. ``fingerprint(key)`` (a SHA-256 prefix of
  a labelled key) tells keys apart without revealing them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
import uuid
from pathlib import Path
from typing import Protocol, runtime_checkable

from imagebank.domain.errors import ConfigurationError, ConflictError, InvalidInputError
from imagebank.storage.durable import fsync_folder_quietly, link_new

#: Bytes of a key made here; a key read from a file must have at least as many.
KEY_BYTES = 32
#: The purpose of the keys ``imagebank deid``, share and export use.
DEID = "deid"
#: The key ``imagebank deid`` uses when no project is named.
DEFAULT_NAME = "default"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_HEX = re.compile(rb"^[0-9a-fA-F]+$")
_BASE64 = re.compile(rb"^[A-Za-z0-9+/_-]+={0,2}$")
#: A key file is small; anything larger is not one (and is not read whole).
_MAX_KEY_FILE = 4096


def fingerprint(key: bytes) -> str:
    """A short, stable name for a key (16 hex digits in groups of four), safe to print: a
    SHA-256 of the labelled key, which reveals nothing of it."""
    digest = hashlib.sha256(b"imagebank key fingerprint\x00" + key).hexdigest()[:16]
    return ":".join(digest[i:i + 4] for i in range(0, 16, 4))


def check_name(name: str) -> str:
    """A key's name (a project ID): lowercase letters, digits, - and _, at most 64."""
    if not _NAME.fullmatch(name or ""):
        raise InvalidInputError(
            "A key name is a project ID: 1-64 lowercase letters, digits, - and _, starting "
            "with a letter or digit.")
    return name


def parse_key(data: bytes, where: str) -> bytes:
    """The key in a key file's content: 64+ hexadecimal digits, base64 of 32+ bytes (text,
    surrounding white space ignored), or 32+ raw bytes that are not text. ``where`` names the
    file in the error (never its content)."""
    text = data.strip()
    if text and _HEX.fullmatch(text):
        if len(text) % 2 == 0 and len(text) >= 2 * KEY_BYTES:
            return bytes.fromhex(text.decode("ascii"))
        raise InvalidInputError(
            f"The key file {where} holds {len(text)} hexadecimal digits; a key needs at least "
            f"{2 * KEY_BYTES}, an even number.")
    if text and _BASE64.fullmatch(text):
        try:
            padded = text + b"=" * (-len(text) % 4)
            decoded = (base64.urlsafe_b64decode(padded) if re.search(rb"[-_]", text)
                       else base64.b64decode(padded, validate=True))
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) >= KEY_BYTES:
            return decoded
    if _looks_like_text(data):
        raise InvalidInputError(
            f"The key file {where} does not hold a key: write {KEY_BYTES}+ random bytes, as "
            f"raw bytes, {2 * KEY_BYTES}+ hexadecimal digits or base64 (e.g. `imagebank key "
            "create`, or `openssl rand -hex 32`). A passphrase is not a key.")
    if len(data) < KEY_BYTES:
        raise InvalidInputError(
            f"The key file {where} holds {len(data)} bytes; a key has at least {KEY_BYTES}.")
    return data


def _looks_like_text(data: bytes) -> bool:
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in decoded)


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The key in a file given by the user (``--key-file``). Refused, with a one-line reason:
    a missing or unreadable file, one that others may read, or one that holds no key."""
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise InvalidInputError(f"There is no key file {where}.") from None
    except OSError as exc:
        raise InvalidInputError(f"The key file {where} cannot be read ({exc.strerror}).") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(f"The key file {where} is not a regular file.")
        _check_private(info, where)
        if info.st_size > _MAX_KEY_FILE:
            raise InvalidInputError(
                f"The key file {where} is {info.st_size:,} bytes: too large to be a key.")
        data = os.read(fd, _MAX_KEY_FILE + 1)
    except OSError as exc:
        raise InvalidInputError(f"The key file {where} cannot be read ({exc.strerror}).") from None
    finally:
        os.close(fd)
    return parse_key(data, where)


def _check_private(info: os.stat_result, where: str) -> None:
    if info.st_mode & 0o077:
        raise InvalidInputError(
            f"The key file {where} may be read by others (mode {stat.S_IMODE(info.st_mode):04o})"
            f"; make it private first: chmod 600 {where}")


@runtime_checkable
class KeyStore(Protocol):
    """Keys by purpose and name."""

    def get(self, name: str, purpose: str = DEID) -> bytes | None:
        """The key, or None when there is none."""
        ...

    def add(self, name: str, key: bytes, purpose: str = DEID) -> bool:
        """Keep ``key`` under ``name`` unless one is there already; True if it was added."""
        ...


def get_or_create(store: KeyStore, name: str, purpose: str = DEID) -> tuple[bytes, bool]:
    """The key under ``name``, made (32 random bytes) if there is none; (key, created)."""
    check_name(name)
    key = store.get(name, purpose)
    if key is not None:
        return key, False
    if store.add(name, secrets.token_bytes(KEY_BYTES), purpose):
        created = store.get(name, purpose)
        if created is None:  # pragma: no cover - removed between the two calls
            raise ConfigurationError("The key just written cannot be read back.")
        return created, True
    existing = store.get(name, purpose)  # another process made it first: use theirs
    if existing is None:  # pragma: no cover
        raise ConfigurationError("The key store lost a key while it was being created.")
    return existing, False


def create(store: KeyStore, name: str, key: bytes | None = None, purpose: str = DEID) -> bytes:
    """Add a new key (random, or ``key``) under ``name``; ConflictError if there is one."""
    check_name(name)
    key = secrets.token_bytes(KEY_BYTES) if key is None else key
    if len(key) < KEY_BYTES:
        raise InvalidInputError(f"A key has at least {KEY_BYTES} bytes.")
    if not store.add(name, key, purpose):
        raise ConflictError(
            f"There is already a {purpose} key named {name!r} (fingerprint "
            f"{fingerprint(store.get(name, purpose) or b'')}); a key is never replaced, as "
            "everything pseudonymised with it depends on it.")
    return key


class FileKeyStore:
    """Keys as files under ``root`` (``DATA/keys``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @classmethod
    def in_data_folder(cls, data: str | os.PathLike[str]) -> FileKeyStore:
        return cls(Path(data) / "keys")

    def path(self, name: str, purpose: str = DEID) -> Path:
        return self.root / check_name(purpose) / f"{check_name(name)}.key"

    def get(self, name: str, purpose: str = DEID) -> bytes | None:
        path = self.path(name, purpose)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigurationError(
                f"The key store cannot read {path} ({exc.strerror}).") from None
        try:
            info = os.fstat(fd)
            if info.st_mode & 0o077:
                raise ConfigurationError(
                    f"The key file {path} may be read by others (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}); make it private: chmod 600 {path}")
            data = os.read(fd, _MAX_KEY_FILE + 1)
        finally:
            os.close(fd)
        try:
            return parse_key(data, str(path))
        except InvalidInputError as exc:
            raise ConfigurationError(f"The key store is damaged: {exc.message}") from None

    def add(self, name: str, key: bytes, purpose: str = DEID) -> bool:
        path = self.path(name, purpose)
        if len(key) < KEY_BYTES:
            raise InvalidInputError(f"A key has at least {KEY_BYTES} bytes.")
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            self._private_folder(self.root)
            self._private_folder(path.parent)
            temporary = path.parent / f".{path.stem}.{uuid.uuid4().hex}.tmp"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, key.hex().encode("ascii") + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                added = link_new(temporary, path)
            finally:
                temporary.unlink(missing_ok=True)
            fsync_folder_quietly(path.parent)
        except OSError as exc:
            raise ConfigurationError(
                f"The key store cannot write to {path.parent} ({exc.strerror}).") from None
        return added

    @staticmethod
    def _private_folder(folder: Path) -> None:
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            return
        os.chmod(folder, 0o700)  # whatever the umask
        fsync_folder_quietly(folder.parent)


class MemoryKeyStore:
    """Keys in memory (tests, embedding)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], bytes] = {}

    def get(self, name: str, purpose: str = DEID) -> bytes | None:
        return self._keys.get((check_name(purpose), check_name(name)))

    def add(self, name: str, key: bytes, purpose: str = DEID) -> bool:
        slot = (check_name(purpose), check_name(name))
        if slot in self._keys:
            return False
        self._keys[slot] = bytes(key)
        return True
