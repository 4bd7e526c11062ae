"""(g) De-identification: ``imagebank deid`` against dicognito 0.19 (``python -m dicognito``).

Two measurements, in one script:

* **Throughput** on the cached synthetic CT corpus (5,000 instances of 512x512, as in (a); the
  smoke run: 100 of 64x64). Each tool reads the corpus and writes a fresh output folder on
  the same file system; timed from starting the command to its exit, then ``sync`` (dicognito
  does not flush its files; imagebank does, before it names them), start-up included:
  - imagebank: ``imagebank --data D deid CORPUS OUT --key-file K --jsonl`` (2 worker
    processes, its default); it must report every file written;
  - dicognito: ``python -m dicognito --quiet --output-directory OUT CORPUS`` (one process; its
    console script is broken in 0.19); it must write one file per input.
  Rounds of one run of each, the median reported; each run waits for the machine to be quiet.
* **What each leaves behind** on the same 20 PHI-laden files (4 patients, 5 instances each:
  names, IDs, birth dates, addresses and phone numbers in the patient module and also in
  descriptors, comments, private tags (text and a binary blob), an unknown public tag, nested
  sequences, and the folder and file names). Every output is read back and checked two ways:
  - ``dicom.deid.residual_identifiers(input, output)``: findings (tag paths) per tool. For
    imagebank this is the scan its own release gate runs, so a written file has none by
    construction; what it would have leaked shows as files *blocked*;
  - an independent check: every planted value (the names and their parts, IDs, birth
    dates, address, phone number, accession numbers) searched case-insensitively in the
    output's raw bytes and in its path under OUT.
  Outputs are matched to inputs by SOP Instance UID: imagebank's by the keyed UID mapping
  (the key is the benchmark's), dicognito's by InstanceNumber (unique in this set; dicognito
  keeps it).

Run alone: ``python benchmarks/deid.py [--smoke] [--repeat N] [--warm]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    CorpusSpec,
    Result,
    can_drop_caches,
    corpus_stats,
    drop_caches,
    ensure_corpus,
    format_table,
    fresh_run_dir,
    python,
    remove,
    wait_until_quiet,
)
from rest_upload import _clean_env, imagebank_command

PHI_PATIENTS = [
    # name, ID, birth date, accession
    ("SMITHSON^ALEXANDRA^JANE", "9434765919", "19611203", "RR99887766"),
    ("OKONKWO^BARNABY", "4857773456", "19480522", "RR12340001"),
    ("FERNSBY-HOLT^CLEMENTINE", "6120984437", "19900117", "RR55501234"),
    ("MACALISTER^DOUGAL^IAN", "7788123490", "19731030", "RR31415926"),
]
ADDRESS, PHONE = "12 Acacia Avenue, Kirkstall, Leeds LS5 3BT", "01134960123"


def dicognito_version() -> str:
    try:
        from importlib.metadata import version

        return version("dicognito")
    except Exception:
        return ""


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _key_file(folder: Path) -> tuple[Path, bytes]:
    key = secrets.token_bytes(32)
    path = folder / "bench.key"
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return path, key


# -- throughput -------------------------------------------------------------------------------
def run_imagebank(corpus: Path, expected: int, *, cold: bool, workers: int = 2
                  ) -> dict[str, Any]:
    run = fresh_run_dir("deid-imagebank")
    key, _ = _key_file(run)
    try:
        if cold:
            drop_caches()
        cpu = _cpu_children()
        started = time.perf_counter()
        proc = subprocess.run(
            [*imagebank_command(), "--data", str(run / "data"), "deid", str(corpus),
             str(run / "out"), "--key-file", str(key), "--jsonl", "--workers", str(workers)],
            capture_output=True, text=True, check=False, timeout=7200, env=_clean_env(),
            cwd=REPO)
        os.sync()
        elapsed = time.perf_counter() - started
        cpu = _cpu_children() - cpu
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"imagebank deid failed ({proc.returncode}): "
                               f"{proc.stderr[-3000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        remove(run)
    if summary["written"] != expected:
        raise RuntimeError(f"imagebank deid wrote {summary['written']} of {expected}: "
                           f"{summary['reasons']}")
    return {"seconds": elapsed, "cpu": cpu}


def run_dicognito(corpus: Path, expected: int, *, cold: bool) -> dict[str, Any]:
    run = fresh_run_dir("deid-dicognito")
    try:
        if cold:
            drop_caches()
        cpu = _cpu_children()
        started = time.perf_counter()
        proc = subprocess.run(
            [python(), "-m", "dicognito", "--quiet", "--output-directory", str(run / "out"),
             str(corpus)], capture_output=True, text=True, check=False, timeout=7200)
        os.sync()
        elapsed = time.perf_counter() - started
        cpu = _cpu_children() - cpu
        if proc.returncode != 0:
            raise RuntimeError(f"dicognito failed ({proc.returncode}): {proc.stderr[-3000:]}")
        written = sum(len(files) for _, _, files in os.walk(run / "out"))
    finally:
        remove(run)
    if written != expected:
        raise RuntimeError(f"dicognito wrote {written} of {expected} files")
    return {"seconds": elapsed, "cpu": cpu}


def throughput(spec: CorpusSpec, *, cold: bool, repeat: int, quiet_wait: float,
               log: Any = print) -> list[Result]:
    corpus = ensure_corpus(spec, log)
    stats = corpus_stats(spec)
    n, size = stats["instances"], stats["bytes"]
    name_ib = "imagebank deid (2 workers)"
    name_dg = f"dicognito {dicognito_version()} (python -m dicognito, 1 process)"
    contestants = [(name_dg, lambda: run_dicognito(corpus, n, cold=cold)),
                   (name_ib, lambda: run_imagebank(corpus, n, cold=cold))]
    times: dict[str, list[float]] = {name: [] for name, _ in contestants}
    cpus: dict[str, list[float]] = {name: [] for name, _ in contestants}
    for i in range(repeat):
        for name, run in contestants:
            if quiet_wait:
                wait_until_quiet(max_wait=quiet_wait, log=log)
            outcome = run()
            times[name].append(outcome["seconds"])
            cpus[name].append(outcome["cpu"])
            log(f"  round {i + 1}: {name}: {outcome['seconds']:.2f} s "
                f"({n / outcome['seconds']:,.0f} files/s; CPU {outcome['cpu']:.1f} s)")
    volume = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
    group = (f"deid {n:,} x {spec.rows}x{spec.columns} ({volume}, "
             f"{'cold' if cold else 'warm'} cache)")
    results = []
    for name, _ in contestants:
        seconds = statistics.median(times[name])
        cpu = statistics.median(cpus[name])
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        results.append(Result(group, name, n / seconds, "files/s",
                              detail=f"median {seconds:.2f} s of [{runs}] s, start-up and "
                                     f"sync included; CPU {cpu / n * 1000:.2f} ms/file",
                              extra={"seconds": seconds, "runs": times[name],
                                     "cpu_ms_per_file": cpu / n * 1000}))
    dicognito, imagebank = results
    imagebank.ratio = imagebank.value / dicognito.value
    imagebank.ratio_of = "dicognito"
    imagebank.target = ">= 3x dicognito"
    imagebank.met = imagebank.ratio >= 3
    return results


# -- what each leaves behind ------------------------------------------------------------------
def write_phi_files(folder: Path) -> list[tuple[Path, Any]]:
    """20 CT instances full of identifying values (4 patients x 5), named after the patients
    as sites' exports often are; InstanceNumber 1..20 tells them apart."""
    from pydicom.datadict import dictionary_has_tag
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes

    unknown = next(t for t in range(0x00301000, 0x7FFFFFFF, 0x00020000)
                   if (t >> 16) % 2 == 0 and not dictionary_has_tag(t))
    files = []
    number = 0
    for p, (name, patient_id, birth, accession) in enumerate(PHI_PATIENTS):
        family, given = name.split("^")[:2]
        spoken = f"{given.title()} {family.title()}"
        series = [SeriesSpec(slices=5, rows=64, columns=64)]
        instances = list(make_study(SyntheticPatient.make(100 + p), series=series))
        target = folder / f"{family}_{given}_{patient_id}" / f"{accession} CT CHEST"
        target.mkdir(parents=True, exist_ok=True)
        for k, ds in enumerate(instances):
            number += 1
            ds.InstanceNumber = number
            ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, birth
            ds.IssuerOfPatientID = "NHS"
            ds.PatientAddress, ds.PatientTelephoneNumbers = ADDRESS, PHONE
            ds.AccessionNumber = accession
            ds.InstitutionName = "Leeds Teaching Hospitals"
            ds.InstitutionAddress = "Great George Street, Leeds"
            ds.ReferringPhysicianName = "FOSTERCARE^JONATHAN"
            ds.PerformingPhysicianName = "WINTERBOTTOM^PRIYA"
            ds.OperatorsName = "RADIOGRAPH^EVELYN"
            ds.StudyDescription = f"CT chest {spoken} NHS {patient_id}"
            ds.SeriesDescription = f"Axial {family.title()} {birth}"
            ds.ImageComments = f"{family.title()} follow-up, DOB {birth}, tel {PHONE}"
            ds.AdditionalPatientHistory = f"Patient {spoken} ({patient_id}) at {ADDRESS}"
            ds.PatientComments = f"Lives at {ADDRESS}"
            ds.BurnedInAnnotation = "NO"
            ds.add_new(0x00090010, "LO", "ACME 1.0")
            ds.add_new(0x00091001, "LO", name)
            ds.add_new(0x00091002, "LO", patient_id)
            ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")  # a binary blob
            ds.add_new(0x00291010, "OB", b"CSA2\x00" + name.encode() + b"\x00"
                       + patient_id.encode() + b"\x00" * 3)
            ds.add_new(unknown, "LO", patient_id)
            request = Dataset()
            request.AccessionNumber = accession
            request.RequestedProcedureDescription = f"CT chest for {spoken}"
            ds.RequestAttributesSequence = Sequence([request])
            other = Dataset()
            other.PatientID, other.IssuerOfPatientID = f"H{patient_id[:7]}", "HOSP"
            ds.OtherPatientIDsSequence = Sequence([other])
            region = Dataset()
            region.CodeValue, region.CodingSchemeDesignator = "T-D3000", "SRT"
            region.CodeMeaning = f"Chest of {patient_id}"
            inner = Dataset()
            inner.PatientName, inner.PatientID = name, patient_id
            inner.ReferencedSOPInstanceUID = instances[0].SOPInstanceUID
            region.ReferencedImageSequence = Sequence([inner])
            ds.AnatomicRegionSequence = Sequence([region])
            procedure = Dataset()
            procedure.CodeValue, procedure.CodingSchemeDesignator = "CTCHEST", "99LOCAL"
            procedure.CodeMeaning = f"CT chest ({family.title()})"
            ds.ProcedureCodeSequence = Sequence([procedure])
            path = target / f"{family}-{k + 1}.dcm"
            path.write_bytes(to_bytes(ds))
            files.append((path, ds))
    return files


