"""Clinical import throughput (issue 6): FHIR R4 resources per second, end to end, into the
index, against parsing alone.

The synthea bundles (../shared/data/synthea-fhir-r4, 6 patients) and bulk NDJSON
(synthea-bulk-ndjson-10, 13 patients) are copied ``copies`` times into a folder in /dev/shm,
each copy made of new patients: every UUID (resource IDs, references, ``urn:uuid:`` full URLs,
the synthea identifiers) is rewritten per copy, the other identifiers of a Patient get the
copy's number, and each Patient gets a valid NHS number of its own, so that every copy adds
its subjects and facts (at the full size, 25 copies: 122,750 resources, 475 patients and
subjects, 109,750 facts).

* *baseline*: ``FhirReader().read(files)`` consumed whole, no database (what the import
  cannot beat);
* *import*: ``services.clinical.import_clinical(archive, [folder], project)`` into a new
  archive (SQLite in a fresh data folder on disk, WAL with ``synchronous=FULL``; with
  ``--postgres-url``, a new database on that server), timed from the call to its return
  (planner statistics refreshed at the end included); its summary must count every fact and
  every patient, and a second import of the same files must add nothing.

Median of ``--repeat`` rounds (a round: the parse, then each database). Run alone:
``python benchmarks/clinical_import.py [--smoke | --copies N] [--repeat 3]
[--postgres-url URL|auto] [--profile]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RUNS, Result, format_table, fresh_run_dir, remove, wait_until_quiet
from pg_cluster import database, drop_database, postgres_server

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
BUNDLES = SHARED / "synthea-fhir-r4"
NDJSON = SHARED / "synthea-bulk-ndjson-10"
PROJECT = "bench"
TARGET = 20_000.0
NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
_UUID = re.compile(r"\b([0-9a-f]{8})(-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b")


# -- inputs ---------------------------------------------------------------------------------
class _Numbers:
    """Valid NHS numbers, one after another (nine digits and their modulus 11 check)."""

    def __init__(self) -> None:
        self.next = 900_000_000

    def __call__(self) -> str:
        while True:
            digits = str(self.next)
            self.next += 1
            total = sum(int(d) * w for d, w in zip(digits, range(10, 1, -1), strict=True))
            check = (11 - total % 11) % 11
            if check != 10:
                return f"{digits}{check}"


def _rewrite_uuids(text: str, copy: int) -> str:
    """Every UUID made the copy's own: its first 8 hex digits XOR a per-copy constant (a
    bijection, so references still meet their resources)."""
    salt = (copy + 1) * 0x9E3779B1 & 0xFFFFFFFF

    def sub(match: re.Match[str]) -> str:
        return f"{int(match.group(1), 16) ^ salt:08x}{match.group(2)}"

    return _UUID.sub(sub, text)


def _rewrite_patient(resource: dict[str, Any], copy: int, numbers: _Numbers) -> None:
    identifiers = []
    for given in resource.get("identifier", []):
        value = given.get("value", "")
        identifiers.append(given if _UUID.fullmatch(value)
                           else {**given, "value": f"{value}-{copy}"})
    identifiers.insert(0, {"system": NHS_SYSTEM, "value": numbers()})
    resource["identifier"] = identifiers


def make_inputs(folder: Path, copies: int) -> dict[str, int]:
    """``copies`` copies of the synthea inputs in ``folder`` (see the module's docstring);
    counts of what was written."""
    numbers = _Numbers()
    resources = patients = 0
    bundle_texts = [p.read_text() for p in sorted(BUNDLES.glob("*.json"))]
    ndjson_texts = {p.name: p.read_text() for p in sorted(NDJSON.glob("*.ndjson"))}
    for copy in range(copies):
        target = folder / f"b{copy:04d}"
        target.mkdir(parents=True)
        for i, text in enumerate(bundle_texts):
            bundle = json.loads(_rewrite_uuids(text, copy))
            for entry in bundle.get("entry", []):
                if entry["resource"]["resourceType"] == "Patient":
                    _rewrite_patient(entry["resource"], copy, numbers)
                    patients += 1
            resources += 1 + len(bundle.get("entry", []))
            (target / f"bundle{i}.json").write_text(json.dumps(bundle))
        target = folder / f"n{copy:04d}"
        target.mkdir(parents=True)
        for name, text in ndjson_texts.items():
            lines = _rewrite_uuids(text, copy).splitlines()
            if name.startswith("Patient."):
                out = []
                for line in lines:
                    resource = json.loads(line)
                    _rewrite_patient(resource, copy, numbers)
                    out.append(json.dumps(resource))
                    patients += 1
                lines = out
            resources += sum(1 for line in lines if line.strip())
            (target / name).write_text("\n".join(lines) + "\n")
    return {"copies": copies, "resources": resources, "patients": patients}


# -- measurements ---------------------------------------------------------------------------
def _parse(folder: Path) -> tuple[float, float, int, int]:
    """Seconds, CPU seconds, resources read and facts."""
    from imagebank.ingest.fhir import FhirReader, PatientFact

    reader = FhirReader()
    started, cpu = time.perf_counter(), time.process_time()
    facts = 0
    for item in reader.read([folder]):
        if isinstance(item, PatientFact):
            facts += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return elapsed, cpu, sum(reader.resources.values()), facts


def _import(folder: Path, database_url: str | None, profile: Path | None = None
            ) -> tuple[float, float, dict[str, Any], dict[str, Any]]:
    """Seconds, CPU seconds (this process), the summary, and the summary of importing again
    (which must add nothing)."""
    from imagebank.services.archive import Archive
    from imagebank.services.clinical import import_clinical

    data = fresh_run_dir("clinical-import")
    overrides = {"database_url": database_url} if database_url else {}
    archive = Archive.open(data, **overrides)
    try:
        archive.create_project(PROJECT)
        if profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        started, cpu = time.perf_counter(), time.process_time()
        summary = import_clinical(archive, [folder], PROJECT)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if profile is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        again = import_clinical(archive, [folder], PROJECT)
    finally:
        archive.close()
        remove(data)
    return elapsed, cpu, summary.as_dict(), again.as_dict()


def measure(copies: int, *, repeat: int = 3, postgres_url: str | None = None,
            quiet_wait: float = 0, profile: bool = False, log: Any = print) -> list[Result]:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    results: list[Result] = []
    with tempfile.TemporaryDirectory(dir=base, prefix="imagebank-fhir-") as tmp, \
            postgres_server(postgres_url) as server:
        folder = Path(tmp) / "in"
        started = time.perf_counter()
        counts = make_inputs(folder, copies)
        log(f"  {copies} copies: {counts['resources']:,} resources, {counts['patients']:,} "
            f"patients ({time.perf_counter() - started:.1f} s to write)")
        parse_times: list[float] = []
        parse_cpu: list[float] = []
        runs: dict[str, list[float]] = {"SQLite": []}
        if server:
            runs["PostgreSQL"] = []
        cpus: dict[str, list[float]] = {name: [] for name in runs}
        facts = 0
        summaries: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for round_no in range(repeat):
            if quiet_wait:
                wait_until_quiet(max_wait=quiet_wait, log=log)
            seconds, cpu, resources, facts = _parse(folder)
            if resources != counts["resources"]:
                raise RuntimeError(f"read {resources} resources of {counts['resources']}")
            parse_times.append(seconds)
            parse_cpu.append(cpu)
            for name, times in runs.items():
                url = database(server) if name == "PostgreSQL" and server else None
                want_profile = profile and round_no == 0
                prof = RUNS.parent / f"clinical-import-{name.lower()}.prof"
                try:
                    seconds, cpu, summary, again = _import(folder, url,
                                                           prof if want_profile else None)
                finally:
                    if url and server:
                        drop_database(server, url)
                _check(summary, again, counts, facts)
                times.append(seconds)
                summaries[name] = (summary, again)
                cpus[name].append(cpu)
                log(f"  round {round_no + 1}: parse {resources / parse_times[-1]:,.0f}/s "
                    f"(CPU {parse_cpu[-1]:.2f} s), {name} import {resources / seconds:,.0f}/s "
                    f"({seconds:.2f} s, CPU {cpu:.2f} s)")
                if want_profile:
                    log(f"  (profile written to {prof})")
        resources = counts["resources"]
        parse_rate = resources / statistics.median(parse_times)
        group = f"clinical import of {resources:,} FHIR resources"
        shape = (f"{copies} copies of the synthea bundles and NDJSON: {counts['patients']:,} "
                 f"patients, {facts:,} facts")
        results.append(Result(group, f"FhirReader alone (parse, no database), median of "
                                     f"{repeat}", parse_rate, "resources/s",
                              detail=f"baseline; {shape}; CPU "
                                     f"{statistics.median(parse_cpu):.2f} s",
                              extra={"seconds": parse_times, "cpu_seconds": parse_cpu}))
        for name, times in runs.items():
            rate = resources / statistics.median(times)
            summary = summaries[name][0]
            results.append(Result(
                group, f"imagebank import into {name}, median of {repeat}", rate,
                "resources/s", detail=f"runs {', '.join(f'{t:.2f}' for t in times)} s, CPU "
                f"(this process) {statistics.median(cpus[name]):.2f} s; {summary['facts']:,} "
                f"facts, {summary['new_subjects']:,} subjects",
                ratio=rate / parse_rate, ratio_of="parse alone",
                target=f">= {TARGET:,.0f}/s", met=rate >= TARGET,
                extra={"seconds": times, "cpu_seconds": cpus[name], "summary": summary}))
    return results


def _check(summary: dict[str, Any], again: dict[str, Any], counts: dict[str, int],
           facts: int) -> None:
    problems = {k: v for k, v in summary["problems"].items() if v}
    if problems:
        raise RuntimeError(f"the import found problems: {problems}")
    if summary["facts"] != facts or summary["added"] != facts:
        raise RuntimeError(f"imported {summary['facts']} facts ({summary['added']} new), "
                           f"the reader gives {facts}")
    if summary["patients"] != counts["patients"] or summary["new_subjects"] != counts["patients"]:
        raise RuntimeError(f"{summary['patients']} patients, {summary['new_subjects']} new "
                           f"subjects, of {counts['patients']}")
    if again["added"] or again["new_subjects"] or again["facts"] != facts:
        raise RuntimeError("a second import of the same files added something")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2 copies, 1 round")
    parser.add_argument("--copies", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--postgres-url", default=None,
                        help="a PostgreSQL server to measure too (a database is created on "
                             "it per run); 'auto' starts a throwaway cluster")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the first import of each database (to "
                             "benchmarks/.work/clinical-import-*.prof)")
    args = parser.parse_args()
    copies = 2 if args.smoke else args.copies
    repeat = args.repeat or (1 if args.smoke else 3)
    try:
        results = measure(copies, repeat=repeat, postgres_url=args.postgres_url,
                          quiet_wait=0 if args.smoke else 60, profile=args.profile)
    finally:
        shutil.rmtree(RUNS / "clinical-import", ignore_errors=True)
    print(format_table(results))


if __name__ == "__main__":
    main()
