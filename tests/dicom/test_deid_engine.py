"""The de-identification engine on PHI-laden datasets: what leaves, what stays, how it is
marked, that references still resolve, and that dciodvfy finds nothing new in its output."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deidkit import dciodvfy_errors, unknown_public_tag
from imagebank.dicom.deid import DeidConfig, Refused, deidentify, residual_identifiers
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.confidentiality import Profile
from imagebank.domain.pseudonyms import Pseudonymiser
from testkit import SHARED_DATA

KEY = bytes(range(32))
NAME, PATIENT, BIRTH = "SMITHSON^ALEXANDRA", "9434765919", "19611203"


def _config(*options: str, safe: frozenset[tuple[str, int]] = frozenset()) -> DeidConfig:
    return DeidConfig(Profile.of(options), Pseudonymiser(KEY), safe)


def _phi_study() -> list[Dataset]:
    """Two CT instances full of identifying values, the second referencing the first."""
    patient = SyntheticPatient.make(3)
    spec = SeriesSpec(slices=2, rows=16, columns=16)
    instances = list(make_study(patient, series=[spec]))
    for ds in instances:
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT, BIRTH
        ds.IssuerOfPatientID = "NHS"
        ds.PatientAddress = "12 Acacia Avenue, Leeds"
        ds.PatientTelephoneNumbers = "01134960123"
        ds.InstitutionName = "Leeds Teaching Hospitals"
        ds.ReferringPhysicianName = "FOSTERCARE^JONATHAN"
        ds.OperatorsName = "RADIOGRAPH^EVELYN"
        ds.AccessionNumber = "RR99887766"
        ds.StudyDescription = f"CT chest for {NAME.replace('^', ' ')} {PATIENT}"
        ds.ImageComments = "Smithson follow-up"
        ds.BurnedInAnnotation = "NO"
        ds.add_new(0x00090010, "LO", "ACME 1.0")
        ds.add_new(0x00091001, "LO", NAME)  # a name in a private tag
        ds.add_new(0x00091002, "DS", "1.5")  # harmless, but private
        ds.add_new(unknown_public_tag(), "LO", PATIENT)
        request = Dataset()
        request.AccessionNumber = "RR99887766"
        request.RequestedProcedureDescription = f"Chest {PATIENT}"
        nested = Dataset()
        nested.PatientName = NAME
        nested.PatientID = PATIENT
        request.ReferencedPatientSequence = Sequence([nested])
        ds.RequestAttributesSequence = Sequence([request])  # X: removed whole
        region = Dataset()  # a sequence the profile keeps: its items are de-identified
        region.CodeValue, region.CodingSchemeDesignator = "T-D3000", "SRT"
        region.CodeMeaning = f"Chest of {PATIENT}"
        region.AccessionNumber = "RR99887766"
        inner = Dataset()
        inner.PatientName, inner.PatientID = NAME, PATIENT
        inner.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.1370.77.1"
        region.ReferencedImageSequence = Sequence([inner])
        ds.AnatomicRegionSequence = Sequence([region])
    reference = Dataset()
    reference.ReferencedSOPClassUID = instances[0].SOPClassUID
    reference.ReferencedSOPInstanceUID = instances[0].SOPInstanceUID
    instances[1].ReferencedImageSequence = Sequence([reference])
    return instances


def _values(ds: Dataset) -> str:
    """Every value of the dataset, at any depth, as one text (for leak checks)."""
    parts: list[str] = []
    for element in ds.iterall():
        if element.VR != "SQ" and element.value is not None:
            value = element.value
            parts.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return "\n".join(parts)


def test_the_basic_profile_leaves_no_identifier_behind() -> None:
    first, second = _phi_study()
    before = copy.deepcopy(second)
    result = deidentify(second, _config())
    out = result.dataset
    assert second == before  # the input is untouched
    text = _values(out).lower()
    for leak in ("smithson", "alexandra", PATIENT, BIRTH, "acacia", "01134960123", "leeds",
                 "fostercare", "radiograph", "rr99887766", second.SOPInstanceUID.lower(),
                 second.StudyInstanceUID.lower()):
        assert leak.lower() not in text, leak
    assert residual_identifiers(second, out) == []
    # pseudonyms, per the project's key
    pseudonyms = Pseudonymiser(KEY)
    assert out.PatientID == pseudonyms.patient_id(PATIENT, "NHS") == result.patient_pseudonym
    assert out.PatientName == pseudonyms.patient_name(PATIENT, "NHS")
    assert "IssuerOfPatientID" not in out and "StudyDescription" not in out
    assert out.PatientBirthDate in ("", None) and out.AccessionNumber in ("", None)
    assert out.InstitutionName == "ANONYMOUS"  # X/Z/D: a dummy keeps the IOD conformant
    # private and unknown attributes are gone; nested sequences were de-identified too
    assert not any(int(e.tag) >> 16 == 0x0009 for e in out)
    assert unknown_public_tag() not in out
    assert "RequestAttributesSequence" not in out
    region = out.AnatomicRegionSequence[0]
    assert region.CodeValue == "T-D3000" and region.AccessionNumber in ("", None)
    inner = region.ReferencedImageSequence[0]
    assert inner.PatientID == result.patient_pseudonym
    assert inner.ReferencedSOPInstanceUID == pseudonyms.uid("1.2.826.0.1.3680043.10.1370.77.1")
    # the reference still resolves to the first instance's new UID
    first_out = deidentify(first, _config()).dataset
    assert (out.ReferencedImageSequence[0].ReferencedSOPInstanceUID
            == first_out.SOPInstanceUID != first.SOPInstanceUID)
    assert out.StudyInstanceUID == first_out.StudyInstanceUID
    assert out.SOPClassUID == second.SOPClassUID  # a DICOM-root UID is kept
    # marking
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_modified_dates_shift_every_date_of_a_patient_alike() -> None:
    ds = _phi_study()[0]
    ds.StudyDate, ds.SeriesDate, ds.AcquisitionDate = "20240301", "20240302", "20240310"
    result = deidentify(ds, _config("retain_long_modified_dates"))
    out = result.dataset
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    shift = result.date_shift_days
    assert shift < 0
    moved = [pydicom.valuerep.DA(v) for v in (out.StudyDate, out.SeriesDate,
                                             out.AcquisitionDate)]
    assert (moved[1] - moved[0]).days == 1 and (moved[2] - moved[0]).days == 9
    assert (pydicom.valuerep.DA("20240301") - moved[0]).days == -shift
    assert out.StudyDate != "20240301"


def test_clean_descriptors_keeps_descriptions_without_identifiers() -> None:
    ds = _phi_study()[0]
    out = deidentify(ds, _config("clean_descriptors")).dataset
    assert out.StudyDescription.startswith("CT chest for")
    assert "smithson" not in out.StudyDescription.lower()
    assert PATIENT not in out.StudyDescription
    assert "smithson" not in str(out.get("ImageComments", "")).lower()
    assert residual_identifiers(ds, out) == []


def test_safe_private_keeps_only_the_allowed_elements() -> None:
    ds = _phi_study()[0]
    out = deidentify(ds, _config("retain_safe_private",
                                 safe=frozenset({("ACME 1.0", 0x02)}))).dataset
    assert out[0x00091002].value == "1.5"
    assert out[0x00090010].value == "ACME 1.0"  # its creator, so the block still reads
    assert 0x00091001 not in out  # the name in a private tag is not on the list
    plain = deidentify(ds, _config(safe=frozenset({("ACME 1.0", 0x02)}))).dataset
    assert not any(int(e.tag) >> 16 == 0x0009 for e in plain)  # the option is needed


@pytest.mark.parametrize(("changes", "refused"), [
    ({"BurnedInAnnotation": "YES"}, True),
    ({"Modality": "US", "BurnedInAnnotation": None}, True),
    ({"Modality": "US", "BurnedInAnnotation": "NO"}, False),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7", "BurnedInAnnotation": None}, True),
    ({"BurnedInAnnotation": None}, False),  # CT without the attribute
])
def test_objects_that_may_show_burned_in_text_are_refused(changes: dict[str, str | None],
                                                          refused: bool) -> None:
    ds = _phi_study()[0]
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if refused:
        with pytest.raises(Refused) as caught:
            deidentify(ds, _config())
        assert caught.value.reason == "burned_in"
        assert PATIENT not in str(caught.value) and "SMITHSON" not in str(caught.value)
    else:
        assert deidentify(ds, _config()).dataset.PatientIdentityRemoved == "YES"


def test_the_residual_scan_finds_a_leak_and_says_where_not_what() -> None:
    ds = _phi_study()[0]
    out = deidentify(ds, _config()).dataset
    out.ImageComments = "patient smithson"
    item = Dataset()
    item.TextValue = f"id {PATIENT}"
    out.ContentSequence = Sequence([item])
    findings = residual_identifiers(ds, out)
    paths = {f.path for f in findings}
    assert "(0020,4000)" in paths and "(0040,A730)[0](0040,A160)" in paths
    assert all("smithson" not in f.path.lower() and PATIENT not in f.path for f in findings)




def _write(ds: Dataset, path: Path) -> Path:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())
    return path


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _add_d_sequences(ds: Dataset) -> None:
    """Sequences that are D under the basic profile (decision 0015, amended: their items
    keep their structure, with dummies in them), as a CT carries them."""
    operator = Dataset()  # General Series: the Person Identification Macro
    operator.PersonIdentificationCodeSequence = Sequence([
        _code("STAFF9921", "99LTHT", "Evelyn Radiograph")])
    operator.InstitutionCodeSequence = Sequence([
        _code("RR813", "99NHSODS", "St James's University Hospital")])
    ds.OperatorIdentificationSequence = Sequence([operator])
    step = Dataset()
    step.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Proc. Step
    step.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.1370.4.4"
    ds.ReferencedPerformedProcedureStepSequence = Sequence([step])
    ds.InstitutionCodeSequence = Sequence([_code("RR8", "99NHSODS", "Leeds Teaching Hospitals")])


@pytest.mark.parametrize("options", [(), ("retain_long_modified_dates", "clean_descriptors"),
                                     ("retain_uids", "retain_device_identity")])
def test_outputs_pass_dciodvfy_with_no_new_errors(tmp_path: Path,
                                                  options: tuple[str, ...]) -> None:
    sources = [SHARED_DATA / "dcmqi-ct-3slice" / "ct-3slice" / "01.dcm"]
    synthetic = tmp_path / "synthetic.dcm"
    ct = next(make_study(SyntheticPatient.make(5), series=[
        SeriesSpec(slices=1, rows=16, columns=16)]))
    _add_d_sequences(ct)
    synthetic.write_bytes(to_bytes(ct))
    sources.append(synthetic)
    for number, source in enumerate(sources):
        ds = pydicom.dcmread(source)
        config = _config(*options)
        out = deidentify(ds, config).dataset
        written = _write(out, tmp_path / f"out{number}.dcm")
        new = dciodvfy_errors(written) - dciodvfy_errors(source)
        assert not new, (source.name, sorted(new)[:5])
        assert residual_identifiers(ds, out, profile=config.profile) == []
        again = pydicom.dcmread(written)
        assert again.PatientIdentityRemoved == "YES"
        assert again.pixel_array.shape == ds.pixel_array.shape  # pixels untouched
        assert (again.pixel_array == ds.pixel_array).all()


_TEXT_KEYWORDS = ["StudyDescription", "SeriesDescription", "ImageComments",
                  "RequestedProcedureDescription", "AdditionalPatientHistory",
                  "PatientComments", "ProtocolName", "DerivationDescription"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.from_regex(r"[A-Z]{4,10}\^[A-Z]{4,10}", fullmatch=True),
       patient=st.from_regex(r"[0-9]{6,10}", fullmatch=True),
       places=st.lists(st.tuples(st.sampled_from(_TEXT_KEYWORDS), st.integers(0, 2)),
                       min_size=1, max_size=6),
       options=st.sets(st.sampled_from(["clean_descriptors", "retain_long_modified_dates",
                                        "retain_device_identity"])))
def test_identifiers_planted_anywhere_never_survive(name: str, patient: str,
                                                    places: list[tuple[str, int]],
                                                    options: set[str]) -> None:
    """Random names and IDs planted in random descriptors at random sequence depths."""
    ds = Dataset()
    ds.PatientName, ds.PatientID = name, patient
    ds.Modality, ds.BurnedInAnnotation = "CT", "NO"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.1370.99.1"
    for keyword, depth in places:
        target = ds
        for _ in range(depth):
            item = Dataset()
            target.AnatomicRegionSequence = Sequence([item])
            target = item
        setattr(target, keyword, f"note {name.split('^')[1].lower()} {patient} end")
    out = deidentify(ds, _config(*options)).dataset
    text = _values(out).lower()
    assert patient not in text
    family, given_name = name.lower().split("^")
    assert family not in text and given_name not in text
    assert residual_identifiers(ds, out) == []


def test_what_an_option_retains_is_kept_whole_and_not_a_finding() -> None:
    ds = _phi_study()[0]
    ds.StationName = "CTSCANNER7"
    config = _config("retain_institution_identity", "retain_device_identity")
    out = deidentify(ds, config).dataset
    assert out.InstitutionName == "Leeds Teaching Hospitals"
    assert out.StationName == "CTSCANNER7"
    assert residual_identifiers(ds, out, profile=config.profile) == []
    # without the options both go, and a leftover would be found
    plain = deidentify(ds, _config()).dataset
    assert "leeds" not in _values(plain).lower() and "ctscanner7" not in _values(plain).lower()


def test_a_name_found_deep_in_the_input_is_scrubbed_from_kept_text_anywhere() -> None:
    ds = _phi_study()[0]
    deep = Dataset()
    deep.PersonName = "QUARTERMAINE^BARNABY"  # a PN inside a nested item
    ds.AnatomicRegionSequence[0].ReferencedImageSequence[0].ContentSequence = Sequence([deep])
    ds.AnatomicRegionSequence[0].CodeMeaning = "Chest, read by Barnaby Quartermaine"
    out = deidentify(ds, _config()).dataset
    meaning = out.AnatomicRegionSequence[0].CodeMeaning
    assert meaning.startswith("Chest") and "quartermaine" not in meaning.lower()
    assert "barnaby" not in _values(out).lower()
    assert residual_identifiers(ds, out) == []


def test_the_scan_with_the_engines_collected_values_finds_the_same() -> None:
    ds = _phi_study()[0]
    result = deidentify(ds, _config())
    out = result.dataset
    out.ImageComments = "patient smithson, ward 9"
    out.PatientComments = PATIENT
    shared = residual_identifiers(ds, out, identifying=result.identifying)
    assert shared == residual_identifiers(ds, out) and len(shared) == 2
    assert result.identifying and all(len(v) >= 3 for v in result.identifying)
