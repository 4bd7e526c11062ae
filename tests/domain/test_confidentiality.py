"""The PS3.15 Annex E action table (generated from the standard) and the profile's actions."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools

import pytest

from imagebank.domain import confidentiality_table
from imagebank.domain.confidentiality import Action, Option, Profile, rule_for
from testkit import REPO, SHARED_DATA

SOURCE = SHARED_DATA / "dicom-standard" / "confidentiality_profile_attributes.json"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "generate_confidentiality_table", REPO / "scripts" / "generate_confidentiality_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_is_generated_from_the_standard_and_up_to_date() -> None:
    generator = _generator()
    text = (REPO / "src" / "imagebank" / "domain" / "confidentiality_table.py").read_text()
    assert generator.generate(SOURCE) == text, "run scripts/generate_confidentiality_table.py"
    assert confidentiality_table.SOURCE_SHA256 == hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    assert confidentiality_table.EDITION == "2024b"
    assert len(confidentiality_table.ROWS) == 621  # SOURCE.md: 621 rows


# What PS3.15 Table E.1-1 (2024b) says of these attributes, and of them with one option.
@pytest.mark.parametrize(("tag", "basic", "option", "with_option"), [
    (0x00100010, Action.EMPTY, None, None),  # Patient's Name: Z
    (0x00100020, Action.DUMMY, None, None),  # Patient ID: Z/D (a pseudonym, in the engine)
    (0x00100030, Action.EMPTY, None, None),  # Patient's Birth Date: Z
    (0x00080050, Action.EMPTY, None, None),  # Accession Number: Z
    (0x00080090, Action.EMPTY, None, None),  # Referring Physician's Name: Z
    (0x0020000D, Action.REPLACE_UID, Option.RETAIN_UIDS, Action.KEEP),  # Study Instance UID
    (0x00080018, Action.REPLACE_UID, Option.RETAIN_UIDS, Action.KEEP),  # SOP Instance UID
    (0x00080020, Action.EMPTY, Option.RETAIN_LONG_FULL_DATES, Action.KEEP),  # Study Date
    (0x00080020, Action.EMPTY, Option.RETAIN_LONG_MODIFIED_DATES, Action.CLEAN),
    (0x00101010, Action.REMOVE, Option.RETAIN_PATIENT_CHARACTERISTICS, Action.KEEP),  # Age
    (0x00081030, Action.REMOVE, Option.CLEAN_DESCRIPTORS, Action.CLEAN),  # Study Description
    # composite actions resolve to what keeps any IOD conformant
    (0x00080080, Action.DUMMY, Option.RETAIN_INSTITUTION_IDENTITY, Action.KEEP),  # X/Z/D
    (0x00181000, Action.DUMMY, Option.RETAIN_DEVICE_IDENTITY, Action.KEEP),  # X/Z/D
    (0x00081140, Action.REPLACE_UID, Option.RETAIN_UIDS, Action.KEEP),  # X/Z/U* sequence
    # repeating groups and private attributes
    (0x60023000, Action.REMOVE, Option.CLEAN_GRAPHICS, Action.CLEAN),  # Overlay Data
    (0x50040010, Action.REMOVE, Option.CLEAN_GRAPHICS, Action.CLEAN),  # Curve Data
    (0x00091001, Action.REMOVE, Option.RETAIN_SAFE_PRIVATE, Action.CLEAN),  # private
    (0x60011000, Action.REMOVE, Option.RETAIN_SAFE_PRIVATE, Action.CLEAN),  # odd: private
])
def test_actions_of_the_standard(tag: int, basic: Action, option: Option | None,
                                 with_option: Action | None) -> None:
    assert Profile().action(tag) is basic
    if option is not None:
        assert Profile(frozenset({option})).action(tag) is with_option
        # an option that does not concern the attribute changes nothing
        other = next(o for o in Option if o is not option
                     and o not in (Option.RETAIN_LONG_FULL_DATES,
                                   Option.RETAIN_LONG_MODIFIED_DATES)
                     and all(o is not p for p, _ in rule_for(tag).options))  # type: ignore[union-attr]
        assert Profile(frozenset({other})).action(tag) is basic


@pytest.mark.parametrize("tag", [0x00280010, 0x00280011, 0x7FE00010, 0x00080060, 0x00200013])
def test_attributes_the_profile_does_not_list_are_kept(tag: int) -> None:
    """Rows, Columns, Pixel Data, Modality, Instance Number: not in Table E.1-1."""
    assert rule_for(tag) is None
    assert Profile.of(["clean_descriptors"]).action(tag) is Action.KEEP


def test_every_row_resolves_under_every_single_option() -> None:
    allowed = set(Action)
    for (pattern, *_), option in itertools.product(confidentiality_table.ROWS,
                                                   [None, *Option]):
        if pattern == "private" or "x" in pattern:
            continue
        profile = Profile(frozenset({option}) if option else frozenset())
        assert profile.action(int(pattern, 16)) in allowed


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        Profile.of(["retain_long_full_dates", "retain_long_modified_dates"])
    with pytest.raises(ValueError, match="unknown option") as caught:
        Profile.of(["retain_everything"])
    assert "retain_uids" in str(caught.value)


def test_method_codes_are_cid_7050() -> None:
    codes = Profile.of(["retain_uids", "clean_descriptors"]).method_codes()
    assert codes[0] == ("113100", "Basic Application Confidentiality Profile")
    assert ("113110", "Retain UIDs Option") in codes
    assert ("113105", "Clean Descriptors Option") in codes
    assert len(codes) == 3