def _planted() -> list[str]:
    values = {ADDRESS, PHONE, "Acacia", "Kirkstall", "LS5 3BT", "FOSTERCARE", "WINTERBOTTOM",
              "RADIOGRAPH", "Great George"}
    for name, patient_id, birth, accession in PHI_PATIENTS:
        values |= {patient_id, birth, accession, f"H{patient_id[:7]}"}
        values |= {part for part in name.replace("-", "^").split("^") if len(part) >= 4}
    return sorted(values, key=len, reverse=True)


def _check_outputs(pairs: list[tuple[Any, Path]], out: Path) -> dict[str, Any]:
    import pydicom

    from imagebank.dicom.deid import residual_identifiers

    planted = [v.lower().encode("latin-1") for v in _planted()]
    findings = files_with = planted_hits = files_planted = 0
    where: dict[str, int] = {}
    for source, path in pairs:
        data = path.read_bytes()
        output = pydicom.dcmread(io.BytesIO(data))
        found = residual_identifiers(source, output)
        findings += len(found)
        files_with += bool(found)
        for finding in found:
            kind = ("private" if int(finding.path[1:5], 16) % 2 else
                    "in a sequence" if "[" in finding.path else "top level")
            where[f"{kind} {finding.kind}"] = where.get(f"{kind} {finding.kind}", 0) + 1
        haystack = data.lower() + b"\n" + str(path.relative_to(out)).lower().encode()
        hits = sum(value in haystack for value in planted)
        planted_hits += hits
        files_planted += bool(hits)
    return {"outputs": len(pairs), "findings": findings, "files_with_findings": files_with,
            "findings_where": where, "planted_values_found": planted_hits,
            "files_with_planted_values": files_planted}


