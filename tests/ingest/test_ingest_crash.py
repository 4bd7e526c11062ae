"""Crash safety: a real ``imagebank ingest`` process SIGKILLed part-way loses nothing it
reported stored, and never leaves an index row without its object.

For several kill points, on SQLite and on PostgreSQL: every instance ID the process reported
(``--jsonl``: one line per committed batch) is in the index with its object and checksum;
``imagebank check`` finds no missing object (orphans may exist); ``check --repair`` makes it
clean; running the ingest again completes with exactly the corpus's counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.services.archive import Archive
from testkit import new_pg_database

IMAGEBANK = Path(sys.executable).parent / "imagebank"
BATCH = 16
#: (patient, studies, series per study, slices per series)
LAYOUT = [(n, 1 + n % 2, 1 + n % 3, 6 + n % 5) for n in range(14)]


def _expected() -> dict[str, int]:
    return {
        "subjects": len(LAYOUT),
        "studies": sum(studies for _, studies, _, _ in LAYOUT),
        "series": sum(studies * series for _, studies, series, _ in LAYOUT),
        "instances": sum(studies * series * slices for _, studies, series, slices in LAYOUT),
    }


@pytest.fixture(scope="module")
def crash_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash-corpus")
    for patient, studies, series, slices in LAYOUT:
        for study in range(studies):
            specs = [SeriesSpec(modality="CT" if s % 2 == 0 else "MR", slices=slices, rows=32,
                                columns=32) for s in range(series)]
            folder = root / f"pt{patient:02d}" / f"st{study}"
            folder.mkdir(parents=True)
            for i, ds in enumerate(make_study(SyntheticPatient.make(500 + patient),
                                              study_number=study, series=specs)):
                (folder / f"{i:04d}.dcm").write_bytes(to_bytes(ds))
    count = sum(1 for _ in root.rglob("*.dcm"))
    assert count == _expected()["instances"] > 300
    return root


def _database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'index.sqlite3'}"
    return new_pg_database(request.getfixturevalue("postgres_url"))


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {**os.environ, "IMAGEBANK_DATA": str(tmp_path / "data"),
            "IMAGEBANK_DATABASE_URL": database_url, "IMAGEBANK_BATCH_SIZE": str(BATCH),
            "IMAGEBANK_WORKERS": "2"}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(IMAGEBANK), *args], check=False, env=env, capture_output=True,
                            text=True, timeout=180)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _reader(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@contextlib.contextmanager
def _process_group(proc: subprocess.Popen[str]) -> Iterator[None]:
    """Whatever happens, the process we started and its parse workers end with the test."""
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the process we started
        proc.wait(timeout=30)


def _ingest_and_kill(corpus: Path, env: dict[str, str], after_batches: int
                     ) -> tuple[list[dict[str, Any]], bool]:
    """Start an ingest, SIGKILL it after ``after_batches`` reports; return every report."""
    proc = subprocess.Popen(
        [str(IMAGEBANK), "ingest", str(corpus), "--project", "p", "--jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
        start_new_session=True,
    )
    reports: list[dict[str, Any]] = []
    lines: queue.Queue[str | None] = queue.Queue()
    killed_running = False
    with _process_group(proc):
        thread = threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True)
        thread.start()
        while True:
            line = lines.get(timeout=120)
            if line is None:
                break
            reports.append(json.loads(line))
            if len([r for r in reports if r["event"] == "batch"]) == after_batches:
                killed_running = proc.poll() is None
                os.kill(proc.pid, signal.SIGKILL)  # the crash: no chance to clean up
                break
        proc.wait(timeout=30)
        # Its parse workers outlive it (they are not told their parent died) and hold its
        # stdout open: end them too, as the machine's crash would, to read stdout to its end.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Lines the process printed before it died were reported too.
        while (line := lines.get(timeout=30)) is not None:
            if line.strip():
                reports.append(json.loads(line))
        thread.join(timeout=30)
    return reports, killed_running


@pytest.mark.slow
@pytest.mark.parametrize("after_batches", [1, 3, 6])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_during_ingest_loses_nothing_reported(
    crash_corpus: Path, tmp_path: Path, request: pytest.FixtureRequest, backend: str,
    after_batches: int,
) -> None:
    database_url = _database(backend, tmp_path, request)
    env = _env(tmp_path, database_url)
    with Archive.open(tmp_path / "data", database_url=database_url) as archive:
        archive.create_project("p")

    reports, killed_running = _ingest_and_kill(crash_corpus, env, after_batches)
    batches = [r for r in reports if r["event"] == "batch"]
    assert killed_running, "the ingest finished before it could be killed: use a bigger corpus"
    assert not any(r["event"] == "summary" for r in reports)
    assert len(batches) >= after_batches
    reported = [iid for r in batches for iid in r["stored_ids"]]
    assert len(reported) == len(set(reported)) == batches[-1]["stored"]
    assert 0 < len(reported) < _expected()["instances"]

    # 1. Everything reported stored is in the index, with its object and the right checksum.
    with Archive.open(tmp_path / "data", database_url=database_url) as archive:
        for iid in reported:
            row = archive.get("instance", iid)
            data = archive.store.get(row["object_key"])
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
            assert len(data) == row["size_bytes"]
        indexed_before = archive.stats()["instances"]
    assert indexed_before >= len(reported)

    # 2. No index row lacks its object (objects without rows may exist).
    check = _run(["check", "--verify-checksums", "--json"], env)
    report = json.loads(check.stdout)
    assert report["missing_objects"] == 0
    assert report["size_mismatches"] == 0 and report["checksum_mismatches"] == 0
    assert check.returncode == (0 if report["orphans"] == 0 else 1)

    # 3. Repair, then the archive checks clean.
    repair = _run(["check", "--repair", "--staging-age", "0", "--json"], env)
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert json.loads(repair.stdout)["removed_rows"] == 0
    clean = _run(["check", "--json"], env)
    assert clean.returncode == 0, clean.stdout
    assert json.loads(clean.stdout)["orphans"] == 0
    staging = tmp_path / "data" / "objects" / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []

    # 4. Ingesting again completes, with exactly the corpus's counts.
    again = _run(["ingest", str(crash_corpus), "--project", "p", "--jsonl"], env)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["event"] == "summary"
    assert summary["stored"] + summary["duplicates"] == _expected()["instances"]
    assert summary["conflicts"] == summary["quarantined"] == 0
    stats = json.loads(_run(["stats", "--json"], env).stdout)
    assert {k: stats[k] for k in ("subjects", "studies", "series", "instances")} == _expected()
    assert stats["quarantined"] == 0
    with Archive.open(tmp_path / "data", database_url=database_url) as archive:
        final = archive.check(verify_checksums=True)
    assert final.ok and final.instances_checked == _expected()["instances"]
