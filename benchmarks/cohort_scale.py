"""Cohort search at the scale of a small national collection (issue 6): 100,000 subjects,
1,000,000 clinical facts and 1,000,000 indexed instances; a three-criteria query, median and
p95 of 20 runs, against a hand-written SQL of the same question.

**The index** is synthesised as rows (no ingest, no objects), written with SQLAlchemy Core
``executemany`` in transactions of 50,000 rows into the schema ``Archive.open`` migrates
(every NOT NULL column filled, column names from ``index/tables.py``), then given its planner
statistics (``Archive.optimize``, as an import leaves it). Built once per size and kept: the
SQLite data folder under ``--cache`` (default /tmp/imagebank-cohort-scale), and with
``--postgres-url`` a database ``cohort_scale_<subjects>`` on that server (``auto``: a cluster
kept in the cache folder). A row of ``archive_meta`` marks a whole build.

For N subjects (sex M/F, birth dates 1930-2005), deterministic (one seed):

* **imaging**: 1-4 studies a subject (StudyDate uniform over 2015-2024), a study of one
  modality (CT 30 %, CR 28 %, MR 20 %, US 14 %, PT 8 %; a PT study has a CT series too), 1-3
  series, with a body part, a manufacturer and model, a series description, slice
  thickness, kVp (CT, CR, PT), field strength (MR); 10 × N instances shared among the
  series by modality (CT and MR series the largest), each with its SOP UIDs, size, checksum,
  object key, a short DICOM JSON header and the acquisition values of its series;
* **clinical facts**, 10 × N: 2-18 a subject (dates uniform over the 10 years), encounters
  (SNOMED), conditions (ICD-10 70 %, with realistic prefixes: I10, E11, J44, C50, C18 ...;
  SNOMED 30 %), observations (LOINC with a numeric value and unit: 718-7 haemoglobin g/dL,
  2345-7 glucose mg/dL, 8480-6 systolic blood pressure mm[Hg], 39156-5 BMI kg/m2, ...),
  medications (dm+d-style codes) and procedures (SNOMED);
* **a lung cancer group**, 3 % of subjects: a C34.x diagnosis; for 60 % of them the
  subject's first study is a CT 0-90 days after it (for the rest, no such CT unless by
  chance), and their haemoglobin runs lower (so 8-12 g/dL is common, not universal).

**The query**: ``condition[ICD10:C34*] within 90 days before imaging[modality = CT] and
observation[LOINC:718-7, value between 8 and 12]`` through
``services.cohort.search(archive, project, query, exact=True)`` (exact counts of people,
studies and series, and their first 100 IDs), 2 warm-up runs then 20 timed (and, as an
informative row, the same search without ``exact``: counts only); the baseline is
one hand-written SQL statement counting the same people (day arithmetic as the compiler's:
``julianday`` on SQLite, dates on PostgreSQL), run the same way; both must count the same
people. Targets: median < 500 ms on SQLite, < 200 ms on PostgreSQL.

Run alone: ``python benchmarks/cohort_scale.py [--smoke | --subjects N] [--cache DIR]
[--postgres-url URL|auto] [--generate-only]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, format_table
from pg_cluster import database, database_exists, postgres_server

PROJECT = "cohort"
CACHE = Path("/tmp/imagebank-cohort-scale")
MARKER = "cohort_scale"
SEED = 20261130
RUNS = 20
WARMUP = 2
CHUNK = 50_000
QUERY = ("condition[ICD10:C34*] within 90 days before imaging[modality = CT] and "
         "observation[LOINC:718-7, value between 8 and 12]")
TARGETS = {"SQLite": 500.0, "PostgreSQL": 200.0}
FIRST_DAY = date(2015, 1, 1)
DAYS = 3652  # 2015-2024
LUNG_SHARE = 0.03
STAMP = datetime(2026, 11, 30, tzinfo=UTC)

# -- what the data is made of ---------------------------------------------------------------
MODALITIES = (("CT", 30), ("CR", 28), ("MR", 20), ("US", 14), ("PT", 8))
#: Instances per series, relative (scaled so that the total is exact).
SERIES_WEIGHT = {"CT": (6, 16), "MR": (4, 12), "PT": (3, 8), "US": (1, 3), "CR": (1, 2)}
BODY_PARTS = {"CT": ("CHEST", "CHEST", "ABDOMEN", "HEAD", "PELVIS"),
              "MR": ("HEAD", "BRAIN", "KNEE", "SPINE", "PROSTATE"),
              "CR": ("CHEST", "CHEST", "HAND", "KNEE", "FOOT"),
              "US": ("ABDOMEN", "BREAST", "NECK", "PELVIS"),
              "PT": ("WHOLEBODY",)}
DESCRIPTIONS = {"CT": ("CT THORAX WITH CONTRAST", "CT ABDOMEN PELVIS", "CT HEAD"),
                "MR": ("MR BRAIN", "MR KNEE", "MR LUMBAR SPINE"),
                "CR": ("CHEST PA", "HAND 2 VIEWS"), "US": ("US ABDOMEN", "US BREAST"),
                "PT": ("PET FDG WHOLE BODY",)}
SCANNERS = (("SIEMENS", "SOMATOM Force"), ("GE MEDICAL SYSTEMS", "Revolution CT"),
            ("Philips", "Ingenia"), ("Canon Medical Systems", "Aquilion ONE"),
            ("SIEMENS", "MAGNETOM Vida"), ("GE MEDICAL SYSTEMS", "SIGNA Premier"))
SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
             "CR": "1.2.840.10008.5.1.4.1.1.1", "US": "1.2.840.10008.5.1.4.1.1.6.1",
             "PT": "1.2.840.10008.5.1.4.1.1.128"}
KINDS = (("encounter", 25), ("condition", 20), ("observation", 35), ("medication", 10),
         ("procedure", 10))
ICD10 = (("I10", "Essential (primary) hypertension", 20), ("E11.9", "Type 2 diabetes "
         "mellitus without complications", 12), ("J44.9", "Chronic obstructive pulmonary "
         "disease, unspecified", 8), ("J45.9", "Asthma, unspecified", 8),
         ("I21.9", "Acute myocardial infarction, unspecified", 4),
         ("C50.9", "Malignant neoplasm of breast, unspecified", 3),
         ("C18.7", "Malignant neoplasm of sigmoid colon", 2),
         ("C61", "Malignant neoplasm of prostate", 3), ("F32.9", "Depressive episode, "
         "unspecified", 8), ("J18.9", "Pneumonia, unspecified", 6),
         ("N18.3", "Chronic kidney disease, stage 3", 5), ("K21.9", "Gastro-oesophageal "
         "reflux disease without oesophagitis", 6), ("M54.5", "Low back pain", 8),
         ("I48.9", "Atrial fibrillation and atrial flutter, unspecified", 5),
         ("C43.9", "Malignant melanoma of skin, unspecified", 1))
LUNG = (("C34.1", "Malignant neoplasm: upper lobe, bronchus or lung"),
        ("C34.3", "Malignant neoplasm: lower lobe, bronchus or lung"),
        ("C34.9", "Malignant neoplasm: bronchus or lung, unspecified"))
SNOMED_CONDITIONS = (("38341003", "Hypertensive disorder"), ("44054006", "Diabetes mellitus "
                     "type 2"), ("195967001", "Asthma"), ("13645005", "Chronic obstructive "
                     "lung disease"), ("49436004", "Atrial fibrillation"),
                     ("35489007", "Depressive disorder"), ("233604007", "Pneumonia"))
#: LOINC code, display, unit, mean, standard deviation.
LOINC = (("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 13.8, 1.7),
         ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 100.0, 22.0),
         ("8480-6", "Systolic blood pressure", "mm[Hg]", 128.0, 16.0),
         ("8462-4", "Diastolic blood pressure", "mm[Hg]", 79.0, 10.0),
         ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 27.0, 5.0),
         ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 1.0, 0.3),
         ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 5.9, 0.9),
         ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 190.0, 38.0))
#: dm+d-style product codes (synthetic data: the codes are shaped, not checked, as dm+d's).
MEDICATIONS = (("322236009", "Paracetamol 500mg tablets"), ("318135002", "Amlodipine 5mg "
               "tablets"), ("325278006", "Metformin 500mg tablets"), ("320000009",
               "Simvastatin 40mg tablets"), ("317972004", "Omeprazole 20mg gastro-resistant "
               "capsules"), ("319740004", "Ramipril 5mg capsules"), ("39113611000001102",
               "Salbutamol 100micrograms/dose inhaler"), ("35903511000001108", "Apixaban 5mg "
               "tablets"))
PROCEDURES = (("77477000", "Computerized axial tomography"), ("71651007", "Mammography"),
              ("73761001", "Colonoscopy"), ("80146002", "Appendectomy"),
              ("232717009", "Coronary artery bypass grafting"), ("387713003",
              "Surgical procedure"), ("430193006", "Medication reconciliation"))
ENCOUNTERS = (("185349003", "Encounter for check up"), ("50849002", "Emergency room admission"),
              ("183452005", "Emergency hospital admission"), ("390906007", "Follow-up "
              "encounter"), ("270427003", "Patient-initiated encounter"))


def _id(kind: str, n: int) -> str:
    return hashlib.md5(f"{kind}-{n}".encode(), usedforsecurity=False).hexdigest()


def _uid(kind: int, n: int) -> str:
    return f"1.2.826.0.1.3680043.10.1370.9.{kind}.{n}"


def _weighted(rng: random.Random, items: tuple[tuple[Any, ...], ...]) -> Any:
    return rng.choices(items, weights=[i[-1] for i in items])[0]


# -- the plan: counts and dates, before any row -----------------------------------------------
class Plan:
    """What the index will hold, drawn once from the seed (small: no rows yet)."""

    def __init__(self, subjects: int) -> None:
        rng = random.Random(SEED)
        self.subjects = subjects
        self.birth = [FIRST_DAY - timedelta(days=rng.randrange(10 * 365, 85 * 365))
                      for _ in range(subjects)]
        self.sex = [rng.choice("MF") for _ in range(subjects)]
        # Studies: (subject, day, modality); series: (study, modality).
        self.studies: list[tuple[int, int, str]] = []
        self.series: list[tuple[int, str]] = []
        self.first_study: list[int] = []
        modalities = tuple((m, w) for m, w in MODALITIES)
        for subject in range(subjects):
            self.first_study.append(len(self.studies))
            for _ in range(rng.choice((1, 1, 2, 2, 2, 3, 3, 4))):
                self.studies.append((subject, rng.randrange(DAYS),
                                     _weighted(rng, modalities)[0]))
        # The lung cancer group: a diagnosis day; for 60 %, a CT 0-90 days after it.
        self.lung: dict[int, int] = {}
        for subject in rng.sample(range(subjects), max(1, int(subjects * LUNG_SHARE))):
            day = rng.randrange(DAYS - 91)
            self.lung[subject] = day
            if rng.random() < 0.6:
                first = self.first_study[subject]
                self.studies[first] = (subject, day + rng.randrange(91), "CT")
        for number, (_, _, modality) in enumerate(self.studies):
            count = 1 if modality in ("CR", "US") else rng.randint(1, 3)
            self.series.append((number, modality))
            for _ in range(count - 1):
                self.series.append((number, "CT" if modality == "PT" else modality))
        self.rng = rng

    def instance_counts(self, total: int) -> list[int]:
        """Instances of each series, adding up to ``total`` (at least one each)."""
        rng = random.Random(SEED + 1)
        weights = [rng.randint(*SERIES_WEIGHT[m]) for _, m in self.series]
        if total < len(weights):
            raise ValueError("fewer instances than series")
        scale = total / sum(weights)
        counts = [max(1, int(w * scale)) for w in weights]
        return _settle(counts, total, rng)

    def fact_counts(self, total: int) -> list[int]:
        """Facts of each subject, adding up to ``total``."""
        rng = random.Random(SEED + 2)
        return _settle([rng.randint(2, 18) for _ in range(self.subjects)], total, rng)


def _settle(counts: list[int], total: int, rng: random.Random) -> list[int]:
    """``counts`` changed by one here and there (never below 1) until they add up to
    ``total``."""
    diff = total - sum(counts)
    while diff:
        i = rng.randrange(len(counts))
        if diff > 0:
            counts[i] += 1
            diff -= 1
        elif counts[i] > 1:
            counts[i] -= 1
            diff += 1
    return counts


def _day(day: int) -> date:
    return FIRST_DAY + timedelta(days=day)


# -- rows -------------------------------------------------------------------------------------
def subject_rows(plan: Plan) -> Iterator[dict[str, Any]]:
    studies_of = [0] * plan.subjects
    for subject, _, _ in plan.studies:
        studies_of[subject] += 1
    for k in range(plan.subjects):
        yield {"id": _id("subject", k), "project_id": PROJECT, "patient_id": f"P{k:08d}",
               "issuer_of_patient_id": "SYNTH-TRUST", "patient_name": None,
               "patient_birth_date": plan.birth[k].strftime("%Y%m%d"),
               "patient_sex": plan.sex[k], "num_studies": studies_of[k], "created_at": STAMP,
               "withdrawn_at": None}


def study_rows(plan: Plan, counts: list[int]) -> Iterator[dict[str, Any]]:
    series_of: dict[int, list[int]] = {}
    for number, (study, _) in enumerate(plan.series):
        series_of.setdefault(study, []).append(number)
    for number, (subject, day, modality) in enumerate(plan.studies):
        series = series_of[number]
        instances = sum(counts[s] for s in series)
        modalities = sorted({plan.series[s][1] for s in series})
        yield {"id": _id("study", number), "project_id": PROJECT,
               "subject_id": _id("subject", subject),
               "study_instance_uid": _uid(1, number),
               "study_date": _day(day).strftime("%Y%m%d"), "study_time": "093000",
               "accession_number": f"ACC{number:09d}",
               "referring_physician_name": "REFERRER^SYNTHETIC", "study_id": "1",
               "study_description": DESCRIPTIONS[modality][number % len(DESCRIPTIONS[modality])],
               "institution_name": "Synthetic General Hospital",
               "modalities_in_study": "\\".join(modalities), "num_series": len(series),
               "num_instances": instances, "size_bytes": instances * 526_000,
               "created_at": STAMP, "updated_at": STAMP}


def _acquisition(modality: str, number: int) -> dict[str, Any]:
    """Values of a series' instances (by modality), as the index keeps them."""
    if modality == "CT":
        return {"slice_thickness": (0.625, 1.0, 1.25, 2.5, 5.0)[number % 5],
                "kvp": (80.0, 100.0, 120.0, 120.0, 140.0)[number % 5],
                "convolution_kernel": ("STANDARD", "LUNG", "BONE")[number % 3]}
    if modality == "MR":
        return {"slice_thickness": (1.0, 3.0, 4.0, 5.0)[number % 4],
                "repetition_time": (500.0, 2000.0, 4000.0)[number % 3],
                "echo_time": (10.0, 30.0, 90.0)[number % 3], "flip_angle": 90.0}
    if modality == "PT":
        return {"slice_thickness": 3.0, "kvp": 120.0}
    if modality == "CR":
        return {"kvp": (70.0, 80.0, 110.0)[number % 3]}
    return {}


