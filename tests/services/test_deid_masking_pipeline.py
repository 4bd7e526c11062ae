"""Masking rules through the pipelines: ``imagebank deid`` with a policy, and a share into a
research project whose policy has a rule for the device. The folder pipeline copies pixel data
unparsed when it ends the file, so a rule must make it parse the pixels instead."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from imagebank.services.archive import Archive
from imagebank.services.deid import choose_profile, deidentify_folder
from imagebank.services.release import ReleaseSpec, run_release
from testkit import REPO, import_optout_list

LEEDS = REPO / "docs" / "policies" / "leeds.yaml"  # masks y < 50 on Philips EPIQ 7G images
KEY = bytes(range(32))
ROWS, COLUMNS, BANNER = 120, 800, 50


def _ultrasound(seed: int) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(1, 255, size=(ROWS, COLUMNS), dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "BANNERMAN^GRACE", "4010232137", "19700101"
    ds.PatientSex, ds.StudyDate, ds.StudyTime = "F", "20240301", "101500"
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "US", "Philips", "EPIQ 7G"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "ACC1", "", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, seed + 1
    ds.BurnedInAnnotation = "YES"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), pixels


def _check_masked(data: bytes, before: np.ndarray) -> None:
    ds = pydicom.dcmread(io.BytesIO(data))
    after = ds.pixel_array
    assert (after[:BANNER] == 0).all(), "the banner was not blanked"
    assert (after[BANNER:] == before[BANNER:]).all(), "pixels outside the banner changed"
    assert ds.BurnedInAnnotation == "NO"
    assert "113101" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert "BANNERMAN" not in str(ds)


def test_deid_with_a_policy_masks_what_it_would_refuse_without(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    data, before = _ultrasound(0)
    (source / "us.dcm").write_bytes(data)
    refused = deidentify_folder(source, tmp_path / "plain", choose_profile().config(KEY),
                                workers=1)
    assert refused.refused == 1 and refused.reasons == {"burned_in": 1}
    masked = deidentify_folder(source, tmp_path / "masked",
                               choose_profile(policy=LEEDS).config(KEY), workers=1)
    assert masked.ok and masked.written == 1
    [output] = [p for p in (tmp_path / "masked").rglob("*.dcm")]
    _check_masked(output.read_bytes(), before)


def test_a_share_masks_under_the_research_projects_rule(sqlite_archive: Archive,
                                                        tmp_path: Path) -> None:
    sqlite_archive.create_project("site")
    sqlite_archive.create_project("lab", zone="research", policy=LEEDS.read_text())
    import_optout_list(sqlite_archive)
    originals = [_ultrasound(seed) for seed in range(3)]
    stored = sqlite_archive.receive([(data, f"us {i}") for i, (data, _) in
                                     enumerate(originals)], "site")
    assert stored.summary.stored == 3
    result = run_release(sqlite_archive, ReleaseSpec("share", "site", "lab"), "m1", workers=1)
    assert result["ok"] and result["written"] == 3
    by_number = {}
    for study in sqlite_archive.studies("lab"):
        for series in sqlite_archive.series(study["id"]):
            for instance in sqlite_archive.instances(series["id"]):
                data = sqlite_archive.instance_bytes(instance["id"])
                by_number[int(pydicom.dcmread(io.BytesIO(data)).InstanceNumber)] = data
    assert sorted(by_number) == [1, 2, 3]
    for seed, (_, before) in enumerate(originals):
        _check_masked(by_number[seed + 1], before)
