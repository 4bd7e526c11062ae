"""Ingest into an Archive, on SQLite and on a real PostgreSQL (the ``archive`` fixture).

Every input is accounted for (stored + duplicates + conflicts + quarantined == inputs), the
bytes are kept as received, the index counters are exact, and nothing identifies a patient in
the object keys.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from sqlalchemy import select

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.ids import parse_instance_object_key
from imagebank.domain.model import IngestSummary
from imagebank.index.tables import Instance, QuarantineItem, Series, Study, Subject
from imagebank.services.archive import Archive

ROWS = 32


def _datasets(patient: int, study_number: int = 0, *, slices: int = 3, modality: str = "CT",
              issuer: str = "SYNTH-TRUST", series: list[SeriesSpec] | None = None
              ) -> list[Dataset]:
    specs = series or [SeriesSpec(modality=modality, slices=slices, rows=ROWS, columns=ROWS)]
    return list(make_study(SyntheticPatient.make(patient, issuer), study_number=study_number,
                           series=specs))


def _write(folder: Path, datasets: list[Dataset], prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{prefix}-{i:03d}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rows(archive: Archive, model: Any) -> list[dict[str, Any]]:
    with archive.sessions.begin() as session:
        return [{c.key: getattr(o, c.key) for c in model.__table__.columns}
                for o in session.scalars(select(model))]


def _accounted(summary: IngestSummary, inputs: int) -> None:
    assert summary.stored + summary.duplicates + summary.conflicts + summary.quarantined == inputs
    assert summary.total == inputs


def _staging_files(archive: Archive) -> list[Path]:
    staging = Path(archive.settings.effective_store) / ".staging"
    return [p for p in staging.iterdir()] if staging.exists() else []


def _all_instance_bytes_match(archive: Archive, originals: dict[str, bytes]) -> None:
    """Each stored object is byte for byte the input with that SOPInstanceUID."""
    instances = _rows(archive, Instance)
    assert {i["sop_instance_uid"] for i in instances} == set(originals)
    for row in instances:
        original = originals[row["sop_instance_uid"]]
        stored = archive.store.get(row["object_key"])
        assert stored == original
        assert row["sha256"] == _sha(original) == _sha(stored)
        assert row["size_bytes"] == len(original)
        assert archive.instance_bytes(row["id"]) == original
        assert parse_instance_object_key(row["object_key"]) == (
            row["project_id"], row["id"], row["sha256"][:16])


@pytest.fixture
def project(archive: Archive) -> Iterator[str]:
    archive.create_project("p")
    yield "p"


# -- folders, files, zips -------------------------------------------------------------------
def test_folder_is_ingested_recursively(archive: Archive, project: str, tmp_path: Path) -> None:
    root = tmp_path / "in"
    originals: dict[str, bytes] = {}
    for n, folder in enumerate([root, root / "a", root / "a" / "b" / "c", root / "z"]):
        paths = _write(folder, _datasets(n), f"s{n}")
        for p in paths:
            data = p.read_bytes()
            originals[_sop(data)] = data
    summary = archive.ingest([root], project)
    _accounted(summary, 12)
    assert (summary.stored, summary.duplicates, summary.quarantined) == (12, 0, 0)
    assert summary.ok
    assert summary.bytes_stored == sum(len(d) for d in originals.values())
    _all_instance_bytes_match(archive, originals)
    stats = archive.stats()
    assert (stats["subjects"], stats["studies"], stats["series"], stats["instances"]) == (
        4, 4, 4, 12)
    assert _staging_files(archive) == []


def _sop(data: bytes) -> str:
    from imagebank.dicom.header import read_header

    header = read_header(data)
    assert not hasattr(header, "reason")
    return header.sop_instance_uid  # type: ignore[union-attr]


def test_single_files(archive: Archive, project: str, tmp_path: Path) -> None:
    paths = _write(tmp_path / "in", _datasets(1, slices=4), "x")
    summary = archive.ingest([paths[0], paths[2]], project)
    assert (summary.stored, summary.total) == (2, 2)
    summary = archive.ingest([paths[0], paths[1], paths[3]], project)
    assert (summary.stored, summary.duplicates, summary.total) == (2, 1, 3)
    assert archive.stats()["instances"] == 4


def test_zip_archive_with_subfolders(archive: Archive, project: str, tmp_path: Path) -> None:
    datasets = _datasets(2, slices=3) + _datasets(3, slices=2, modality="MR")
    blobs = [to_bytes(ds) for ds in datasets]
    upload = tmp_path / "upload.zip"
    with zipfile.ZipFile(upload, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("PATIENT1/", b"")
        for i, blob in enumerate(blobs):
            z.writestr(f"PATIENT{i % 2}/STUDY/SERIES{i}/IM{i:04d}", blob)
        z.writestr("PATIENT1/notes.txt", b"not dicom")
    summary = archive.ingest([upload], project)
    _accounted(summary, len(blobs) + 1)
    assert (summary.stored, summary.quarantined) == (len(blobs), 1)
    assert summary.reasons == {"not_dicom": 1}
    _all_instance_bytes_match(archive, {_sop(b): b for b in blobs})
    (item,) = archive.quarantine(project)
    assert item["source"] == f"{upload}!PATIENT1/notes.txt"
    assert archive.store.get(item["object_key"]) == b"not dicom"
    # The same zip again: all duplicates, the text file quarantined again.
    again = archive.ingest([upload], project)
    assert (again.stored, again.duplicates, again.quarantined) == (0, len(blobs), 1)


def test_damaged_zip_and_damaged_member(archive: Archive, project: str, tmp_path: Path) -> None:
    root = tmp_path / "in"
    good = _write(root, _datasets(4, slices=2), "good")
    (root / "bad.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    blob = to_bytes(_datasets(5, slices=1)[0])
    member_zip = root / "member.zip"
    with zipfile.ZipFile(member_zip, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("ok.dcm", to_bytes(_datasets(6, slices=1)[0]))
        z.writestr("damaged.dcm", blob)
    raw = bytearray(member_zip.read_bytes())
    at = raw.index(blob[200:260])  # flip a byte inside the stored member: its CRC fails
    raw[at] ^= 0xFF
    member_zip.write_bytes(bytes(raw))
    summary = archive.ingest([root], project)
    # inputs: 2 files + the bad zip + 2 members
    _accounted(summary, 5)
    assert summary.stored == 3
    assert summary.reasons == {"bad_archive": 1, "unreadable_source": 1}
    rows = {r["reason"]: r for r in archive.quarantine(project)}
    assert set(rows) == {"bad_archive", "unreadable_source"}
    assert rows["bad_archive"]["source"] == str(root / "bad.zip")
    # The damaged archive's bytes are kept, as received, in quarantine.
    kept = archive.store.get(rows["bad_archive"]["object_key"])
    assert kept == (root / "bad.zip").read_bytes()
    assert rows["unreadable_source"]["source"] == f"{member_zip}!damaged.dcm"
    assert len(good) == 2


# -- a mix of good and bad files ------------------------------------------------------------
def _bad_files(folder: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected reason)."""
    good = to_bytes(_datasets(40, slices=1)[0])
    exe = bytearray(good)
    exe[:2] = b"MZ"
    no_uid = _datasets(41, slices=1)[0]
    del no_uid.SeriesInstanceUID
    dicomdir = get_testdata_file("DICOMDIR")
    assert dicomdir is not None
    files = {
        "empty.dcm": (b"", "empty"),
        "notes.txt": (b"hello\n" * 50, "not_dicom"),
        "cut.dcm": (good[: len(good) - 100], "truncated"),
        "polyglot.dcm": (bytes(exe), "executable_preamble"),
        "nouid.dcm": (to_bytes(no_uid), "missing_uid"),
        "DICOMDIR": (Path(dicomdir).read_bytes(), "dicomdir"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return files


def test_mix_of_good_and_bad_files(archive: Archive, project: str, tmp_path: Path) -> None:
    root = tmp_path / "in"
    good = _write(root / "good", _datasets(7, slices=5), "g")
    bad = _bad_files(root / "bad")
    summary = archive.ingest([root], project)
    _accounted(summary, len(good) + len(bad))
    assert summary.stored == len(good)
    assert summary.quarantined == len(bad)
    assert not summary.ok
    expected_reasons: dict[str, int] = {}
    for _, reason in bad.values():
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert summary.reasons == expected_reasons
    assert {Path(source).name for source, _, _ in summary.problems} == set(bad)

    rows = _rows(archive, QuarantineItem)
    assert len(rows) == len(bad)
    by_name = {Path(r["source"]).name: r for r in rows}
    for name, (data, reason) in bad.items():
        row = by_name[name]
        assert row["reason"] == reason
        assert row["message"]
        assert row["project_id"] == project
        assert row["size_bytes"] == len(data)
        # The bytes are kept in quarantine, exactly as received.
        assert row["object_key"] is not None
        assert row["sha256"] == _sha(data)
        assert archive.store.get(row["object_key"]) == data
        assert name not in row["object_key"]
    assert archive.stats()["quarantined"] == len(bad)
    assert archive.stats()["quarantine_reasons"] == expected_reasons


def test_too_large_is_quarantined_without_its_bytes(tmp_path: Path, database_url: str) -> None:
    blobs = [to_bytes(ds) for ds in _datasets(8, slices=3)]
    limit = max(len(b) for b in blobs)
    root = tmp_path / "in"
    root.mkdir()
    for i, blob in enumerate(blobs):
        (root / f"{i}.dcm").write_bytes(blob)
    big = blobs[0] + b"\x00" * 64  # over the limit by trailing padding
    assert len(big) > limit
    (root / "big.dcm").write_bytes(big)
    with Archive.open(tmp_path / "data", database_url=database_url, workers=1,
                      max_object_size=limit) as archive:
        archive.create_project("p")
        summary = archive.ingest([root], "p")
        _accounted(summary, 4)
        assert (summary.stored, summary.quarantined) == (3, 1)
        assert summary.reasons == {"too_large": 1}
        (row,) = archive.quarantine("p")
        assert row["reason"] == "too_large"
        assert row["object_key"] is None
        assert row["size_bytes"] == len(big)
        assert "IMAGEBANK_MAX_OBJECT_SIZE" in row["message"]
        # ingest_bytes applies the same limit
        one = archive.ingest_bytes([(big, "upload")], "p")
        assert one.reasons == {"too_large": 1}
        keys = list(archive.store.keys())
        assert not any("quarantine" in k for k in keys)


# -- idempotence, conflicts, patients -------------------------------------------------------
def test_reingest_is_idempotent(archive: Archive, project: str, tmp_path: Path) -> None:
    root = tmp_path / "in"
    _write(root, _datasets(9, slices=4), "a")
    _write(root / "b", _datasets(10, slices=3, modality="MR"), "b")
    first = archive.ingest([root], project)
    assert first.stored == 7
    before = (archive.stats(), sorted(archive.store.keys()), _rows(archive, Study))
    for _ in range(2):
        again = archive.ingest([root], project)
        _accounted(again, 7)
        assert (again.stored, again.duplicates, again.conflicts, again.quarantined) == (
            0, 7, 0, 0)
        assert again.ok and again.bytes_stored == 0
    after = (archive.stats(), sorted(archive.store.keys()), _rows(archive, Study))
    assert after == before
    assert _staging_files(archive) == []


def test_conflict_keeps_the_first(archive: Archive, project: str, tmp_path: Path) -> None:
    ds = _datasets(11, slices=2)
    first = to_bytes(ds[0])
    ds[0].InstitutionName = "Another Hospital"  # same SOPInstanceUID, other bytes
    second = to_bytes(ds[0])
    assert first != second
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.dcm").write_bytes(first)
    (tmp_path / "a" / "y.dcm").write_bytes(to_bytes(ds[1]))
    (tmp_path / "b" / "x.dcm").write_bytes(second)
    one = archive.ingest([tmp_path / "a"], project)
    assert one.stored == 2
    two = archive.ingest([tmp_path / "b"], project)
    _accounted(two, 1)
    assert (two.stored, two.conflicts, two.quarantined) == (0, 1, 0)
    assert not two.ok
    assert two.reasons == {"conflict": 1}
    instance = next(r for r in _rows(archive, Instance)
                    if r["sop_instance_uid"] == ds[0].SOPInstanceUID)
    assert archive.instance_bytes(instance["id"]) == first
    assert instance["sha256"] == _sha(first)
    (row,) = archive.quarantine(project)
    assert row["reason"] == "conflict"
    assert row["instance_id"] == instance["id"]
    assert row["sha256"] == _sha(second)
    assert archive.store.get(row["object_key"]) == second
    assert archive.stats()["instances"] == 2
    study = _rows(archive, Study)[0]
    assert study["num_instances"] == 2
    assert study["institution_name"] != "Another Hospital"


def test_conflict_within_one_batch(archive: Archive, project: str) -> None:
    ds = _datasets(12, slices=1)[0]
    first = to_bytes(ds)
    ds.SeriesDescription = "CHANGED"
    second = to_bytes(ds)
    summary = archive.ingest_bytes([(first, "one"), (second, "two"), (first, "three")], project)
    _accounted(summary, 3)
    assert (summary.stored, summary.conflicts, summary.duplicates) == (1, 1, 1)
    (instance,) = _rows(archive, Instance)
    assert archive.instance_bytes(instance["id"]) == first
    (row,) = archive.quarantine(project)
    assert (row["reason"], row["source"]) == ("conflict", "two")


def test_patient_mismatch_is_quarantined(archive: Archive, project: str) -> None:
    ds = _datasets(13, slices=3)
    archive.ingest_bytes([(to_bytes(ds[0]), "first")], project)
    # Same study, another patient: a new instance of that study claims another PatientID.
    ds[1].PatientID = "SOMEONE-ELSE"
    ds[2].IssuerOfPatientID = "OTHER-ISSUER"  # same PatientID, other issuer: another patient
    summary = archive.ingest_bytes([(to_bytes(ds[1]), "second"), (to_bytes(ds[2]), "third")],
                                   project)
    _accounted(summary, 2)
    assert (summary.stored, summary.quarantined) == (0, 2)
    assert summary.reasons == {"patient_mismatch": 2}
    rows = archive.quarantine(project)
    assert {r["reason"] for r in rows} == {"patient_mismatch"}
    for row in rows:
        assert "SOMEONE-ELSE" not in row["message"]
        assert SyntheticPatient.make(13).patient_id not in row["message"]
        assert row["object_key"] and archive.store.get(row["object_key"])
    assert archive.stats()["instances"] == 1
    assert archive.stats()["subjects"] == 1


def test_patient_mismatch_within_one_batch(archive: Archive, project: str) -> None:
    ds = _datasets(14, slices=2)
    ds[1].PatientID = "SOMEONE-ELSE"
    summary = archive.ingest_bytes([(to_bytes(d), str(i)) for i, d in enumerate(ds)], project)
    assert (summary.stored, summary.quarantined) == (1, 1)
    assert summary.reasons == {"patient_mismatch": 1}


def test_same_patient_id_other_issuer_is_another_subject(archive: Archive, project: str
                                                         ) -> None:
    a = _datasets(15, 0, slices=2, issuer="TRUST-A")
    b = _datasets(15, 1, slices=2, issuer="TRUST-B")
    assert a[0].PatientID == b[0].PatientID
    summary = archive.ingest_bytes([(to_bytes(d), "x") for d in a + b], project)
    assert summary.stored == 4
    subjects = _rows(archive, Subject)
    assert len(subjects) == 2
    assert {s["patient_id"] for s in subjects} == {a[0].PatientID}
    assert {s["issuer_of_patient_id"] for s in subjects} == {"TRUST-A", "TRUST-B"}
    assert all(s["num_studies"] == 1 for s in subjects)
    studies = _rows(archive, Study)
    assert len({s["subject_id"] for s in studies}) == 2


# -- counters, keys, metadata ---------------------------------------------------------------
def test_counters_are_exact(archive: Archive, project: str, tmp_path: Path) -> None:
    mixed = [SeriesSpec(modality="CT", slices=3, rows=ROWS, columns=ROWS),
             SeriesSpec(modality="MR", slices=2, rows=ROWS, columns=ROWS),
             SeriesSpec(modality="CT", slices=1, rows=ROWS, columns=ROWS)]
    study_a = _datasets(20, 0, series=mixed)
    study_b = _datasets(20, 1, slices=4, modality="MR")
    study_c = _datasets(21, 0, slices=2)
    # First only part of study A (its first series), then the rest with the others.
    first_series = [d for d in study_a if d.SeriesNumber == 1]
    rest = [d for d in study_a if d.SeriesNumber != 1]
    archive.ingest_bytes([(to_bytes(d), "a") for d in first_series], project)
    study = _rows(archive, Study)[0]
    assert (study["num_series"], study["num_instances"], study["modalities_in_study"]) == (
        1, 3, "CT")
    _write(tmp_path / "in", rest + study_b + study_c, "r")
    summary = archive.ingest([tmp_path / "in"], project, batch_size=2)
    assert summary.stored == len(rest) + 4 + 2

    studies = {s["study_instance_uid"]: s for s in _rows(archive, Study)}
    a = studies[study_a[0].StudyInstanceUID]
    b = studies[study_b[0].StudyInstanceUID]
    c = studies[study_c[0].StudyInstanceUID]
    assert (a["num_series"], a["num_instances"], a["modalities_in_study"]) == (3, 6, "CT\\MR")
    assert (b["num_series"], b["num_instances"], b["modalities_in_study"]) == (1, 4, "MR")
    assert (c["num_series"], c["num_instances"], c["modalities_in_study"]) == (1, 2, "CT")
    instances = _rows(archive, Instance)
    for s in (a, b, c):
        assert s["size_bytes"] == sum(i["size_bytes"] for i in instances
                                      if i["study_id"] == s["id"])
    series = _rows(archive, Series)
    assert len(series) == 5
    for se in series:
        mine = [i for i in instances if i["series_id"] == se["id"]]
        assert se["num_instances"] == len(mine)
        assert se["size_bytes"] == sum(i["size_bytes"] for i in mine)
    subjects = {s["patient_id"]: s for s in _rows(archive, Subject)}
    assert subjects[SyntheticPatient.make(20).patient_id]["num_studies"] == 2
    assert subjects[SyntheticPatient.make(21).patient_id]["num_studies"] == 1
    listed = {p["id"]: p for p in archive.projects()}[project]
    assert (listed["subjects"], listed["studies"], listed["series"], listed["instances"]) == (
        2, 3, 5, 12)
    assert listed["size_bytes"] == sum(i["size_bytes"] for i in instances)


def test_object_keys_hold_no_patient_data_or_file_names(archive: Archive, project: str,
                                                        tmp_path: Path) -> None:
    datasets = _datasets(22, slices=3)
    root = tmp_path / "in"
    root.mkdir()
    names = []
    for i, ds in enumerate(datasets):
        name = f"{ds.PatientID}_{ds.PatientName.family_name}_{i}.dcm"
        (root / name).write_bytes(to_bytes(ds))
        names.append(name)
    (root / f"{datasets[0].PatientID}-notes.txt").write_bytes(b"junk")
    archive.ingest([root], project)
    keys = list(archive.store.keys())
    assert len(keys) == 4
    forbidden = [datasets[0].PatientID, str(datasets[0].PatientName),
                 datasets[0].PatientName.family_name, datasets[0].PatientBirthDate,
                 datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID,
                 datasets[0].AccessionNumber, "notes", ".txt",
                 *(d.SOPInstanceUID for d in datasets), *names]
    for key in keys:
        for value in forbidden:
            assert value not in key, (value, key)
    dicom_keys = [k for k in keys if parse_instance_object_key(k)]
    assert len(dicom_keys) == 3


def test_ingest_bytes(archive: Archive, project: str) -> None:
    blobs = [to_bytes(d) for d in _datasets(23, slices=3)]
    summary = archive.ingest_bytes([(b, f"upload-{i}") for i, b in enumerate(blobs)]
                                   + [(b"junk", "upload-junk")], project)
    _accounted(summary, 4)
    assert (summary.stored, summary.quarantined) == (3, 1)
    assert summary.problems[0][0] == "upload-junk"
    _all_instance_bytes_match(archive, {_sop(b): b for b in blobs})
    again = archive.ingest_bytes([(b, "again") for b in blobs], project)
    assert (again.stored, again.duplicates) == (0, 3)
    (row,) = archive.quarantine(project)
    assert archive.store.get(row["object_key"]) == b"junk"


def test_unknown_project_and_missing_path(archive: Archive, project: str, tmp_path: Path) -> None:
    from imagebank.domain.errors import InvalidInputError, NotFoundError

    with pytest.raises(NotFoundError, match="project create"):
        archive.ingest([tmp_path], "nope")
    with pytest.raises(NotFoundError):
        archive.ingest_bytes([(b"x", "x")], "nope")
    with pytest.raises(InvalidInputError, match="no such file"):
        archive.ingest([tmp_path / "missing"], project)
    assert archive.stats()["quarantined"] == 0


def test_metadata_json(archive: Archive, project: str) -> None:
    ds = _datasets(24, slices=1)[0]
    archive.ingest_bytes([(to_bytes(ds), "x")], project)
    (row,) = _rows(archive, Instance)
    metadata = json.loads(row["metadata_json"])
    assert metadata["00100020"] == {"vr": "LO", "Value": [ds.PatientID]}
    assert metadata["0020000D"]["Value"] == [ds.StudyInstanceUID]
    assert metadata["00080060"]["Value"] == ["CT"]
    assert "7FE00010" not in metadata
    assert "00020010" not in metadata  # the dataset, not its file meta
    assert "Value" not in json.dumps(metadata.get("7FE00010", {}))
    listed = archive.instances(row["series_id"])
    assert "metadata_json" not in listed[0]
    assert archive.instances(row["series_id"], with_metadata=True)[0]["metadata_json"] == (
        row["metadata_json"])
    assert row["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"
    assert (row["rows"], row["columns"], row["sop_class_uid"]) == (ROWS, ROWS, ds.SOPClassUID)


# -- workers --------------------------------------------------------------------------------
def _normalised(archive: Archive, project: str) -> dict[str, Any]:
    """The index contents of a project, without IDs, timestamps or other run-specific values."""
    drop = {"id", "project_id", "subject_id", "study_id", "series_id", "created_at",
            "updated_at", "object_key", "instance_id"}

    def clean(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(
            tuple(sorted((k, v) for k, v in r.items() if k not in drop))
            for r in rows if r["project_id"] == project
        )

    return {
        "subjects": clean(_rows(archive, Subject)),
        "studies": clean(_rows(archive, Study)),
        "series": clean(_rows(archive, Series)),
        "instances": clean(_rows(archive, Instance)),
        "quarantine": sorted((r["reason"], Path(r["source"]).name, r["sha256"])
                             for r in _rows(archive, QuarantineItem)
                             if r["project_id"] == project),
    }


def test_one_and_two_workers_give_the_same_index(archive: Archive, tmp_path: Path) -> None:
    root = tmp_path / "in"
    for n in range(4):
        _write(root / f"p{n}", _datasets(30 + n, slices=5, modality="CT" if n % 2 else "MR"),
               f"s{n}")
    _bad_files(root / "bad")
    archive.create_project("w1")
    archive.create_project("w2")
    one = archive.ingest([root], "w1", workers=1, batch_size=7)
    two = archive.ingest([root], "w2", workers=2, batch_size=7)
    assert one.as_dict() == two.as_dict()
    assert one.stored == 20
    a, b = _normalised(archive, "w1"), _normalised(archive, "w2")
    assert a == b
    assert len(a["instances"]) == 20 and len(a["quarantine"]) == 6