def series_rows(plan: Plan, counts: list[int]) -> Iterator[dict[str, Any]]:
    for number, (study, modality) in enumerate(plan.series):
        maker, model = SCANNERS[number % len(SCANNERS)]
        day = _day(plan.studies[study][1]).strftime("%Y%m%d")
        yield {"id": _id("series", number), "project_id": PROJECT,
               "study_id": _id("study", study), "series_instance_uid": _uid(2, number),
               "modality": modality, "series_number": number % 3 + 1,
               "series_description": f"{DESCRIPTIONS[modality][0]} {number % 3 + 1}",
               "series_date": day, "series_time": "093000",
               "performed_procedure_step_start_date": day,
               "performed_procedure_step_start_time": "093000",
               "body_part_examined": BODY_PARTS[modality][number % len(BODY_PARTS[modality])],
               "protocol_name": f"{modality} ROUTINE", "manufacturer": maker,
               "manufacturer_model_name": model, "station_name": f"ST{number % 40:02d}",
               "device_serial_number": f"SN{number % 97:04d}", "software_versions": "1.0",
               "magnetic_field_strength": (1.5, 3.0)[number % 2] if modality == "MR" else None,
               "frame_of_reference_uid": _uid(3, number), "num_instances": counts[number],
               "size_bytes": counts[number] * 526_000, "created_at": STAMP}


