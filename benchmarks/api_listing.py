"""(e) Study listing through the real server: a project of 100,000 studies.

The index is a fixture synthesised as rows: 50,000 subjects (two studies each) and 100,000
studies over 15 years of StudyDate (2010-2024), bulk-inserted through SQLAlchemy Core into
the schema ``Archive.open`` creates (the study rows carry counts and sizes, but there are no
series, instances or objects: a study listing reads studies and subjects only), with the
planner statistics an ingest leaves (``Archive.optimize``). It is cached under
``benchmarks/.work/`` and copied to a fresh data folder for each run, where the CLI adds an
administrator and a token and ``imagebank serve`` runs as a subprocess.

Timed over HTTP from one keep-alive ``requests.Session``, 5 warm-up requests then 50, each
from sending the request to the whole body received (median and p95):

* the first page: ``GET /api/v1/projects/bench/studies?limit=100``;
* a PatientID filter (a different existing PatientID each time: 2 studies);
* a StudyDate range of 30 days (a different window each time: ~550 matching, 100 returned).

Informative rows: ``GET /api/v1/health`` (no authentication, no audit: the HTTP floor), and
the first page through ``Archive.studies`` in this process (no HTTP: the query itself).

Run alone: ``python benchmarks/api_listing.py [--smoke | --studies N]``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK, Result, ensure_built, format_table, fresh_run_dir, remove, wait_until_quiet
from index_queries import DAYS, FIRST_DAY, _id, _insert_parents, _uid
from rest_upload import API, ImagebankServer

PROJECT = "bench"
QUERIES = 50
WARMUP = 5
TARGET_MS = 50.0
MODALITIES = ("CT", "MR", "CR", "DX", "US")


def fixture_dir(studies: int) -> Path:
    return WORK / f"listing-{studies}"


def ensure_fixture(studies: int, log: Any = print) -> Path:
    """The data folder of an archive whose project ``bench`` holds ``studies`` studies."""
    return ensure_built(fixture_dir(studies), lambda folder: _build(folder, studies),
                        f"an index of {studies:,} studies", log)


def _build(folder: Path, n_studies: int) -> dict[str, int]:
    from sqlalchemy import func, select

    from imagebank.index.tables import Study, Subject
    from imagebank.services.archive import Archive

    rng = random.Random(20241130)
    n_subjects = max(1, n_studies // 2)
    stamp = datetime(2024, 6, 1, tzinfo=UTC)
    archive = Archive.open(folder)
    try:
        archive.create_project(PROJECT)
        engine = archive.engine
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        subjects = [{
            "id": _id("subject", k), "project_id": PROJECT, "patient_id": f"P{k:08d}",
            "issuer_of_patient_id": "SYNTH-TRUST", "patient_name": f"SYNTHETIC^PATIENT{k}",
            "patient_birth_date": (date(1930, 1, 1) + timedelta(days=rng.randrange(30000))
                                   ).strftime("%Y%m%d"),
            "patient_sex": "MF"[k % 2], "num_studies": 0, "created_at": stamp,
        } for k in range(n_subjects)]
        owners = [s % n_subjects for s in range(n_studies)]
        rng.shuffle(owners)
        for owner in owners:
            subjects[owner]["num_studies"] += 1
        studies = []
        for s in range(n_studies):
            modality = rng.choice(MODALITIES)
            n_series = rng.randint(1, 4)
            n_instances = rng.randint(1, 4) if modality in ("CR", "DX") else rng.randint(20, 60)
            studies.append({
                "id": _id("study", s), "project_id": PROJECT,
                "subject_id": subjects[owners[s]]["id"],
                "study_instance_uid": _uid("study", s),
                "study_date": (FIRST_DAY + timedelta(days=rng.randrange(DAYS))
                               ).strftime("%Y%m%d"),
                "study_time": f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00",
                "accession_number": f"ACC{s:09d}",
                "referring_physician_name": "REFERRER^SYNTHETIC", "study_id": "1",
                "study_description": f"{modality} SYNTHETIC STUDY",
                "institution_name": "Synthetic General Hospital",
                "modalities_in_study": modality, "num_series": n_series,
                "num_instances": n_instances, "size_bytes": n_instances * 526_000,
                "created_at": stamp, "updated_at": stamp,
            })
        _insert_parents(engine, subjects, studies, [])  # subjects first: foreign keys
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        # The planner statistics, as an ingest leaves them.
        archive.optimize()
        with archive.sessions.begin() as session:
            counts = {
                "subjects": int(session.scalar(select(func.count()).select_from(Subject)) or 0),
                "studies": int(session.scalar(select(func.count()).select_from(Study)) or 0),
            }
    finally:
        archive.close()
    if counts != {"subjects": n_subjects, "studies": n_studies}:
        raise RuntimeError(f"the fixture has {counts}, not {n_subjects} subjects and "
                           f"{n_studies} studies")
    return counts


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * fraction + 0.5) - 1)]


def _time_requests(session: Any, url: str, params: list[dict[str, str]],
                   headers: dict[str, str], check: Any) -> list[float]:
    """GET ``url`` with each of ``params``; the times (ms) of the last ``QUERIES``."""
    times = []
    for p in params:
        started = time.perf_counter()
        response = session.get(url, params=p, headers=headers, timeout=60)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} {sorted(p)}: {response.status_code} "
                               f"{response.text[:300]}")
        check(p, response.json())
        times.append(elapsed)
    return times[WARMUP:]


def measure(n_studies: int, *, quiet_wait: float = 120, log: Any = print) -> list[Result]:
    """Waits (at most ``quiet_wait`` s) for the machine to be quiet before measuring."""
    import requests

    source = ensure_fixture(n_studies, log)
    counts = json.loads(source.with_suffix(".json").read_text())
    rng = random.Random(11)
    first = [{"limit": "100"} for _ in range(WARMUP + QUERIES)]
    patients = [{"PatientID": f"P{rng.randrange(counts['subjects']):08d}", "limit": "100"}
                for _ in range(WARMUP + QUERIES)]
    dates = []
    for _ in range(WARMUP + QUERIES):
        start = FIRST_DAY + timedelta(days=rng.randrange(DAYS - 30))
        dates.append({"StudyDate": f"{start:%Y%m%d}-{start + timedelta(days=29):%Y%m%d}",
                      "limit": "100"})

    def check_first(_: dict[str, str], page: dict[str, Any]) -> None:
        items = page["items"]
        if len(items) != min(100, n_studies) or any(
                a["study_date"] < b["study_date"] for a, b in pairwise(items)):
            raise RuntimeError("the first page is not the 100 newest studies")

    def check_patient(p: dict[str, str], page: dict[str, Any]) -> None:
        items = page["items"]
        if not items or any(i["patient_id"] != p["PatientID"] for i in items):
            raise RuntimeError(f"a PatientID search returned {len(items)} studies, some of "
                               "another patient")

    def check_dates(p: dict[str, str], page: dict[str, Any]) -> None:
        low, high = p["StudyDate"].split("-")
        if any(not low <= i["study_date"] <= high for i in page["items"]):
            raise RuntimeError("a StudyDate search returned a study outside the range")

    run = fresh_run_dir("listing")
    group = f"study listing over HTTP, project of {counts['studies']:,} studies (SQLite)"
    results = []
    try:
        shutil.copytree(source, run / "data")
        with ImagebankServer(run / "data", project=None, log=run / "serve.log") as server, \
                requests.Session() as session:
            url = f"{server.url}{API}/projects/{PROJECT}/studies"
            if quiet_wait:
                wait_until_quiet(max_wait=quiet_wait, log=log)
            for name, params, check in (
                ("first page (limit=100)", first, check_first),
                ("PatientID filter", patients, check_patient),
                ("StudyDate range (30 days)", dates, check_dates),
            ):
                times = _time_requests(session, url, params, server.headers, check)
                results.append(_result(group, f"GET .../studies, {name}", times,
                                       TARGET_MS if name.startswith("first") else None, log))
            # Informative: the HTTP floor, and the query without HTTP.
            health = _time_requests(session, f"{server.url}{API}/health",
                                    [{} for _ in range(WARMUP + QUERIES)], {},
                                    lambda _p, _b: None)
            results.append(_result(group, "GET /api/v1/health (no auth, no audit)", health,
                                   None, log))
        results.append(_result(group, "first page in-process, Archive.studies (no HTTP)",
                               _in_process(run / "data"), None, log))
        for r in results[3:]:
            r.detail += "; informative row"
    finally:
        remove(run)
    return results


def _in_process(data: Path) -> list[float]:
    from imagebank.services.archive import Archive

    archive = Archive.open(data)
    try:
        times = []
        for _ in range(WARMUP + QUERIES):
            started = time.perf_counter()
            rows = archive.studies(PROJECT, limit=101)
            times.append((time.perf_counter() - started) * 1000)
            if not rows:
                raise RuntimeError("Archive.studies found nothing")
    finally:
        archive.close()
    return times[WARMUP:]


def _result(group: str, name: str, times: list[float], target: float | None, log: Any
            ) -> Result:
    median = statistics.median(times)
    p95 = _percentile(times, 0.95)
    log(f"  {name}: median {median:.2f} ms, p95 {p95:.2f} ms, max {max(times):.2f} ms")
    return Result(group, f"{name}, median of {len(times)}", median, "ms",
                  detail=f"p95 {p95:.2f} ms; max {max(times):.2f} ms",
                  target=f"< {target:.0f} ms (median and p95)" if target else "",
                  met=(median < target and p95 < target) if target else None,
                  extra={"p95_ms": p95, "max_ms": max(times), "times_ms": times})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--studies", type=int, default=100_000)
    args = parser.parse_args()
    print(format_table(measure(2_000 if args.smoke else args.studies,
                               quiet_wait=0 if args.smoke else 120)))


if __name__ == "__main__":
    main()
