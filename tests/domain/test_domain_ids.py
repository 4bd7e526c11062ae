"""Internal IDs: stable, keyed, carrying no patient data; object keys from internal IDs only."""

from __future__ import annotations

import hashlib

import pytest

from imagebank.domain.ids import (
    ID_HEX_LENGTH,
    IdDeriver,
    instance_object_key,
    is_internal_id,
    is_valid_project_id,
    parse_instance_object_key,
    quarantine_object_key,
    resource_object_key,
)

KEY_A = b"a" * 32
KEY_B = b"b" * 32
PATIENT_ID = "9434765919"  # an NHS-number-shaped identifier
ISSUER = "NHS-ENGLAND"
STUDY_UID = "1.2.826.0.1.3680043.10.1370.9.111"
SERIES_UID = "1.2.826.0.1.3680043.10.1370.9.222"
SOP_UID = "1.2.826.0.1.3680043.10.1370.9.333"


def _all_ids(ids: IdDeriver, project: str = "proj") -> list[str]:
    return [
        ids.subject_id(project, PATIENT_ID, ISSUER),
        ids.study_id(project, STUDY_UID),
        ids.series_id(project, SERIES_UID),
        ids.instance_id(project, SOP_UID),
    ]


def test_ids_are_stable_across_derivers_with_the_same_key() -> None:
    assert _all_ids(IdDeriver(KEY_A)) == _all_ids(IdDeriver(bytes(KEY_A)))


def test_ids_are_internal_ids_and_distinct_per_level() -> None:
    values = _all_ids(IdDeriver(KEY_A))
    assert all(is_internal_id(v) for v in values)
    assert all(len(v) == ID_HEX_LENGTH for v in values)
    assert len(set(values)) == len(values)


def test_different_keys_give_different_ids() -> None:
    a, b = _all_ids(IdDeriver(KEY_A)), _all_ids(IdDeriver(KEY_B))
    for x, y in zip(a, b, strict=True):
        assert x != y


def test_ids_are_keyed_not_a_plain_hash_of_the_identifier() -> None:
    """Someone without the key cannot recompute an ID by hashing candidate identifiers."""
    ids = IdDeriver(KEY_A)
    subject = ids.subject_id("proj", PATIENT_ID, ISSUER)
    for candidate in (PATIENT_ID, f"subject\x1fproj\x1f{ISSUER}\x1f{PATIENT_ID}",
                      f"{ISSUER}{PATIENT_ID}"):
        for algo in (hashlib.sha256, hashlib.md5, hashlib.sha1):
            assert algo(candidate.encode()).hexdigest()[:ID_HEX_LENGTH] != subject


def test_subject_id_depends_on_the_issuer_and_the_project() -> None:
    ids = IdDeriver(KEY_A)
    base = ids.subject_id("proj", PATIENT_ID, ISSUER)
    assert ids.subject_id("proj", PATIENT_ID, "OTHER-TRUST") != base
    assert ids.subject_id("proj", PATIENT_ID, "") != base
    assert ids.subject_id("other", PATIENT_ID, ISSUER) != base
    assert ids.subject_id("proj", PATIENT_ID + "0", ISSUER) != base
    assert ids.subject_id("proj", PATIENT_ID, ISSUER) == base


def test_ids_depend_on_the_project() -> None:
    ids = IdDeriver(KEY_A)
    assert ids.study_id("p1", STUDY_UID) != ids.study_id("p2", STUDY_UID)
    assert ids.instance_id("p1", SOP_UID) != ids.instance_id("p2", SOP_UID)


def test_ids_contain_no_patient_data() -> None:
    ids = _all_ids(IdDeriver(KEY_A))
    for value in ids:
        for secret in (PATIENT_ID, ISSUER, STUDY_UID, SERIES_UID, SOP_UID, "9434", "1.2.826"):
            assert secret not in value
        assert set(value) <= set("0123456789abcdef")


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        IdDeriver(b"short")
    IdDeriver(b"x" * 16)  # the minimum is accepted


@pytest.mark.parametrize("value,ok", [
    ("p", True), ("proj-1_a", True), ("0abc", True), ("a" * 63, True),
    ("", False), ("a" * 64, False), ("Proj", False), ("-p", False), ("_p", False),
    ("p q", False), ("p/q", False), ("../p", False), ("p.q", False),
])
def test_project_id_rules(value: str, ok: bool) -> None:
    assert is_valid_project_id(value) is ok


def test_instance_object_key_round_trip_and_content() -> None:
    ids = IdDeriver(KEY_A)
    instance = ids.instance_id("proj", SOP_UID)
    sha = hashlib.sha256(b"some bytes").hexdigest()
    key = instance_object_key("proj", instance, sha)
    assert parse_instance_object_key(key) == ("proj", instance, sha[:16])
    assert key.startswith(f"proj/dicom/{instance[:2]}/{instance[2:4]}/")
    assert key.endswith(".dcm")
    for secret in (PATIENT_ID, ISSUER, STUDY_UID, SOP_UID):
        assert secret not in key
    # Only the project, internal IDs, the checksum and fixed words.
    assert set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789/-_.")


def test_same_instance_other_bytes_gets_another_key() -> None:
    instance = IdDeriver(KEY_A).instance_id("proj", SOP_UID)
    a = instance_object_key("proj", instance, hashlib.sha256(b"a").hexdigest())
    b = instance_object_key("proj", instance, hashlib.sha256(b"b").hexdigest())
    assert a != b


@pytest.mark.parametrize("key", [
    "",
    "proj/dicom/ab/cd/not-an-id.dcm",
    "proj/quarantine/ab/" + "a" * 32 + ".bin",
    "proj/resources/ab/" + "a" * 32,
    "Proj/dicom/aa/aa/" + "a" * 32 + "-" + "b" * 16 + ".dcm",
    "proj/dicom/aa/aa/" + "a" * 32 + "-" + "b" * 15 + ".dcm",
    "proj/dicom/aa/aa/" + "a" * 32 + "-" + "b" * 16 + ".dcm.tmp",
])
def test_parse_instance_object_key_refuses_other_keys(key: str) -> None:
    assert parse_instance_object_key(key) is None


def test_quarantine_and_resource_keys_are_not_instance_keys() -> None:
    qid = "f" * 32
    assert quarantine_object_key("proj", qid) == f"proj/quarantine/ff/{qid}.bin"
    assert resource_object_key("proj", qid) == f"proj/resources/ff/{qid}"
    assert parse_instance_object_key(quarantine_object_key("proj", qid)) is None
    assert parse_instance_object_key(resource_object_key("proj", qid)) is None
