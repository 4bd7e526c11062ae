"""scripts/fetch_ohif.py (decision 0032), without the network: a stand-in tarball in place of
`npm pack`'s, checked, extracted and stamped; refused when its checksum or licence is wrong;
nothing fetched when the stamp is there."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from testkit import REPO


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_ohif", REPO / "scripts" / "fetch_ohif.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tarball(path: Path, *, licence: str = "MIT", extra: list[tarfile.TarInfo] | None = None,
             version: str | None = None) -> Path:
    fetch = _script()
    files = {
        "package/package.json": json.dumps({"name": "@ohif/app", "license": licence,
                                            "version": version or fetch.VERSION}).encode(),
        "package/LICENSE": b"The MIT License (MIT)\n\nCopyright (c) 2015 OHIF\n",
        "package/README.md": b"not extracted",
        "package/dist/index.html": b"<!doctype html><title>OHIF</title>",
        "package/dist/app.bundle.0123456789abcdef.js": b'__webpack_require__.p = "/";',
        "package/dist/assets/logo.svg": b"<svg/>",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _patched(monkeypatch: pytest.MonkeyPatch, tarball: Path, *, pin: bool = True) -> Any:
    fetch = _script()
    calls: list[Path] = []

    def npm_pack(folder: Path) -> Path:
        calls.append(folder)
        target = folder / tarball.name
        target.write_bytes(tarball.read_bytes())
        return target

    monkeypatch.setattr(fetch, "npm_pack", npm_pack)
    if pin:
        monkeypatch.setattr(fetch, "INTEGRITY", fetch.integrity_of(tarball))
    fetch.calls = calls
    return fetch


def test_the_pinned_package_is_checked_extracted_and_stamped(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    escape = tarfile.TarInfo("package/dist/../../escaped.txt")
    escape.size = 1
    link = tarfile.TarInfo("package/dist/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    fetch = _patched(monkeypatch, _tarball(tmp_path / "ohif.tgz", extra=[escape, link]))
    dest = tmp_path / ".ohif"
    assert fetch.main(["--dest", str(dest)]) == 1  # the data filter refuses the escape
    assert not (dest / "ohif.json").exists() and not (tmp_path / "escaped.txt").exists()

    fetch = _patched(monkeypatch, _tarball(tmp_path / "clean.tgz", extra=[link]))
    assert fetch.main(["--dest", str(dest)]) == 0
    files = sorted(p.relative_to(dest / "dist").as_posix()
                   for p in (dest / "dist").rglob("*") if p.is_file() or p.is_symlink())
    assert files == ["app.bundle.0123456789abcdef.js", "assets/logo.svg", "index.html"]
    stamp = json.loads((dest / "ohif.json").read_text())
    assert (stamp["version"], stamp["license"], stamp["files"]) == (fetch.VERSION, "MIT", 3)
    assert stamp["integrity"] == fetch.INTEGRITY
    assert (dest / "LICENSE").read_text().startswith("The MIT License")
    assert list(dest.glob(".fetch-*")) == []  # the scratch folder is gone

    assert fetch.main(["--dest", str(dest)]) == 0  # installed: npm is not run again
    assert len(fetch.calls) == 1


def test_a_tarball_with_another_checksum_is_not_installed(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    fetch = _patched(monkeypatch, _tarball(tmp_path / "ohif.tgz"), pin=False)
    dest = tmp_path / ".ohif"
    assert fetch.main(["--dest", str(dest)]) == 1
    assert not (dest / "dist").exists() and not (dest / "ohif.json").exists()


@pytest.mark.parametrize(("licence", "version"), [("GPL-3.0", None), ("MIT", "3.0.0")])
def test_another_licence_or_version_is_not_installed(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     licence: str, version: str | None) -> None:
    fetch = _patched(monkeypatch, _tarball(tmp_path / "ohif.tgz", licence=licence,
                                           version=version))
    dest = tmp_path / ".ohif"
    assert fetch.main(["--dest", str(dest)]) == 1
    assert not (dest / "dist").exists()


def test_the_integrity_is_npms(tmp_path: Path) -> None:
    """npm's form: "sha512-" and the base64 of the digest (as `npm view ... dist` prints);
    the digest of "abc" is FIPS 180-2's test vector."""
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    vector = ("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
              "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
    expected = "sha512-" + base64.b64encode(bytes.fromhex(vector)).decode()
    assert _script().integrity_of(path) == expected