def instance_rows(plan: Plan, counts: list[int]) -> Iterator[dict[str, Any]]:
    n = 0
    for number, (study, modality) in enumerate(plan.series):
        day = _day(plan.studies[study][1]).strftime("%Y%m%d")
        values = _acquisition(modality, number)
        series_id, study_id = _id("series", number), _id("study", study)
        for i in range(counts[number]):
            instance_id = _id("instance", n)
            sop = _uid(4, n)
            sha = hashlib.sha256(sop.encode()).hexdigest()
            yield {"id": instance_id, "project_id": PROJECT, "study_id": study_id,
                   "series_id": series_id, "sop_instance_uid": sop,
                   "sop_class_uid": SOP_CLASS[modality], "instance_number": i + 1,
                   "acquisition_number": 1, "content_date": day, "content_time": "093000",
                   "image_type": "ORIGINAL\\PRIMARY\\AXIAL", "rows": 512, "columns": 512,
                   "number_of_frames": None, "bits_allocated": 16,
                   "photometric_interpretation": "MONOCHROME2", "pixel_spacing": "0.7\\0.7",
                   "slice_thickness": values.get("slice_thickness"),
                   "spacing_between_slices": None,
                   "image_position_patient": f"-179.2\\-179.2\\{-1.25 * i}",
                   "image_orientation_patient": "1\\0\\0\\0\\1\\0", "kvp": values.get("kvp"),
                   "x_ray_tube_current": 250.0 if "kvp" in values else None,
                   "convolution_kernel": values.get("convolution_kernel"),
                   "repetition_time": values.get("repetition_time"),
                   "echo_time": values.get("echo_time"), "inversion_time": None,
                   "flip_angle": values.get("flip_angle"), "sequence_name": None,
                   "burned_in_annotation": "NO",
                   "transfer_syntax_uid": "1.2.840.10008.1.2.1", "size_bytes": 526_000,
                   "sha256": sha,
                   "object_key": f"{PROJECT}/dicom/{instance_id[:2]}/{instance_id[2:4]}/"
                                 f"{instance_id}-{sha[:16]}.dcm",
                   "metadata_json": json.dumps({"00080018": {"vr": "UI", "Value": [sop]},
                                                "00080060": {"vr": "CS",
                                                             "Value": [modality]}},
                                               separators=(",", ":")),
                   "oddities": "", "created_at": STAMP}
            n += 1


