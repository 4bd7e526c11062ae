"""domain/clinical.py: NHS numbers, code system names, the preferred identifier."""

from __future__ import annotations

import pytest

from imagebank.domain.clinical import (
    NHS_NUMBER_ISSUER,
    ClinicalRecord,
    PatientRef,
    code_system_name,
    is_valid_nhs_number,
    normalise_nhs_number,
)


def _check_digit(nine: str) -> int:
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    return (11 - total % 11) % 11  # 11 -> 0; 10 stays 10 (never issued)


def test_a_known_valid_nhs_number() -> None:
    # The NHS Data Dictionary's example.
    assert is_valid_nhs_number("9434765919")
    assert is_valid_nhs_number("943 476 5919")
    assert is_valid_nhs_number("943-476-5919")
    assert normalise_nhs_number(" 943 476-5919 ") == "9434765919"


@pytest.mark.parametrize(
    "text",
    ["9434765918", "943476591", "94347659190", "943476591X", "", "abcdefghij", "9434765919a"],
)
def test_invalid_nhs_numbers(text: str) -> None:
    assert not is_valid_nhs_number(text)


def test_every_check_digit_is_checked() -> None:
    seen_ten = seen_zero = False
    for n in range(999_000_000, 999_000_400):
        nine = str(n)
        check = _check_digit(nine)
        for digit in range(10):
            assert is_valid_nhs_number(nine + str(digit)) == (digit == check)
        seen_ten |= check == 10
        seen_zero |= check == 0
    assert seen_ten and seen_zero  # the loop met both special cases


def test_check_digit_ten_is_never_valid() -> None:
    nine = next(str(n) for n in range(999_000_000, 999_001_000) if _check_digit(str(n)) == 10)
    assert not any(is_valid_nhs_number(nine + str(d)) for d in range(10))
    with pytest.raises(ValueError, match="NHS number"):
        PatientRef.nhs_number(nine + "0")


def test_patient_ref_nhs_number_is_digits_with_the_nhs_issuer() -> None:
    ref = PatientRef.nhs_number("943 476 5919")
    assert ref == PatientRef(NHS_NUMBER_ISSUER, "9434765919")
    assert ref.is_nhs_number
    assert not PatientRef("http://hospital.example/mrn", "123").is_nhs_number
    with pytest.raises(ValueError) as error:
        PatientRef.nhs_number("9434765918")
    assert "9434765918" not in str(error.value)


def test_code_system_names() -> None:
    assert code_system_name("http://snomed.info/sct") == "SNOMED"
    assert code_system_name("http://snomed.info/sct/") == "SNOMED"
    assert code_system_name("http://loinc.org") == "LOINC"
    assert code_system_name("http://hl7.org/fhir/sid/icd-10") == "ICD10"
    assert code_system_name("https://dmd.nhs.uk") == "DMD"
    assert code_system_name("http://www.nlm.nih.gov/research/umls/rxnorm") == "RXNORM"
    assert code_system_name("urn:oid:1.2.3") == "urn:oid:1.2.3"
    assert code_system_name(None) == ""
    assert code_system_name("") == ""


def test_preferred_identifier() -> None:
    mrn = PatientRef("http://hospital.example/mrn", "A1")
    other = PatientRef("http://other.example", "B2")
    nhs = PatientRef.nhs_number("9434765919")
    assert ClinicalRecord("Patient/1", (mrn, other, nhs)).preferred() == nhs
    assert ClinicalRecord("Patient/1", (mrn, other)).preferred() == mrn
    assert ClinicalRecord("Patient/1", ()).preferred() is None
