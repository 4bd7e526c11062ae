"""Clinical tables of a release (issue 6, decision 0026): facts per second written as CSV and
Parquet by ``services.clinical_release.write_tables``, and the memory it takes.

An archive (SQLite in a data folder kept in ``benchmarks/.work``; with ``--postgres-url``, a
new database on that server) is filled once with ``--subjects`` subjects of one project and
``--facts`` facts per subject (default 100,000 and 10: the issue's million facts), written
straight to the index's tables (the import is measured by ``clinical_import.py``). Each
round runs ``write_tables`` for every subject in a fresh interpreter, under a key and the
options ``retain_long_modified_dates`` and ``retain_patient_characteristics`` (every time
shifted, every text cell checked), timed from the call to its return, and reports the
interpreter's peak resident memory before the call (the archive opened) and after it.

Median of ``--repeat`` rounds. Run alone: ``python benchmarks/clinical_release.py [--smoke |
--subjects N --facts F] [--repeat 3] [--postgres-url URL|auto]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK, Result, ensure_built, format_table, run_python_json
from pg_cluster import database, drop_database, postgres_server

PROJECT = "bench"
KINDS = ("condition", "observation", "procedure", "medication", "encounter")
CODES = [("SNOMED", "254637007", "Non-small cell lung cancer"),
         ("LOINC", "8867-4", "Heart rate"), ("ICD10", "C34.1", "Upper lobe, bronchus or lung"),
         ("DMD", "39720311000001101", "Paracetamol 500mg tablets"),
         ("SNOMED", "185349003", "Encounter for check up")]

_RUN = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from imagebank.dicom.deid import DeidConfig
from imagebank.domain.confidentiality import Profile
from imagebank.domain.pseudonyms import Pseudonymiser
from imagebank.services.archive import Archive
from imagebank.services.clinical_release import write_tables

data, url, out = sys.argv[1], sys.argv[2] or None, sys.argv[3]
archive = Archive.open(data, database_url=url, workers=1) if url else Archive.open(data, workers=1)
config = DeidConfig(Profile.of(["retain_long_modified_dates", "retain_patient_characteristics"]),
                    Pseudonymiser(bytes(range(32))))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tempfile.TemporaryDirectory(dir=out) as folder:
    started = time.perf_counter()
    tables = write_tables(archive, "bench", config, Path(folder))
    seconds = time.perf_counter() - started
    sizes = {f.name: f.size for f in tables.files}
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "facts": tables.facts, "patients": tables.patients,
                  "rss_before_mb": before / 1024, "rss_after_mb": after / 1024,
                  "sizes": sizes}))
"""


def _fill(url: str | None, data: Path, subjects: int, facts: int) -> dict[str, int]:
    from sqlalchemy import insert

    from imagebank.index.tables import ClinicalFact, Subject
    from imagebank.services.archive import Archive

    archive = (Archive.open(data, database_url=url, workers=1) if url
               else Archive.open(data, workers=1))
    try:
        archive.create_project(PROJECT)
        now = datetime.now(UTC)
        base = datetime(2015, 1, 1, 9, 30, tzinfo=UTC)
        block = 5_000
        for first in range(0, subjects, block):
            people, rows = [], []
            for n in range(first, min(first + block, subjects)):
                sid = f"{n:032x}"
                people.append({"id": sid, "project_id": PROJECT, "patient_id": f"P{n:09d}",
                               "issuer_of_patient_id": "BENCH", "patient_name": f"Doe^J{n}",
                               "patient_birth_date": "19600101", "patient_sex": "MF"[n % 2],
                               "num_studies": 0, "created_at": now})
                for f in range(facts):
                    system, code, display = CODES[(n + f) % len(CODES)]
                    rows.append({"id": f"{n:024x}{f:08x}", "project_id": PROJECT,
                                 "subject_id": sid, "kind": KINDS[f % len(KINDS)],
                                 "system": system, "code": code, "display": display,
                                 "value_number": 60.0 + f if f % 3 == 1 else None,
                                 "value_text": "", "value_system": "",
                                 "unit": "/min" if f % 3 == 1 else "",
                                 "start": base + timedelta(days=n % 900 + f * 7),
                                 "end": None, "status": "final", "detail": "{}",
                                 "imported_at": now})
            with archive.sessions.begin() as session:
                session.execute(insert(Subject), people)
                session.execute(insert(ClinicalFact), rows)
        archive.optimize()
    finally:
        archive.close()
    return {"subjects": subjects, "facts": subjects * facts}


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--facts", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1,000 subjects, one round")
    parser.add_argument("--postgres-url", default=None,
                        help="a PostgreSQL server URL, or 'auto' to start one")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subjects, args.repeat = 1_000, 1
    results = []
    with ExitStack() as stack:
        targets: list[tuple[str, str | None]] = [("SQLite", None)]
        server = stack.enter_context(postgres_server(args.postgres_url))
        if server:
            pg = database(server)
            stack.callback(drop_database, server, pg)
            targets.append(("PostgreSQL", pg))
        for label, url in targets:
            name = f"clinical-release-{label.lower()}-{args.subjects}x{args.facts}"
            data = WORK / name
            if url is not None:  # a new database each run: fill it
                data.mkdir(parents=True, exist_ok=True)
                _fill(url, data, args.subjects, args.facts)
            else:
                ensure_built(data, lambda d: _fill(None, d, args.subjects, args.facts),
                             f"{args.subjects:,} subjects x {args.facts} facts")
            rounds = [run_python_json(_RUN, str(data), url or "", str(WORK))
                      for _ in range(args.repeat)]
            seconds = statistics.median(r["seconds"] for r in rounds)
            last = rounds[-1]
            assert last["facts"] == args.subjects * args.facts
            results.append(Result(
                "clinical release", f"write_tables, {label}", last["facts"] / seconds,
                "facts/s",
                detail=(f"{last['facts']:,} facts of {last['patients']:,} subjects in "
                        f"{seconds:.1f} s; peak RSS {last['rss_before_mb']:.0f} -> "
                        f"{last['rss_after_mb']:.0f} MB; "
                        + ", ".join(f"{k} {v / 1e6:.1f} MB"
                                    for k, v in last["sizes"].items())),
                extra={"rounds": rounds}))
    print(format_table(results))
    for r in results:
        print(f"  {r.name}: {r.detail}")
    print(json.dumps([{"name": r.name, "value": r.value, "detail": r.detail}
                      for r in results]))
    return results


if __name__ == "__main__":
    main()