def fact_rows(plan: Plan, counts: list[int]) -> Iterator[dict[str, Any]]:
    rng = random.Random(SEED + 3)
    kinds = tuple((k, w) for k, w in KINDS)
    n = 0
    for subject in range(plan.subjects):
        subject_id = _id("subject", subject)
        lung = plan.lung.get(subject)
        for j in range(counts[subject]):
            day = rng.randrange(DAYS)
            fact: dict[str, Any] = {"value_number": None, "value_text": "", "value_system": "",
                                    "unit": "", "end": None, "status": ""}
            if lung is not None and j == 0:
                code, display = rng.choice(LUNG)
                fact.update(kind="condition", system="ICD10", code=code, display=display,
                            status="active")
                day = lung
            elif lung is not None and j in (1, 2):
                fact.update(_observation(rng, LOINC[0], mean=11.4))
                day = min(DAYS - 1, lung + rng.randrange(-30, 120))
            else:
                kind = _weighted(rng, kinds)[0]
                fact.update(_fact(rng, kind))
            start = datetime.combine(_day(day), datetime.min.time(), UTC) + timedelta(
                minutes=rng.randrange(8 * 60, 18 * 60))
            if fact["kind"] == "encounter":
                fact["end"] = start + timedelta(minutes=rng.randrange(15, 240))
            yield {"id": _id("fact", n), "project_id": PROJECT, "subject_id": subject_id,
                   **fact, "start": start, "detail": "{}", "imported_at": STAMP}
            n += 1


