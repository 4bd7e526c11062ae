"""De-identifying a folder into another (``services.deid``): pseudonym paths only, every output
passing the residual-identifier scan again when read back, keyed and deterministic, what is
not written reported with its reason, nothing half-written."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from deidkit import (
    OUTPUT_NAME,
    PATIENTS,
    dciodvfy_errors,
    output_files,
    phi_datasets,
    read,
    write_phi_folder,
)
from imagebank.dicom.deid import deidentify, residual_identifiers
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.errors import InvalidInputError
from imagebank.domain.pseudonyms import Pseudonymiser
from imagebank.services import deid as deid_service
from imagebank.services.deid import PARTIAL, Status, deidentify_folder, make_config
from testkit import SHARED_DATA

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def _by_output(files: list[Path | object], key: bytes = KEY) -> dict[str, Dataset]:
    """Each input's dataset under the name of the SOP Instance UID its output must have."""
    pseudonyms = Pseudonymiser(key)
    return {pseudonyms.uid(f.dataset.SOPInstanceUID): f.dataset  # type: ignore[attr-defined]
            for f in files}


def _all_text(ds: Dataset) -> str:
    return "\n".join(str(e.value) for e in ds.iterall() if e.VR not in ("SQ", "OB", "OW"))


def test_outputs_have_pseudonym_paths_and_pass_the_scan_again(tmp_path: Path) -> None:
    files = write_phi_folder(tmp_path / "in", patients=2, slices=2)
    out = tmp_path / "out"
    summary = deidentify_folder(tmp_path / "in", out, make_config(KEY), workers=1)
    assert summary.as_dict()["written"] == summary.files == 4 and summary.ok
    outputs = output_files(out)
    assert len(outputs) == 4
    # Nothing of the input's names in any output path, nor any identifying value.
    forbidden = {part.lower() for f in files for part in f.path.relative_to(tmp_path / "in")
                 .with_suffix("").parts}
    for name, patient_id, birth in PATIENTS[:2]:
        forbidden |= {patient_id, birth, *name.lower().split("^")}
    for path in outputs:
        relative = path.relative_to(out).as_posix()
        assert OUTPUT_NAME.match(relative), relative
        assert not any(word.lower() in relative.lower() for word in forbidden), relative
    assert not (out / PARTIAL).exists()  # the temporary folder is gone after the run
    # Read back from disk, every output passes the scan and carries no identifying text.
    sources = _by_output(files)
    for path in outputs:
        ds = read(path)
        source = sources[ds.SOPInstanceUID]
        assert residual_identifiers(source, ds) == []
        assert path.stem == ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert path.parent.name == ds.SeriesInstanceUID
        assert path.parent.parent.name == ds.StudyInstanceUID
        assert path.parent.parent.parent.name == ds.PatientID
        assert ds.PatientIdentityRemoved == "YES"
        assert path.read_bytes()[:128] == bytes(128)  # a new, empty preamble
        assert ds.PixelData == source.PixelData  # pixels untouched
        text = _all_text(ds).lower()
        for word in ("smithson", "okonkwo", "acacia", "fostercare", "leeds"):
            assert word not in text
        # references still resolve to the first instance's new UID
        if "ReferencedImageSequence" in ds:
            target = ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
            assert target in {read(p).SOPInstanceUID for p in path.parent.iterdir()}


def test_the_real_ct_is_deidentified_with_its_pixels_intact(tmp_path: Path) -> None:
    source = SHARED_DATA / "dcmqi-ct-3slice" / "ct-3slice"
    out = tmp_path / "out"
    summary = deidentify_folder(source, out, make_config(KEY), workers=2)
    inputs = sorted(source.iterdir())
    assert summary.files == len(inputs) == summary.written == 3
    by_uid = {read(p).SOPInstanceUID: read(p) for p in inputs}
    pseudonyms = Pseudonymiser(KEY)
    for path in output_files(out):
        assert OUTPUT_NAME.match(path.relative_to(out).as_posix())
        ds = read(path)
        original = next(s for u, s in by_uid.items() if pseudonyms.uid(u) == ds.SOPInstanceUID)
        assert residual_identifiers(original, ds) == []
        assert ds.PixelData == original.PixelData
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert ds.pixel_array.shape == original.pixel_array.shape


def test_same_key_same_bytes_other_key_other_pseudonyms(tmp_path: Path) -> None:
    write_phi_folder(tmp_path / "in", patients=2, slices=3)
    runs = {}
    for name, key, workers in (("a", KEY, 1), ("b", KEY, 2), ("c", OTHER_KEY, 2)):
        assert deidentify_folder(tmp_path / "in", tmp_path / name, make_config(key),
                                 workers=workers).ok
        runs[name] = {p.relative_to(tmp_path / name).as_posix(): p.read_bytes()
                      for p in output_files(tmp_path / name)}
    assert len(runs["a"]) == 6
    assert runs["a"] == runs["b"]  # deterministic, one process or a pool alike
    assert not set(runs["a"]) & set(runs["c"])
    patients = {name.split("/")[0] for name in runs["a"]}
    assert len(patients) == 2
    assert not patients & {name.split("/")[0] for name in runs["c"]}


