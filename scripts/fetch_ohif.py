"""Fetch the prebuilt OHIF viewer (decision 0032) into ``.ohif/`` for ``imagebank serve`` to
serve at ``/ohif/``. Run by ``make ohif`` (which ``make run`` and ``make test`` depend on)::

    python3 scripts/fetch_ohif.py [--dest .ohif]

``npm pack`` downloads the pinned release of ``@ohif/app`` (its tarball holds the built app in
``dist/``); the tarball's SHA-512 must be the pinned integrity and its licence MIT, or nothing
is installed. ``dist/`` is extracted as published (the server adapts it to ``/ohif/`` as it
sends it) beside the package's LICENSE and a stamp, ``ohif.json``, written last. When the
stamp names the pinned version the script does nothing, without the network. Nothing of it is
committed (``.ohif/`` is git-ignored).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@ohif/app"
#: The newest OHIF 3 release when pinned (`npm view @ohif/app dist-tags`), and the SHA-512
#: integrity of its tarball as the registry publishes it (`npm view @ohif/app@3.13.2 dist`).
VERSION = "3.13.2"
INTEGRITY = ("sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq"
             "+jd5xXZB9E8EA==")
LICENCE = "MIT"
DEFAULT_DEST = Path(__file__).resolve().parent.parent / ".ohif"
STAMP = "ohif.json"


class SetupError(Exception):
    """What went wrong, in one sentence."""


def installed(dest: Path) -> bool:
    """The pinned release is already there (the stamp is written last)."""
    try:
        stamp = json.loads((dest / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return (stamp.get("version") == VERSION and stamp.get("integrity") == INTEGRITY
            and (dest / "dist" / "index.html").is_file())


def integrity_of(path: Path) -> str:
    """The Subresource Integrity string (``sha512-<base64>``) of a file, as npm writes it."""
    digest = hashlib.sha512()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def npm_pack(folder: Path) -> Path:
    """``npm pack`` of the pinned release into ``folder``; the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise SetupError("npm is needed to fetch OHIF; install it (Debian: apt-get install "
                         "npm) and run `make ohif` again.")
    command = [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(folder),
               "--ignore-scripts", "--json", "--silent"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SetupError(f"npm pack {PACKAGE}@{VERSION} failed: {last}")
    tarballs = sorted(folder.glob("*.tgz"))
    if len(tarballs) != 1:
        raise SetupError(f"npm pack {PACKAGE}@{VERSION} did not write one tarball.")
    return tarballs[0]


def check_licence(tar: tarfile.TarFile) -> bytes:
    """The package's LICENSE text, after checking that package.json and LICENSE say MIT."""
    manifest = _member_bytes(tar, "package/package.json")
    meta = json.loads(manifest)
    if meta.get("name") != PACKAGE or meta.get("version") != VERSION:
        raise SetupError("The tarball is not the pinned OHIF release.")
    if meta.get("license") != LICENCE:
        raise SetupError(f"The OHIF package's licence is {meta.get('license')!r}, not "
                         f"{LICENCE}; it is not installed.")
    text = _member_bytes(tar, "package/LICENSE")
    if b"The MIT License" not in text and b"MIT License" not in text:
        raise SetupError("The OHIF package's LICENSE is not the MIT licence; it is not "
                         "installed.")
    return text


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        stream = tar.extractfile(name)
    except KeyError:
        stream = None
    if stream is None:
        raise SetupError(f"The OHIF tarball has no {name.removeprefix('package/')}.")
    return stream.read()


def extract_dist(tar: tarfile.TarFile, target: Path) -> int:
    """``package/dist/`` into ``target`` (regular files and folders only, no path outside it:
    tarfile's ``data`` filter); the number of files."""
    prefix = "package/dist/"
    members = []
    for member in tar.getmembers():
        if not member.name.startswith(prefix) or not (member.isfile() or member.isdir()):
            continue
        member.name = member.name[len(prefix):]
        if member.name:
            members.append(member)
    tar.extractall(target, members=members, filter="data")
    return sum(1 for m in members if m.isfile())


def install(dest: Path) -> dict[str, object]:
    """Fetch, verify and install the pinned release into ``dest``; the stamp written."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as scratch:
        folder = Path(scratch)
        tarball = npm_pack(folder)
        found = integrity_of(tarball)
        if found != INTEGRITY:
            raise SetupError(f"The {PACKAGE}@{VERSION} tarball's SHA-512 is not the pinned "
                             "one; it is not installed.")
        staged = folder / "dist"
        with tarfile.open(tarball, "r:gz") as tar:
            licence = check_licence(tar)
            files = extract_dist(tar, staged)
        if not (staged / "index.html").is_file():
            raise SetupError("The OHIF tarball has no dist/index.html.")
        (dest / STAMP).unlink(missing_ok=True)  # not installed until the new stamp is there
        shutil.rmtree(dest / "dist", ignore_errors=True)
        staged.rename(dest / "dist")
        (dest / "LICENSE").write_bytes(licence)
    stamp: dict[str, object] = {"package": PACKAGE, "version": VERSION, "integrity": INTEGRITY,
                                "license": LICENCE, "files": files}
    (dest / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    return stamp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help="where to install (default: .ohif/ in the repository)")
    args = parser.parse_args(argv)
    dest: Path = args.dest
    if installed(dest):
        (dest / STAMP).touch()  # newer than this script: make has nothing more to do
        print(f"OHIF {VERSION} is installed in {dest}.")
        return 0
    try:
        stamp = install(dest)
    except (SetupError, OSError, tarfile.TarError, subprocess.TimeoutExpired) as exc:
        print(f"fetch_ohif: {exc}", file=sys.stderr)
        return 1
    print(f"OHIF {VERSION} ({LICENCE}, {stamp['files']} files) installed in {dest / 'dist'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