def _observation(rng: random.Random, loinc: tuple[str, str, str, float, float],
                 mean: float | None = None) -> dict[str, Any]:
    code, display, unit, average, sd = loinc
    value = round(max(0.1, rng.gauss(mean if mean is not None else average, sd)), 1)
    return {"kind": "observation", "system": "LOINC", "code": code, "display": display,
            "value_number": value, "unit": unit, "status": "final"}


def _fact(rng: random.Random, kind: str) -> dict[str, Any]:
    if kind == "observation":
        return _observation(rng, rng.choice(LOINC))
    if kind == "condition":
        if rng.random() < 0.7:
            code, display, _ = _weighted(rng, ICD10)
            return {"kind": kind, "system": "ICD10", "code": code, "display": display,
                    "status": "active"}
        code, display = rng.choice(SNOMED_CONDITIONS)
        return {"kind": kind, "system": "SNOMED", "code": code, "display": display,
                "status": rng.choice(("active", "resolved"))}
    code, display = rng.choice({"medication": MEDICATIONS, "procedure": PROCEDURES,
                                "encounter": ENCOUNTERS}[kind])
    system = "DMD" if kind == "medication" else "SNOMED"
    return {"kind": kind, "system": system, "code": code, "display": display,
            "status": "completed" if kind != "medication" else "active"}