def test_what_is_not_written_is_reported_with_its_reason(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write_phi_folder(source, patients=1, slices=2)
    odd = source / "odd"
    odd.mkdir()
    (odd / "notes.txt").write_text("Patient SMITHSON seen on Tuesday\n")
    (odd / "empty.dcm").write_bytes(b"")
    whole = to_bytes(phi_datasets(2, 1)[0])
    (odd / "cut.dcm").write_bytes(whole[: len(whole) - 100])
    us = next(iter(make_study(SyntheticPatient.make(9), series=[
        SeriesSpec(modality="US", slices=1, rows=8, columns=8)])))
    del us.BurnedInAnnotation  # an ultrasound that does not say: it may show text
    (odd / "ultrasound.dcm").write_bytes(to_bytes(us))
    with zipfile.ZipFile(odd / "broken.zip", "w") as archive:
        archive.writestr("a.dcm", whole)
    (odd / "broken.zip").write_bytes((odd / "broken.zip").read_bytes()[:30])
    out = tmp_path / "out"
    reports: list[int] = []
    summary = deidentify_folder(source, out, make_config(KEY), workers=1,
                                progress=lambda r: reports.append(r.summary.files))
    assert not summary.ok
    assert (summary.written, summary.refused, summary.unreadable) == (2, 1, 4)
    assert summary.reasons == {"burned_in": 1, "not_dicom": 1, "empty": 1, "truncated": 1,
                               "bad_archive": 1}
    assert reports[-1] == summary.files == 7
    assert len(output_files(out)) == 2
    by_name = {Path(p.source).name: p for p in summary.problems}
    assert by_name["ultrasound.dcm"].status is Status.REFUSED
    assert by_name["cut.dcm"].reason == "truncated"
    for problem in summary.problems:
        assert "SMITHSON" not in problem.message.upper() and PATIENTS[2][1] not in problem.message


def test_the_scan_blocks_an_output_that_still_identifies(tmp_path: Path) -> None:
    """A safe-private allow-list that keeps a private element holding the patient's name:
    the engine keeps it, the scan finds it, the file is not written."""
    files = write_phi_folder(tmp_path / "in", patients=1, slices=2)
    config = make_config(KEY, ["retain_safe_private"], [("ACME 1.0", 0x02)])
    assert deidentify_folder(tmp_path / "in", tmp_path / "ok", config, workers=1).ok
    kept = read(output_files(tmp_path / "ok")[0])
    assert kept[0x00091002].value == "1.5"  # the harmless private element is kept
    config = make_config(KEY, ["retain_safe_private"], [("ACME 1.0", 0x01), ("ACME 1.0", 2)])
    summary = deidentify_folder(tmp_path / "in", tmp_path / "out", config, workers=1)
    assert (summary.written, summary.blocked) == (0, 2)
    assert summary.reasons == {"residual_identifiers": 2}
    problem = summary.problems[0]
    assert problem.status is Status.BLOCKED
    assert [(f.path, f.kind) for f in problem.findings] == [("(0009,1001)", "identifier")]
    assert PATIENTS[0][0] not in str(problem.as_dict())
    assert output_files(tmp_path / "out") == []
    assert not any((tmp_path / "out").rglob("*.tmp"))
    assert files


def test_a_second_run_is_idempotent_and_a_different_one_a_conflict(tmp_path: Path) -> None:
    write_phi_folder(tmp_path / "in", patients=1, slices=2)
    out = tmp_path / "out"
    first = deidentify_folder(tmp_path / "in", out, make_config(KEY), workers=1)
    before = {p: p.read_bytes() for p in output_files(out)}
    again = deidentify_folder(tmp_path / "in", out, make_config(KEY), workers=1)
    assert first.ok and again.ok and again.unchanged == again.written == 2
    other = deidentify_folder(tmp_path / "in", out, make_config(KEY, ["clean_descriptors",
                                                                      "retain_device_identity"]),
                              workers=1)
    assert not other.ok and other.reasons == {"conflict": 2}
    assert {p: p.read_bytes() for p in output_files(out)} == before  # nothing replaced


def test_zip_archives_are_read_and_their_names_not_mirrored(tmp_path: Path) -> None:
    files = write_phi_folder(tmp_path / "loose", patients=1, slices=2)
    (tmp_path / "in").mkdir()
    with zipfile.ZipFile(tmp_path / "in" / "SMITHSON_9434765919.zip", "w") as archive:
        for f in files:
            archive.write(f.path, f.path.relative_to(tmp_path / "loose").as_posix())
    summary = deidentify_folder(tmp_path / "in", tmp_path / "out", make_config(KEY), workers=1)
    assert summary.ok and summary.written == 2
    for path in output_files(tmp_path / "out"):
        relative = path.relative_to(tmp_path / "out").as_posix()
        assert OUTPUT_NAME.match(relative) and "SMITHSON" not in relative.upper()


def test_folders_that_overlap_are_refused(tmp_path: Path) -> None:
    write_phi_folder(tmp_path / "in", patients=1, slices=1)
    with pytest.raises(InvalidInputError, match="inside the input"):
        deidentify_folder(tmp_path / "in", tmp_path / "in" / "out", make_config(KEY))
    with pytest.raises(InvalidInputError, match="identifiable files"):
        deidentify_folder(tmp_path / "in", tmp_path, make_config(KEY))
    with pytest.raises(InvalidInputError, match="no such file"):
        deidentify_folder(tmp_path / "absent", tmp_path / "out", make_config(KEY))
    with pytest.raises(InvalidInputError, match="unknown option"):
        make_config(KEY, ["retain_everything"])
    assert not (tmp_path / "in" / "out").exists()


def test_nothing_half_written_when_a_run_stops(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that stops part way (here: an error while naming the 2nd task's outputs) leaves
    complete outputs and no temporary file; an interrupted run's old leftovers are removed
    by the next run, and were never named .dcm."""
    write_phi_folder(tmp_path / "in", patients=3, slices=3)
    out = tmp_path / "out"
    (out / PARTIAL).mkdir(parents=True)
    stale = out / PARTIAL / "0123abcd.tmp"
    stale.write_bytes(b"half an object")
    old = time.time() - 2 * deid_service.STALE_PARTIAL_SECONDS
    os.utime(stale, (old, old))
    monkeypatch.setattr(deid_service, "TASK_FILES", 4)
    monkeypatch.setattr(deid_service, "PUBLISH_FILES", 4)
    real_link = deid_service.link_new
    calls = {"n": 0}

    def failing_link(source: Path, target: Path) -> bool:
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # as if the run were stopped here
        return real_link(source, target)

    monkeypatch.setattr(deid_service, "link_new", failing_link)
    with pytest.raises(KeyboardInterrupt):
        deidentify_folder(tmp_path / "in", out, make_config(KEY), workers=1)
    assert not stale.exists()
    written = output_files(out)
    assert len(written) == 5
    for path in written:  # every named output is whole
        ds = pydicom.dcmread(io.BytesIO(path.read_bytes()))
        assert len(ds.PixelData) == ds.Rows * ds.Columns * 2
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.suffix != ".dcm"]
    assert leftovers == []




def test_copied_pixels_give_the_bytes_a_full_parse_gives_and_dciodvfy_agrees(
        tmp_path: Path) -> None:
    """The pixel data is copied without being parsed; the file is the same, byte for byte,
    as the engine's output written whole by pydicom, and dciodvfy finds nothing new in it."""
    source = SHARED_DATA / "dcmqi-ct-3slice" / "ct-3slice"
    synthetic = tmp_path / "in" / "synthetic.dcm"
    synthetic.parent.mkdir()
    synthetic.write_bytes(to_bytes(phi_datasets(1, 1)[0]))
    config = make_config(KEY)
    for inputs in (source, synthetic.parent):
        out = tmp_path / f"out-{inputs.name}"
        assert deidentify_folder(inputs, out, config, workers=1).ok
        for path in output_files(out):
            written = path.read_bytes()
            original = next(p for p in inputs.iterdir() if Pseudonymiser(KEY).uid(
                read(p).SOPInstanceUID) == path.stem)
            whole = deidentify(pydicom.dcmread(original), config).dataset
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, whole, enforce_file_format=True)
            assert written == buffer.getvalue()
            assert not dciodvfy_errors(path) - dciodvfy_errors(original)


def test_what_follows_the_pixels_and_compressed_pixels_are_handled(tmp_path: Path) -> None:
    """Pixel data is copied unparsed only when it ends the file: a private element after it
    (which holds a name here) is de-identified like any other; encapsulated (RLE) pixel data
    is parsed and kept whole."""
    from pydicom.uid import RLELossless

    (tmp_path / "in").mkdir()
    trailing = phi_datasets(0, 1)[0]
    trailing.add_new(0x7FE10010, "LO", "ACME TRAILER")
    trailing.add_new(0x7FE11001, "LO", PATIENTS[0][0])
    (tmp_path / "in" / "trailing.dcm").write_bytes(to_bytes(trailing))
    compressed = phi_datasets(1, 1)[0]
    compressed.compress(RLELossless)
    (tmp_path / "in" / "rle.dcm").write_bytes(to_bytes(compressed))
    out = tmp_path / "out"
    summary = deidentify_folder(tmp_path / "in", out, make_config(KEY), workers=1)
    assert summary.ok and summary.written == 2
    for path in output_files(out):
        ds = read(path)
        assert 0x7FE11001 not in ds and PATIENTS[0][0].encode() not in path.read_bytes()
        if ds.file_meta.TransferSyntaxUID == RLELossless:
            assert ds.PixelData == compressed.PixelData
            assert (ds.pixel_array == compressed.pixel_array).all()
        else:
            assert ds.PixelData == trailing.PixelData
