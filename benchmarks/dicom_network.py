"""(f) DICOM network services and DICOMweb, side by side with Orthanc 1.10 (Debian).

Each pair runs in this script, on the same synthetic corpus (5,000 CT instances of 512×512,
16-bit; smoke: 100 of 64×64), against a fresh server each time:

* C-STORE from one DCMTK ``storescu`` association (every file of the corpus, in order), to
  ``imagebank serve --dicom-port`` and to Orthanc's DICOM listener; both with
  ``TCP_NODELAY=1``. Instances/s from the start of ``storescu`` to its exit.
* Eight ``storescu`` at once, each sending a quarter of the corpus, so that every instance is
  sent twice by two of them: afterwards each server must hold every instance exactly once.
* STOW-RS, 20 instances a request (multipart/related), two client threads, to
  ``/projects/bench/dicomweb/studies`` and to Orthanc's ``/dicom-web/studies``.
* QIDO-RS study search on the data just stored: by PatientID and by a StudyDate range,
  median latency of 50 (after 3 warm-ups), both servers.
* QIDO-RS study search on an index of 1,000,000 instances (the fixture of (c)): by
  PatientID and by a 30-day StudyDate range; target under 20 ms.

Run alone: ``python benchmarks/dicom_network.py [--smoke] [--only cstore|concurrent|stow|qido|
qido1m] [--no-orthanc]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_listing import WARMUP, _percentile
from common import (
    CorpusSpec,
    Result,
    corpus_files,
    ensure_corpus,
    format_table,
    fresh_run_dir,
    remove,
    wait_until_quiet,
)
from index_queries import DAYS, FIRST_DAY, ensure_index
from ingest_throughput import OrthancServer, _free_port, orthanc_available, orthanc_version
from rest_upload import API, PROJECT, ImagebankServer

STORESCU = "/usr/bin/storescu"
CALLING = "BENCHSCU"
AE_TITLE = "BENCH"
QUERIES = 50
STOW_BATCH = 20
PARTS = ("cstore", "concurrent", "stow", "qido", "qido1m")


def _dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def storescu(port: int, called: str, files: list[Path]) -> float:
    """Send ``files`` over one association; the seconds it took. Raises if any failed."""
    started = time.perf_counter()
    proc = subprocess.run([STORESCU, "-aet", CALLING, "-aec", called, "127.0.0.1", str(port),
                           *map(str, files)],
                          capture_output=True, text=True, env=_dcmtk_env(), timeout=3600,
                          check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"storescu exited {proc.returncode}: {proc.stderr[-800:]}")
    return seconds


def concurrent_storescu(port: int, called: str, files: list[Path], senders: int = 8) -> float:
    """``senders`` storescu at once, each a quarter of ``files`` (every file sent twice)."""
    n = len(files)
    share = max(1, n // 4)
    step = max(1, n // senders)
    procs = []
    started = time.perf_counter()
    for i in range(senders):
        mine = [files[(i * step + k) % n] for k in range(share)]
        procs.append(subprocess.Popen(
            [STORESCU, "-aet", CALLING, "-aec", called, "127.0.0.1", str(port),
             *map(str, mine)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=_dcmtk_env()))
    failed = []
    for proc in procs:
        _, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            failed.append(err.decode(errors="replace")[-300:])
    seconds = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"{len(failed)} storescu failed: {failed[0]}")
    return seconds


def sent_twice(files: list[Path], senders: int = 8) -> int:
    n = len(files)
    share = max(1, n // 4)
    step = max(1, n // senders)
    return len({(i * step + k) % n for i in range(senders) for k in range(share)})


# -- the two servers ------------------------------------------------------------------------
class Imagebank:
    def __init__(self, run: Path) -> None:
        self.dicom_port = _free_port()
        self.server = ImagebankServer(run / "data", log=run / "serve.log",
                                      serve_args=["--dicom-port", str(self.dicom_port)])

    def __enter__(self) -> Imagebank:
        self.server.__enter__()
        try:
            self.server.cli("project", "ae", PROJECT, AE_TITLE)
            self.server.cli("project", "allow", PROJECT, CALLING)
        except BaseException:
            self.server.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def instances(self) -> int:
        return int(self.server.counts()["instances"])

    @property
    def stow_url(self) -> str:
        return f"{self.server.url}/projects/{PROJECT}/dicomweb/studies"

    @property
    def qido_url(self) -> str:
        return f"{self.server.url}/dicomweb/studies"

    @property
    def headers(self) -> dict[str, str]:
        return self.server.headers


class Orthanc:
    def __init__(self, run: Path) -> None:
        self.server = OrthancServer(run, dicom=True, dicomweb=True)

    def __enter__(self) -> Orthanc:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def dicom_port(self) -> int:
        return self.server.dicom_port

    def instances(self) -> int:
        return int(self.server.statistics()["CountInstances"])

    @property
    def stow_url(self) -> str:
        return f"{self.server.url}/dicom-web/studies"

    @property
    def qido_url(self) -> str:
        return f"{self.server.url}/dicom-web/studies"

    @property
    def headers(self) -> dict[str, str]:
        return {}


def _contestants(with_orthanc: bool) -> list[tuple[str, Any, str]]:
    found: list[tuple[str, Any, str]] = [("imagebank", Imagebank, AE_TITLE)]
    if with_orthanc and orthanc_available():
        found.append((f"Orthanc {orthanc_version()}", Orthanc, "ORTHANC"))
    return found


# -- STOW-RS --------------------------------------------------------------------------------
def _multipart(blobs: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for blob in blobs:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        parts.append(blob)
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return (b"".join(parts),
            f'multipart/related; type="application/dicom"; boundary={boundary}')


def stow(url: str, files: list[Path], headers: dict[str, str], threads: int = 2) -> float:
    """POST ``files`` in requests of STOW_BATCH from ``threads`` threads; the seconds."""
    import requests

    batches = [files[i:i + STOW_BATCH] for i in range(0, len(files), STOW_BATCH)]
    lock = threading.Lock()
    failures: list[str] = []

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if not batches:
                        return
                    batch = batches.pop(0)
                body, content_type = _multipart([p.read_bytes() for p in batch])
                response = session.post(url, data=body, timeout=600, headers={
                    **headers, "Content-Type": content_type,
                    "Accept": "application/dicom+json"})
                if response.status_code != 200:
                    with lock:
                        failures.append(f"{response.status_code} {response.text[:300]}")

    workers = [threading.Thread(target=client) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} STOW-RS requests failed: {failures[0]}")
    return seconds


# -- QIDO-RS --------------------------------------------------------------------------------
def time_qido(url: str, params: list[dict[str, str]], headers: dict[str, str],
              check: Any) -> list[float]:
    import requests

    times = []
    with requests.Session() as session:
        for p in params:
            started = time.perf_counter()
            response = session.get(url, params=p, timeout=60,
                                   headers={**headers, "Accept": "application/dicom+json"})
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code not in (200, 204):
                raise RuntimeError(f"QIDO {sorted(p)}: {response.status_code} "
                                   f"{response.text[:300]}")
            check(p, response.json() if response.status_code == 200 else [])
            times.append(elapsed)
    return times[WARMUP:]


def _value(match: dict[str, Any], tag: str) -> Any:
    values = match.get(tag, {}).get("Value") or [None]
    return values[0]


def check_patient(p: dict[str, str], matches: list[dict[str, Any]]) -> None:
    if not matches or any(_value(m, "00100020") != p["PatientID"] for m in matches):
        raise RuntimeError(f"a PatientID search returned {len(matches)} studies, or another "
                           "patient's")


def check_dates(p: dict[str, str], matches: list[dict[str, Any]]) -> None:
    low, high = p["StudyDate"].split("-")
    if any(not low <= str(_value(m, "00080020")) <= high for m in matches):
        raise RuntimeError("a StudyDate search returned a study outside the range")


def _latency(group: str, name: str, times: list[float], *, target: float | None = None,
             baseline: float | None = None, log: Any = print) -> Result:
    median = statistics.median(times)
    p95 = _percentile(times, 0.95)
    log(f"  {name}: median {median:.2f} ms, p95 {p95:.2f} ms")
    result = Result(group, f"{name}, median of {len(times)}", median, "ms",
                    detail=f"p95 {p95:.2f} ms")
    if baseline is not None:
        result.ratio, result.ratio_of = median / baseline, "Orthanc (lower is better)"
        result.target, result.met = "<= Orthanc's median", median <= baseline
    if target is not None:
        result.target = (result.target + "; " if result.target else "") + f"< {target:.0f} ms"
        result.met = (result.met is not False) and median < target
    return result


# -- the measurements -----------------------------------------------------------------------
def measure(spec: CorpusSpec, *, only: set[str], with_orthanc: bool = True,
            index_instances: int = 1_000_000, quiet_wait: float = 60, log: Any = print
            ) -> list[Result]:
    results: list[Result] = []
    files = corpus_files(spec) if only & {"cstore", "concurrent", "stow", "qido"} else []
    if files:
        ensure_corpus(spec, log)
        files = corpus_files(spec)
    n = len(files)
    group = f"DICOM network, {n:,} CT instances {spec.rows}x{spec.columns}"
    per: dict[str, dict[str, float]] = {}
    times: dict[str, dict[str, list[float]]] = {}
    for name, kind, called in _contestants(with_orthanc):
        mine = per.setdefault(name, {})
        if "cstore" in only:
            run = fresh_run_dir("dicom-cstore")
            try:
                with kind(run) as server:
                    seconds = storescu(server.dicom_port, called, files)
                    stored = server.instances()
                if stored != n:
                    raise RuntimeError(f"{name} holds {stored} of {n} instances after C-STORE")
                mine["cstore"] = n / seconds
                log(f"  {name}: C-STORE one association {n / seconds:.1f} inst/s")
            finally:
                remove(run)
        if "concurrent" in only:
            run = fresh_run_dir("dicom-concurrent")
            try:
                with kind(run) as server:
                    seconds = concurrent_storescu(server.dicom_port, called, files)
                    stored = server.instances()
                expected = sent_twice(files)
                if stored != expected:
                    raise RuntimeError(f"{name} holds {stored} instances after 8 concurrent "
                                       f"storescu; {expected} were sent")
                mine["concurrent"] = 2 * expected / seconds
                log(f"  {name}: 8 storescu at once, {2 * expected} sends of {expected} "
                    f"instances: {2 * expected / seconds:.1f} sends/s, {stored} held (exact)")
            finally:
                remove(run)
        if "stow" in only or "qido" in only:
            run = fresh_run_dir("dicom-stow")
            try:
                with kind(run) as server:
                    seconds = stow(server.stow_url, files, server.headers)
                    stored = server.instances()
                    if stored != n:
                        raise RuntimeError(f"{name} holds {stored} of {n} after STOW-RS")
                    mine["stow"] = n / seconds
                    log(f"  {name}: STOW-RS {STOW_BATCH}/request, 2 threads "
                        f"{n / seconds:.1f} inst/s")
                    if "qido" in only:
                        os.sync()  # the stored gigabytes' writeback must not run under it
                        if quiet_wait:
                            wait_until_quiet(max_wait=quiet_wait, log=log)
                        patients, dates = _qido_params(spec)
                        times[name] = {
                            "qido_patient": time_qido(server.qido_url, patients,
                                                      server.headers, check_patient),
                            "qido_dates": time_qido(server.qido_url, dates, server.headers,
                                                    check_dates)}
                        for key, value in times[name].items():
                            mine[key] = statistics.median(value)
                        log(f"  {name}: QIDO-RS PatientID {mine['qido_patient']:.2f} ms, "
                            f"StudyDate range {mine['qido_dates']:.2f} ms")
            finally:
                remove(run)
    ours = per["imagebank"]
    theirs = next((v for k, v in per.items() if k != "imagebank"), {})
    for key, what, target in (
        ("cstore", "C-STORE, one storescu association", 1.5),
        ("concurrent", "C-STORE, 8 storescu at once (every instance twice; counts exact)", None),
        ("stow", f"STOW-RS, {STOW_BATCH} instances a request, 2 threads", 1.5),
    ):
        if key not in ours:
            continue
        result = Result(group, f"imagebank {what}", ours[key],
                        "sends/s" if key == "concurrent" else "inst/s")
        if key in theirs:
            results.append(Result(group, f"Orthanc {what}", theirs[key], result.unit))
            result.ratio, result.ratio_of = ours[key] / theirs[key], "Orthanc"
            if target:
                result.target, result.met = f">= {target}x Orthanc", result.ratio >= target
        results.append(result)
    for key, what in (("qido_patient", "QIDO-RS studies by PatientID"),
                      ("qido_dates", "QIDO-RS studies by StudyDate range")):
        if key in ours:
            if key in theirs:
                results.append(Result(group, f"Orthanc {what}, median of {QUERIES}",
                                      theirs[key], "ms"))
            results.append(_latency(group, f"imagebank {what}", times["imagebank"][key],
                                    baseline=theirs.get(key), log=lambda *_: None))
    if "qido1m" in only:
        results.extend(qido_large(index_instances, log=log,
                                  quiet_wait=0 if index_instances < 100_000 else 120))
    return results


def _qido_params(spec: CorpusSpec) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    from imagebank.dicom.synthetic import SyntheticPatient

    rng = random.Random(7)
    patients_in_corpus = sorted({p for p, _, _ in spec.studies()})
    patients = [{"PatientID": SyntheticPatient.make(rng.choice(patients_in_corpus)).patient_id}
                for _ in range(WARMUP + QUERIES)]
    dates = []
    for _ in range(WARMUP + QUERIES):
        year = rng.randrange(2010, 2024)
        dates.append({"StudyDate": f"{year}0101-{year}1231"})
    return patients, dates


def qido_large(instances: int, *, quiet_wait: float = 120, log: Any = print) -> list[Result]:
    """QIDO-RS on the synthetic index of (c): ``instances`` rows, served by ``serve``."""
    source = ensure_index(instances, log)
    import json

    counts = json.loads(source.with_suffix(".json").read_text())
    rng = random.Random(11)
    patients = [{"PatientID": f"P{rng.randrange(counts['subjects']):08d}", "limit": "100"}
                for _ in range(WARMUP + QUERIES)]
    dates = []
    for _ in range(WARMUP + QUERIES):
        start = FIRST_DAY + timedelta(days=rng.randrange(DAYS - 30))
        dates.append({"StudyDate": f"{start:%Y%m%d}-{start + timedelta(days=29):%Y%m%d}",
                      "limit": "100"})
    run = fresh_run_dir("dicom-qido1m")
    group = f"QIDO-RS over HTTP, index of {instances:,} instances (SQLite)"
    results = []
    try:
        shutil.copytree(source, run / "data")
        os.sync()  # the copy's 4 GB of writeback must not run under the measurement
        with ImagebankServer(run / "data", project=None, log=run / "serve.log") as server:
            url = f"{server.url}/projects/{PROJECT}/dicomweb/studies"
            if quiet_wait:
                wait_until_quiet(max_wait=quiet_wait, log=log)
            for name, params, check in (("by PatientID", patients, check_patient),
                                        ("by StudyDate range (30 days)", dates, check_dates)):
                times = time_qido(url, params, server.headers, check)
                results.append(_latency(group, f"GET .../dicomweb/studies {name}", times,
                                        target=20.0, log=log))
            probe = time_qido(f"{server.url}{API}/health", [{} for _ in range(WARMUP + 20)],
                              {}, lambda _p, _m: None)
            log(f"  (HTTP floor: GET /api/v1/health median {statistics.median(probe):.2f} ms)")
    finally:
        remove(run)
    return results


def smoke_spec() -> CorpusSpec:
    return CorpusSpec(100, 64, 64)


def full_spec() -> CorpusSpec:
    return CorpusSpec(5000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--only", choices=PARTS, action="append")
    parser.add_argument("--instances", type=int, default=None,
                        help="rows of the QIDO index (default 1,000,000; smoke 20,000)")
    args = parser.parse_args()
    spec = smoke_spec() if args.smoke else full_spec()
    index = args.instances or (20_000 if args.smoke else 1_000_000)
    print(format_table(measure(spec, only=set(args.only or PARTS),
                               with_orthanc=not args.no_orthanc, index_instances=index,
                               quiet_wait=0 if args.smoke else 60)))


if __name__ == "__main__":
    main()