# -- the build --------------------------------------------------------------------------------
def _write(engine: Any, table: Any, rows: Iterator[dict[str, Any]]) -> int:
    from sqlalchemy import insert

    count = 0
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == CHUNK:
            with engine.begin() as conn:
                conn.execute(insert(table), batch)
            count += len(batch)
            batch = []
    if batch:
        with engine.begin() as conn:
            conn.execute(insert(table), batch)
        count += len(batch)
    return count


def _built(archive: Any) -> dict[str, Any] | None:
    from sqlalchemy import select

    from imagebank.index.tables import ArchiveMeta

    with archive.sessions.begin() as session:
        value = session.scalar(select(ArchiveMeta.value).where(ArchiveMeta.key == MARKER))
    return json.loads(value) if value else None


def build(archive: Any, subjects: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fill the (empty, migrated) index of ``archive`` at this size; counts and seconds."""
    from imagebank.index.tables import ArchiveMeta, ClinicalFact, Instance, Series, Study, Subject

    engine = archive.engine
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
    archive.create_project(PROJECT, "Cohort scale (synthetic)")
    started = time.perf_counter()
    plan = Plan(subjects)
    instance_counts = plan.instance_counts(10 * subjects)
    fact_counts = plan.fact_counts(10 * subjects)
    seconds: dict[str, float] = {"plan": time.perf_counter() - started}
    counts: dict[str, int] = {}
    for name, table, rows in (
        ("subjects", Subject, subject_rows(plan)),
        ("studies", Study, study_rows(plan, instance_counts)),
        ("series", Series, series_rows(plan, instance_counts)),
        ("instances", Instance, instance_rows(plan, instance_counts)),
        ("clinical_facts", ClinicalFact, fact_rows(plan, fact_counts)),
    ):
        t0 = time.perf_counter()
        counts[name] = _write(engine, table, rows)
        seconds[name] = time.perf_counter() - t0
        log(f"    {name}: {counts[name]:,} rows in {seconds[name]:.1f} s "
            f"({counts[name] / seconds[name]:,.0f}/s)")
    t0 = time.perf_counter()
    archive.optimize()
    if sqlite:
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    seconds["statistics"] = time.perf_counter() - t0
    counts["lung_group"] = len(plan.lung)
    built = {"counts": counts, "seconds": {k: round(v, 1) for k, v in seconds.items()},
             "total_seconds": round(time.perf_counter() - started, 1)}
    from sqlalchemy import insert

    with engine.begin() as conn:
        conn.execute(insert(ArchiveMeta).values(key=MARKER, value=json.dumps(built)))
    return built


def open_index(subjects: int, cache: Path, server: str | None, log: Callable[[str], None]
               ) -> tuple[Any, dict[str, Any]]:
    """The archive of this size (SQLite, or PostgreSQL on ``server``), built if needed; and
    what its build measured."""
    from imagebank.services.archive import Archive

    folder = cache / f"subjects-{subjects}"
    overrides: dict[str, Any] = {}
    if server:
        name = f"cohort_scale_{subjects}"
        fresh = not database_exists(server, name)
        overrides["database_url"] = database(server, name, fresh=False)
        folder = cache / f"subjects-{subjects}-postgres"
    archive = Archive.open(folder / "data", **overrides)
    built = _built(archive)
    if built is not None:
        return archive, built
    archive.close()
    what = "PostgreSQL" if server else "SQLite"
    log(f"  building the {what} index of {subjects:,} subjects in "
        f"{overrides.get('database_url', folder)} ...")
    if server:
        if not fresh:  # an interrupted build: start again
            overrides["database_url"] = database(server, f"cohort_scale_{subjects}")
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    archive = Archive.open(folder / "data", **overrides)
    built = build(archive, subjects, log)
    log(f"  built in {built['total_seconds']:.0f} s: {built['counts']}")
    return archive, built


# -- the measurement ------------------------------------------------------------------------
HAND_SQL = {
    "sqlite": """
SELECT COUNT(DISTINCT c.subject_id) FROM clinical_facts c
JOIN studies st ON st.subject_id = c.subject_id
JOIN series se ON se.study_id = st.id
WHERE c.project_id = :project AND c.kind = 'condition' AND c.system = 'ICD10'
  AND c.code >= 'C34' AND c.code < 'C35' AND se.modality = 'CT' AND st.project_id = :project
  AND julianday(substr(st.study_date, 1, 4) || '-' || substr(st.study_date, 5, 2) || '-'
                || substr(st.study_date, 7, 2)) - julianday(substr(c.start, 1, 10))
      BETWEEN 0 AND 90
  AND EXISTS (SELECT 1 FROM clinical_facts o
              WHERE o.project_id = :project AND o.kind = 'observation'
                AND o.system = 'LOINC' AND o.code = '718-7'
                AND o.value_number BETWEEN 8 AND 12 AND o.subject_id = c.subject_id)
""",
    "postgresql": """
SELECT COUNT(DISTINCT c.subject_id) FROM clinical_facts c
JOIN studies st ON st.subject_id = c.subject_id
JOIN series se ON se.study_id = st.id
WHERE c.project_id = :project AND c.kind = 'condition' AND c.system = 'ICD10'
  AND c.code LIKE 'C34%' AND se.modality = 'CT' AND st.project_id = :project
  AND to_date(st.study_date, 'YYYYMMDD') - (c.start AT TIME ZONE 'UTC')::date BETWEEN 0 AND 90
  AND EXISTS (SELECT 1 FROM clinical_facts o
              WHERE o.project_id = :project AND o.kind = 'observation'
                AND o.system = 'LOINC' AND o.code = '718-7'
                AND o.value_number BETWEEN 8 AND 12 AND o.subject_id = c.subject_id)
""",
}


def _timed(run: Callable[[], int]) -> tuple[list[float], int]:
    found = 0
    for _ in range(WARMUP):
        found = run()
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        found = run()
        times.append((time.perf_counter() - started) * 1000)
    return times, found


def _p95(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]


def measure_one(archive: Any, name: str, built: dict[str, Any],
                log: Callable[[str], None] = print) -> list[Result]:
    from sqlalchemy import text

    from imagebank.services.cohort import search

    dialect = archive.engine.dialect.name
    statement = text(HAND_SQL[dialect])

    def hand() -> int:
        with archive.engine.connect() as conn:
            return int(conn.execute(statement, {"project": PROJECT}).scalar_one())

    last: dict[str, Any] = {}

    def searched() -> int:
        result = search(archive, PROJECT, QUERY, exact=True)
        last["result"] = result
        assert result.people.value is not None
        return result.people.value

    def counted() -> int:
        shown = search(archive, PROJECT, QUERY).people
        return int(shown.value or 0)

    hand_times, hand_people = _timed(hand)
    times, people = _timed(searched)
    count_times, _ = _timed(counted)
    if people != hand_people:
        raise RuntimeError(f"the search counts {people} people, the hand-written SQL "
                           f"{hand_people}")
    if not people:
        raise RuntimeError("the query matches nobody: the data is not selective as meant")
    result = last["result"]
    counts = built["counts"]
    median, hand_median = statistics.median(times), statistics.median(hand_times)
    log(f"  {name}: search median {median:.1f} ms, p95 {_p95(times):.1f} ms; hand-written "
        f"SQL median {hand_median:.1f} ms; {people} people, {result.studies.value} studies, "
        f"{result.series.value} series; counts only (exact=False) median "
        f"{statistics.median(count_times):.1f} ms")
    group = (f"cohort search, {name}, {counts['subjects']:,} subjects, "
             f"{counts['clinical_facts']:,} facts, {counts['instances']:,} instances")
    target = TARGETS[name] if counts["subjects"] >= 100_000 else None
    return [
        Result(group, f"hand-written SQL (people only), median of {RUNS}", hand_median, "ms",
               detail=f"p95 {_p95(hand_times):.1f} ms; {hand_people} people; baseline",
               extra={"times_ms": hand_times}),
        Result(group, f"services.cohort.search, exact, median of {RUNS}", median, "ms",
               detail=f"p95 {_p95(times):.1f} ms; {people} people, {result.studies.value} "
                      f"studies, {result.series.value} series",
               ratio=median / hand_median if hand_median else None,
               ratio_of="hand-written SQL",
               target=f"< {TARGETS[name]:.0f} ms" + ("" if target else " (at 100,000)"),
               met=(median < target) if target else None,
               extra={"times_ms": times, "p95_ms": _p95(times), "build": built}),
        Result(group, f"services.cohort.search, counts only (exact=False), median of {RUNS}",
               statistics.median(count_times), "ms",
               detail=f"p95 {_p95(count_times):.1f} ms; suppressed and rounded counts, no "
                      "IDs; informative row",
               ratio=statistics.median(count_times) / hand_median if hand_median else None,
               ratio_of="hand-written SQL", extra={"times_ms": count_times}),
    ]


def cohort_available() -> bool:
    try:
        import imagebank.services.cohort  # noqa: F401
    except ImportError:
        return False
    return True


def measure(subjects: int, *, cache: Path = CACHE, postgres_url: str | None = None,
            generate_only: bool = False, log: Callable[[str], None] = print) -> list[Result]:
    results: list[Result] = []
    with postgres_server(postgres_url, keep_in=cache / "postgres-cluster") as server:
        for name, url in (("SQLite", None), ("PostgreSQL", server)):
            if name == "PostgreSQL" and not server:
                continue
            archive, built = open_index(subjects, cache, url, log)
            try:
                counts = built["counts"]
                results.append(Result(
                    f"cohort scale index, {name}", f"generation of {counts['subjects']:,} "
                    f"subjects, {counts['clinical_facts']:,} facts, {counts['instances']:,} "
                    "instances", built["total_seconds"], "s",
                    detail=", ".join(f"{k} {v} s" for k, v in built["seconds"].items()),
                    extra=built))
                if not generate_only:
                    results.extend(measure_one(archive, name, built, log))
            finally:
                archive.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2,000 subjects")
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--postgres-url", default=None,
                        help="a PostgreSQL server to build and query a database on too; "
                             "'auto' runs a cluster kept in the cache folder")
    parser.add_argument("--generate-only", action="store_true")
    args = parser.parse_args()
    subjects = 2_000 if args.smoke else args.subjects
    print(format_table(measure(subjects, cache=args.cache, postgres_url=args.postgres_url,
                               generate_only=args.generate_only)))


if __name__ == "__main__":
    main()