def leftovers(log: Any = print) -> list[Result]:
    import pydicom

    from imagebank.domain.pseudonyms import Pseudonymiser

    run = fresh_run_dir("deid-leftovers")
    try:
        files = write_phi_files(run / "in")
        key_path, key = _key_file(run)
        proc = subprocess.run(
            [*imagebank_command(), "--data", str(run / "data"), "deid", str(run / "in"),
             str(run / "ib"), "--key-file", str(key_path), "--jsonl"],
            capture_output=True, text=True, check=False, timeout=600, env=_clean_env(),
            cwd=REPO)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"imagebank deid failed: {proc.stderr[-3000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        uids = Pseudonymiser(key)
        ib_pairs = []
        for _, ds in files:
            matches = list((run / "ib").rglob(f"{uids.uid(ds.SOPInstanceUID)}.dcm"))
            if matches:
                ib_pairs.append((ds, matches[0]))
        ib = _check_outputs(ib_pairs, run / "ib")
        ib.update(written=summary["written"], blocked=summary["blocked"],
                  refused=summary["refused"])

        proc = subprocess.run(
            [python(), "-m", "dicognito", "--quiet", "--output-directory", str(run / "dg"),
             str(run / "in")], capture_output=True, text=True, check=False, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"dicognito failed: {proc.stderr[-3000:]}")
        by_number = {int(ds.InstanceNumber): ds for _, ds in files}
        dg_pairs = []
        for path in sorted((run / "dg").rglob("*")):
            if path.is_file():
                output = pydicom.dcmread(path, stop_before_pixels=True)
                dg_pairs.append((by_number[int(output.InstanceNumber)], path))
        if len({id(ds) for ds, _ in dg_pairs}) != len(dg_pairs):
            raise RuntimeError("dicognito's outputs cannot be matched to their inputs")
        dg = _check_outputs(dg_pairs, run / "dg")
        dg.update(written=len(dg_pairs), blocked=0, refused=0)
    finally:
        remove(run)
    group = f"deid: what is left on {len(files)} PHI-laden files"
    results = []
    for name, figures in ((f"dicognito {dicognito_version()}", dg), ("imagebank deid", ib)):
        log(f"  {name}: {json.dumps(figures)}")
        where = ", ".join(f"{k} {v}" for k, v in sorted(figures["findings_where"].items()))
        results.append(Result(
            group, f"{name}: residual-scan findings", figures["findings"], "findings",
            detail=(f"{figures['written']} written, {figures['blocked']} blocked by the scan; "
                    f"{figures['files_with_findings']} files with findings "
                    f"({where or 'none'})"),
            extra=figures))
        results.append(Result(
            group, f"{name}: planted values in bytes or path", figures["planted_values_found"],
            "values", detail=f"in {figures['files_with_planted_values']} of "
                             f"{figures['outputs']} files", extra=figures))
    return results


def measure(spec: CorpusSpec, *, cold: bool, repeat: int = 1, quiet_wait: float = 120,
            log: Any = print) -> list[Result]:
    return [*throughput(spec, cold=cold, repeat=repeat, quiet_wait=quiet_wait, log=log),
            *leftovers(log)]


def smoke_spec() -> CorpusSpec:
    return CorpusSpec(100, 64, 64)


def full_spec() -> CorpusSpec:
    return CorpusSpec(5000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--warm", action="store_true", help="do not drop the page cache")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3, smoke 1)")
    args = parser.parse_args()
    cold = not args.warm and not args.smoke and can_drop_caches()
    spec = smoke_spec() if args.smoke else full_spec()
    repeat = args.repeat or (1 if args.smoke else 3)
    results = measure(spec, cold=cold, repeat=repeat, quiet_wait=0 if args.smoke else 120)
    print(format_table(results))


if __name__ == "__main__":
    main()
