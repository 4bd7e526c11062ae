"""PS3.15 Table E.1-1, row by row: for every row of the generated table and for the basic
profile, each single option and the two "every option" profiles, a dataset carrying the
attribute (a plausible value of its VR) at the top level, inside a sequence the profile keeps
(Anatomic Region Sequence, not in the table) and inside one it de-identifies item by item
(Referenced Image Sequence, X/Z/U*) goes through the engine, and every copy of the attribute
must come out as the profile's action says.

The expectations of the generated tests come from ``Profile.action``; the hand-written
checks at the end say what the standard says of well-known rows, so that a bug in the action
API itself fails too.

What each action means here (decisions 0014, 0015):

* X: absent. Z: present and empty (an empty sequence).
* D: present, a valid value of its VR that is neither the input nor identifying; a UID is
  remapped; a sequence keeps its items and their structure (every attribute but the X ones,
  every nested item), but no value of the input anywhere in them: only dummies, remapped
  UIDs, and the structure kept on purpose (a Code String and a frame reference the table does
  not list, a registered coding scheme; decision 0015, amended).
* K: kept as it is (K only ever comes from an option, which retains the value whole); a
  sequence keeps its items, each de-identified (UIDs kept under Retain UIDs).
* U: the keyed UID of the input (deterministic, one-to-one); a sequence as for D.
* C: dates shifted by the patient's offset (Modified Dates), times kept, text scrubbed of
  the input's identifying values and nothing else, numbers kept, binary values removed (the
  engine cannot clean a bitmap), a sequence's items de-identified.
* PatientName and PatientID (Z and Z/D) carry the keyed pseudonyms (issue 5).
* The repeating overlay and curve groups (60xx, 50xx) go whole under every profile: their
  data is binary, and an overlay without its data would not conform.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pydicom.valuerep import validate_value

from imagebank.dicom.deid import DeidConfig, DeidResult, deidentify, residual_identifiers
from imagebank.domain.confidentiality import Action, Option, Profile, rule_for
from imagebank.domain.confidentiality_table import ROWS, Row
from imagebank.domain.pseudonyms import Pseudonymiser, shift_date, shift_datetime

KEY = bytes(range(32))
PSEUDONYMS = Pseudonymiser(KEY)
NAME, PATIENT = "SMITHSON^ALEXANDRA", "9434765919"
IDENTIFYING = ("smithson", "alexandra", PATIENT)
PATIENT_NAME, PATIENT_ID, MEDIA_SOP_INSTANCE = 0x00100010, 0x00100020, 0x00020003
SOP_INSTANCE_UID = 0x00080018

CREATOR = "IMAGEBANK ROWTEST"
PRIVATE_CREATOR_TAG, PRIVATE_TAG = 0x00090010, 0x00091001
SAFE_PRIVATE = frozenset({(CREATOR, 0x01)})
#: The concrete tag standing for each repeating-group row (an even group past the first,
#: so that the pattern, not one group, is what matches).
REPEATING = {"50xxxxxx": 0x50023000, "60xx3000": 0x60023000, "60xx4000": 0x60024000}

#: The containers the attribute is nested in: one the profile does not list (kept, its
#: items de-identified) and one under X/Z/U* (kept, its UIDs remapped, its items
#: de-identified); Source Image Sequence stands in when the row is the latter itself.
OUTER = 0x00082218  # Anatomic Region Sequence
INNER, INNER_ALTERNATE = 0x00081140, 0x00082112  # Referenced Image / Source Image Sequence

#: The basic profile, each option alone, and every option at once (with each date form).
PROFILES: list[tuple[Option, ...]] = [
    (),
    *((option,) for option in Option),
    tuple(o for o in Option if o is not Option.RETAIN_LONG_FULL_DATES),
    tuple(o for o in Option if o is not Option.RETAIN_LONG_MODIFIED_DATES),
]

TEXT = "note SMITHSON 9434765919"
#: A plausible value of each VR (text ones quoting the patient), and what C leaves of it.
VALUES: dict[str, Any] = {
    "AE": "AE SMITHSON", "AS": "045Y", "AT": 0x00100020, "CS": "X SMITHSON",
    "DA": "20240301", "DS": "12.5", "DT": "20240301101500", "FD": 1.5, "FL": 1.5, "IS": "42",
    "LO": TEXT, "LT": TEXT, "PN": "OPERATOR^EVELYN", "SH": "ID 9434765919", "SL": 7, "SS": 7,
    "ST": TEXT, "SV": 7, "TM": "101500", "UC": TEXT, "UL": 7, "UR": "http://h/SMITHSON",
    "US": 7, "UT": TEXT, "UV": 7,
}
CLEANED = {"AE": "AE", "CS": "X", "LO": "note", "LT": "note", "SH": "ID", "ST": "note",
           "UC": "note", "UR": "http://h/", "UT": "note"}
BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
UID_ROOT = "1.2.826.0.1.3680043.10.1370.6."


@dataclass(frozen=True)
class Case:
    """One row of the table, as a concrete tag and VR."""

    pattern: str
    tag: int
    vr: str

    @property
    def private(self) -> bool:
        return self.pattern == "private"


def _case(row: Row) -> Case:
    pattern = row[0]
    if pattern == "private":
        return Case(pattern, PRIVATE_TAG, "LO")
    tag = REPEATING[pattern] if "x" in pattern else int(pattern, 16)
    assert rule_for(tag) is not None and rule_for(tag).pattern == pattern  # type: ignore[union-attr]
    return Case(pattern, tag, dictionary_VR(tag).split(" or ")[0])


def _row_id(row: Row) -> str:
    pattern = row[0]
    if pattern == "private" or "x" in pattern:
        return f"{pattern}-{row[1].replace(' ', '')}"
    return f"{pattern}-{keyword_for_tag(int(pattern, 16)) or row[1].replace(' ', '')}"


def _uid(serial: int) -> str:
    return f"{UID_ROOT}{serial}"


def _value(case: Case, serial: int) -> Any:
    """The input value of the attribute at one place (``serial`` tells places apart; the
    top level and the deepest place share a UID, as a reference and its target do)."""
    if case.tag == PATIENT_NAME:
        return NAME
    if case.tag == PATIENT_ID:
        return PATIENT
    if case.vr == "UI":
        return _uid(serial % 2)
    if case.vr == "SQ":
        item = Dataset()  # identifying values the item's own rules must take out
        item.OtherPatientIDs = PATIENT  # X
        item.CodeMeaning = f"Chest of {PATIENT}"  # not listed: kept, scrubbed
        item.ReferencedSOPInstanceUID = _uid(100 + serial)  # U
        # Values a sequence under D must not keep (the others' rules keep them, cleaned).
        item.CodeValue, item.CodingSchemeDesignator = "RR8", "99LEEDS"  # a site's code
        item.VerifyingObserverName = "HARTWELL^GEORGINA"  # D
        item.TextValue, item.NumericValue = "seen by Dr Hartwell", "12.5"  # not listed
        item.FloatingPointValue, item.ContextGroupVersion = 1.5, "20240301101500"
        item.ValueType, item.ReferencedFrameNumber = "TEXT", "3"  # structure
        concept = Dataset()  # a nested item, of a sequence the table does not list
        concept.CodeValue, concept.CodingSchemeDesignator = "T-D3000", "SRT"
        concept.CodeMeaning = "Chest"
        item.ConceptNameCodeSequence = Sequence([concept])
        return Sequence([item])
    if case.vr in BINARY:
        return b"SMITHSON"
    return VALUES[case.vr]


def _put(ds: Dataset, case: Case, serial: int) -> None:
    if case.private:
        ds.add_new(PRIVATE_CREATOR_TAG, "LO", CREATOR)
    ds.add_new(case.tag, case.vr, _value(case, serial))


def _dataset(case: Case) -> tuple[Dataset, list[tuple[tuple[int, ...], Any]]]:
    """The input, and each place of the attribute in it (container path, input value)."""
    ds = Dataset()
    ds.PatientName, ds.PatientID = NAME, PATIENT
    ds.Modality, ds.BurnedInAnnotation = "CT", "NO"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    places: list[tuple[tuple[int, ...], Any]] = []
    if case.tag >> 16 == 0x0002:  # file meta: rebuilt, its SOP instance from the dataset's
        ds.file_meta = FileMetaDataset()
        ds.file_meta.add_new(case.tag, case.vr, _value(case, 1))
        ds.SOPInstanceUID = _value(case, 1)
        return ds, [((), _value(case, 1))]
    inner = INNER_ALTERNATE if case.tag == INNER else INNER
    outer_item, inner_item = Dataset(), Dataset()
    outer_item.CodeValue, outer_item.CodingSchemeDesignator = "T-D3000", "SRT"
    outer_item.CodeMeaning = "Chest"
    outer_item.add_new(inner, "SQ", Sequence([inner_item]))
    ds.add_new(OUTER, "SQ", Sequence([outer_item]))
    for serial, (target, path) in enumerate(
            [(ds, ()), (outer_item, (OUTER,)), (inner_item, (OUTER, inner))], start=1):
        _put(target, case, serial)
        places.append((path, target[case.tag].value))
    return ds, places


def _config(options: tuple[Option, ...]) -> DeidConfig:
    return DeidConfig(Profile(frozenset(options)), PSEUDONYMS, SAFE_PRIVATE)


def _at(ds: Dataset, path: tuple[int, ...]) -> Dataset | None:
    for container in path:
        element = ds.get(container)
        if element is None or not element.value:
            return None
        ds = element.value[0]
    return ds


def _identifying(value: Any) -> bool:
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return any(word in text.lower() for word in IDENTIFYING)


def _empty(element: DataElement) -> bool:
    return element.value in (None, "", b"") or (element.VR == "SQ" and len(element.value) == 0)


def _items(before: Sequence, after: DataElement, uids_kept: bool) -> Iterator[str]:
    """What is wrong with a kept sequence: its items are not de-identified by their rules."""
    if after.VR != "SQ" or len(after.value) != len(before):
        yield f"a sequence of {len(before)} item(s) expected, got {after.VR} {after.value!r}"
        return
    for old, new in zip(before, after.value, strict=True):
        if "OtherPatientIDs" in new:
            yield "Other Patient IDs (X) left in an item"
        if new.get("CodeMeaning") != "Chest of":
            yield f"an item's Code Meaning not scrubbed: {new.get('CodeMeaning')!r}"
        uid = old.ReferencedSOPInstanceUID
        wanted = uid if uids_kept else PSEUDONYMS.uid(uid)
        if new.get("ReferencedSOPInstanceUID") != wanted:
            yield "an item's Referenced SOP Instance UID not handled by its rule"


#: What a sequence under D keeps of the input, as structure (decision 0015, amended), and
#: the dummies it may hold instead of every other value.
STRUCTURE = frozenset({"ValueType", "ReferencedFrameNumber"})
REGISTERED_SCHEME = "SRT"
DUMMIES = frozenset({"ANONYMOUS", "99ANONYMOUS", "19000101", "000000", "19000101000000",
                     "000Y", "0"})


def _dummied(before: Sequence, after: DataElement, uids_kept: bool) -> Iterator[str]:
    """What is wrong with a sequence under D: its items must keep their structure (every
    attribute but the X ones, every nested item) and hold no value of the input, at any
    depth, but UIDs (remapped, or kept under Retain UIDs) and the structure kept on
    purpose."""
    if after.VR != "SQ" or len(after.value) != len(before):
        yield f"a sequence of {len(before)} item(s) expected, got {after.VR} {after.value!r}"
        return
    for old, new in zip(before, after.value, strict=True):
        for element in old:
            name, got = element.keyword, new.get(element.tag)
            if name == "OtherPatientIDs":  # X, wherever it is
                if got is not None:
                    yield "Other Patient IDs (X) left in an item"
                continue
            if got is None:
                yield f"{name} gone from an item (D keeps the structure)"
            elif element.VR == "SQ":
                yield from _dummied(element.value, got, uids_kept)
            elif element.VR == "UI":
                wanted = element.value if uids_kept else PSEUDONYMS.uid(element.value)
                if got.value != wanted:
                    yield f"{name}: not the keyed UID of the input: {got.value!r}"
            elif name in STRUCTURE or (name == "CodingSchemeDesignator"
                                       and element.value == REGISTERED_SCHEME):
                if got.value != element.value:
                    yield f"{name}: structure not kept: {element.value!r} -> {got.value!r}"
            elif str(got.value) not in DUMMIES or got.value == element.value:
                yield f"D: {name} {element.value!r} became {got.value!r}, not a dummy"
        for element in new:
            if element.tag not in old:
                yield f"D: {element.keyword} added to an item"


def _problems(case: Case, action: Action, options: tuple[Option, ...], before: Any,
              after: DataElement | None, result: DeidResult) -> Iterator[str]:
    """What is wrong with the output ``after`` of the input ``before`` under ``action``."""
    vr, uids_kept = case.vr, Option.RETAIN_UIDS in options
    if case.tag == PATIENT_NAME or case.tag == PATIENT_ID:  # keyed pseudonyms (issue 5)
        wanted = (PSEUDONYMS.patient_name(PATIENT) if case.tag == PATIENT_NAME
                  else PSEUDONYMS.patient_id(PATIENT))
        if after is None or after.value != wanted:
            yield f"the keyed pseudonym expected, got {after!r}"
        return
    if case.pattern in REPEATING:  # overlays and curves go whole (see the docstring)
        if after is not None:
            yield f"{action.name}: the repeating group kept: {after!r}"
        return
    if case.private and action is Action.CLEAN:  # allow-listed: kept (decision 0014)
        if after is None or after.value != before:
            yield f"C: an allow-listed private element not kept: {after!r}"
        return
    if action is Action.REMOVE or (action is Action.CLEAN and vr in BINARY):
        if after is not None:  # C: the engine cannot clean a binary value, it removes it
            yield f"{action.value}: still present: {after!r}"
        return
    if after is None:
        yield f"{action.name}: removed"
        return
    value = after.value
    if action is Action.EMPTY:
        if not _empty(after):
            yield f"Z: not empty: {value!r}"
    elif vr == "SQ" and action is Action.DUMMY:  # kept, with only dummies in its items
        yield from _dummied(before, after, uids_kept)
    elif vr == "SQ":  # K, U and C keep a sequence, each item de-identified
        yield from _items(before, after, uids_kept)
    elif action is Action.KEEP:
        if value != before:
            yield f"K: changed from {before!r} to {value!r}"
    elif action is Action.REPLACE_UID or (action is Action.DUMMY and vr == "UI"):
        if value != PSEUDONYMS.uid(before) or value == before or not UID(value).is_valid:
            yield f"{action.value}: not the keyed UID of the input: {value!r}"
    elif action is Action.DUMMY:
        try:
            validate_value(vr, value, pydicom_config.RAISE)
        except (ValueError, TypeError) as error:
            yield f"D: not a valid {vr}: {value!r} ({error})"
        if _empty(after) or value == before or _identifying(value):
            yield f"D: not a non-identifying dummy: {value!r}"
    elif action is Action.CLEAN:
        yield from _cleaned(vr, options, before, value, result)
    else:  # pragma: no cover
        yield f"unexpected action {action}"


def _cleaned(vr: str, options: tuple[Option, ...], before: Any, value: Any,
             result: DeidResult) -> Iterator[str]:
    if vr in ("DA", "DT"):
        if Option.RETAIN_LONG_MODIFIED_DATES not in options:
            yield "C on a date without Modified Dates"
            return
        shift = shift_date if vr == "DA" else shift_datetime
        days = PSEUDONYMS.date_shift_days(PATIENT)  # the patient's keyed offset
        if value != shift(before, days) or value == before or days != result.date_shift_days:
            yield f"C: date not shifted by the patient's offset: {before!r} -> {value!r}"
    elif vr in CLEANED:
        if value != CLEANED[vr]:
            yield f"C: {before!r} cleaned to {value!r}, wanted {CLEANED[vr]!r}"
    elif value != before:  # times, numbers: no identity in them
        yield f"C: changed from {before!r} to {value!r}"


def _check(case: Case, profiles: list[tuple[Option, ...]],
           action: Action | None = None) -> list[str]:
    """Every problem of the engine's output for ``case`` under each of ``profiles``;
    ``action`` defaults to the profile's."""
    source, places = _dataset(case)  # deidentify leaves it as it is
    return [problem for options in profiles
            for problem in _check_one(case, options, action, source, places)]


def _check_one(case: Case, options: tuple[Option, ...], action: Action | None,
               source: Dataset, places: list[tuple[tuple[int, ...], Any]]) -> list[str]:
    wanted = action if action is not None else Profile(frozenset(options)).action(case.tag)
    result = deidentify(source, _config(options))
    out = result.dataset
    label = "+".join(o.value for o in options) or "basic"
    problems: list[str] = []
    for path, before in places:
        where = "/".join(f"{t:08X}" for t in (*path, case.tag))
        if case.tag >> 16 == 0x0002:
            after = out.file_meta.get(case.tag)
        else:
            item = _at(out, path)
            if item is None:
                problems.append(f"{label} {where}: the container is gone")
                continue
            after = item.get(case.tag)
            if case.private:
                creator = item.get(PRIVATE_CREATOR_TAG)
                if (creator is None) != (after is None):
                    problems.append(f"{label} {where}: private creator without its element "
                                    "or the reverse")
        problems += [f"{label} {where}: {p}"
                     for p in _problems(case, wanted, options, before, after, result)]
    return problems


@pytest.mark.parametrize("row", [pytest.param(r, id=_row_id(r)) for r in ROWS])
def test_each_row_under_each_option(row: Row) -> None:
    case = _case(row)
    problems = _check(case, PROFILES)
    assert not problems, "\n".join(problems)


# -- what the standard says of well-known rows, by hand ----------------------------------------
X, Z, D, K, U, C = (Action.REMOVE, Action.EMPTY, Action.DUMMY, Action.KEEP,
                    Action.REPLACE_UID, Action.CLEAN)
FULL, MODIFIED = Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES
DESCRIPTORS, UIDS = Option.CLEAN_DESCRIPTORS, Option.RETAIN_UIDS
DEVICE, INSTITUTION = Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_INSTITUTION_IDENTITY
CHARACTERISTICS, GRAPHICS = Option.RETAIN_PATIENT_CHARACTERISTICS, Option.CLEAN_GRAPHICS
STRUCTURED, SAFE = Option.CLEAN_STRUCTURED_CONTENT, Option.RETAIN_SAFE_PRIVATE

#: (pattern, option or None, the action of PS3.15 2024b Table E.1-1 read by hand)
STANDARD: list[tuple[str, Option | None, Action]] = [
    ("00100010", None, Z), ("00100010", CHARACTERISTICS, Z),  # Patient's Name
    ("00100020", None, D), ("00100020", UIDS, D),  # Patient ID: Z/D
    ("00100021", None, X),  # Issuer of Patient ID
    ("00100030", None, Z), ("00100030", FULL, Z), ("00100030", MODIFIED, Z),  # Birth Date
    ("00101000", None, X), ("00101040", None, X), ("00102154", None, X),  # Other IDs, address
    ("00080050", None, Z), ("00200010", None, Z), ("00080090", None, Z),  # Accession, Study ID
    ("00080020", None, Z), ("00080020", FULL, K), ("00080020", MODIFIED, C),  # Study Date
    ("00080020", DESCRIPTORS, Z),
    ("00080030", None, Z), ("00080030", FULL, K), ("00080030", MODIFIED, C),  # Study Time
    ("00080021", None, D), ("00080021", MODIFIED, C),  # Series Date: X/D
    ("00080022", None, Z), ("00080022", FULL, K),  # Acquisition Date: X/Z
    ("00080023", None, D), ("00080023", MODIFIED, C),  # Content Date: Z/D
    ("0008002a", None, D), ("0008002a", MODIFIED, C),  # Acquisition DateTime: X/Z/D
    ("00181200", None, X), ("00181200", DEVICE, K), ("00181200", MODIFIED, C),  # Calibration
    ("00080080", None, D), ("00080080", INSTITUTION, K), ("00080080", DEVICE, D),  # Institution
    ("00080081", None, X), ("00080081", INSTITUTION, K),  # Institution Address
    ("00081040", None, X), ("00081040", INSTITUTION, K),  # Institutional Department Name
    ("00181000", None, D), ("00181000", DEVICE, K), ("00181000", INSTITUTION, D),  # Serial
    ("00081010", None, D), ("00081010", DEVICE, K),  # Station Name: X/Z/D
    ("00080055", None, X), ("00080055", DEVICE, C),  # Station AE Title
    ("00181002", None, U), ("00181002", DEVICE, K), ("00181002", UIDS, K),  # Device UID
    ("00101010", None, X), ("00101010", CHARACTERISTICS, K),  # Patient's Age
    ("00100040", None, Z), ("00100040", CHARACTERISTICS, K),  # Patient's Sex
    ("00101020", None, X), ("00101020", CHARACTERISTICS, K),  # Patient's Size
    ("00101030", None, X), ("00101030", CHARACTERISTICS, K),  # Patient's Weight
    ("00080018", None, U), ("00080018", UIDS, K), ("00080018", DEVICE, U),  # SOP Instance UID
    ("0020000d", None, U), ("0020000d", UIDS, K), ("0020000e", None, U),  # Study, Series UID
    ("00200052", None, U), ("00020003", None, U), ("00020003", UIDS, K),  # Frame of Ref, meta
    ("00081140", None, U), ("00081140", UIDS, K),  # Referenced Image Sequence: X/Z/U*
    ("00081155", None, U), ("00081155", UIDS, K),  # Referenced SOP Instance UID
    ("00081030", None, X), ("00081030", DESCRIPTORS, C),  # Study Description
    ("0008103e", None, X), ("0008103e", DESCRIPTORS, C),  # Series Description
    ("00204000", None, X), ("00204000", DESCRIPTORS, C),  # Image Comments
    ("00181030", None, D), ("00181030", DESCRIPTORS, C),  # Protocol Name: X/D
    ("00400275", None, X), ("00400275", DESCRIPTORS, C),  # Request Attributes Sequence
    ("00081070", None, D), ("00081050", None, X), ("00081048", None, X),  # Operators etc.
    ("0040a730", None, D), ("0040a730", STRUCTURED, C),  # Content Sequence
    ("00700001", None, D), ("00700001", GRAPHICS, C),  # Graphic Annotation Sequence
    ("00080082", None, D), ("00080082", INSTITUTION, K),  # Institution Code Sequence
    ("00401101", None, D), ("00401101", INSTITUTION, D),  # Person Identification Code Seq.
    ("00081072", None, D), ("0040a073", None, D),  # Operator Ident., Verifying Observer Seq.
    ("00081111", None, D), ("00081111", UIDS, K),  # Referenced Performed Proc. Step Seq.
    ("60xx3000", None, X), ("60xx3000", GRAPHICS, C),  # Overlay Data
    ("60xx4000", None, X), ("60xx4000", GRAPHICS, C),  # Overlay Comments
    ("50xxxxxx", None, X), ("50xxxxxx", GRAPHICS, C),  # Curve Data
    ("private", None, X), ("private", SAFE, C), ("private", DESCRIPTORS, X),  # private
    ("fffafffa", None, X),  # Digital Signatures Sequence
]
_BY_PATTERN = {row[0]: row for row in ROWS}


@pytest.mark.parametrize(("pattern", "option", "action"), [
    pytest.param(p, o, a, id=f"{p}-{o.value if o else 'basic'}-{a.value}")
    for p, o, a in STANDARD])
def test_well_known_rows_as_the_standard_reads(pattern: str, option: Option | None,
                                               action: Action) -> None:
    case = _case(_BY_PATTERN[pattern])
    options = (option,) if option is not None else ()
    assert Profile(frozenset(options)).action(case.tag) is action
    problems = _check(case, [options], action)
    assert not problems, "\n".join(problems)


def test_composite_actions_resolve_to_what_keeps_any_iod_conformant() -> None:
    """PS3.15 E.1.1: X/Z, X/D, Z/D, X/Z/D and X/Z/U* depend on the attribute's Type in the
    IOD; without it (decision 0014) they resolve to Z, D, D, D and U for every such row."""
    wanted = {"X/Z": Z, "X/D": D, "Z/D": D, "X/Z/D": D, "X/Z/U*": U}
    composite = [row for row in ROWS if "/" in row[3]]
    assert len(composite) > 40
    for pattern, _name, _iod, basic, _options in composite:
        assert Profile().action(_case(_BY_PATTERN[pattern]).tag) is wanted[basic], pattern


def test_overlay_and_curve_groups_go_whole_under_every_profile() -> None:
    """Overlay Data and Curve Data are X, or C under Clean Graphics, which the engine cannot
    do to a bitmap: the whole repeating group goes (an overlay plane without its data would
    not conform), with the attributes the table does not list (Overlay Rows...)."""
    ds = Dataset()
    ds.PatientID, ds.Modality, ds.BurnedInAnnotation = PATIENT, "CT", "NO"
    for group in (0x6000, 0x6002):
        base = group << 16
        ds.add_new(base | 0x0010, "US", 4)  # Overlay Rows
        ds.add_new(base | 0x0011, "US", 4)  # Overlay Columns
        ds.add_new(base | 0x0022, "LO", TEXT)  # Overlay Description
        ds.add_new(base | 0x0040, "CS", "G")  # Overlay Type
        ds.add_new(base | 0x0050, "SS", [1, 1])  # Overlay Origin
        ds.add_new(base | 0x0100, "US", 1)  # Overlay Bits Allocated
        ds.add_new(base | 0x0102, "US", 0)  # Overlay Bit Position
        ds.add_new(base | 0x3000, "OW", b"SMITHSON")  # Overlay Data
        ds.add_new(base | 0x4000, "LT", TEXT)  # Overlay Comments
    ds.add_new(0x50000005, "US", 1)  # Curve Dimensions
    ds.add_new(0x50003000, "OW", b"SMITHSON")  # Curve Data
    ds.add_new(0x52009229, "SQ", Sequence())  # Shared Functional Groups: not a curve group
    for options in PROFILES:
        # The engine removes these groups on purpose, because the table says so (X, or C
        # that cannot be done to a bitmap) under every option: if an edition ever says K,
        # this fails and the engine must be revisited.
        for tag in REPEATING.values():
            assert Profile(frozenset(options)).action(tag) in (X, C), (options, hex(tag))
        result = deidentify(ds, _config(options))
        out = result.dataset
        left = [f"{int(e.tag):08X}" for e in out if (int(e.tag) >> 16) & 0xFF00 in (0x5000,
                                                                                  0x6000)]
        assert not left, (options, left)
        assert result.actions["graphics_removed"] == 2 * 9 + 2  # on purpose, not as unknown
        assert "unknown_removed" not in result.actions
        assert 0x52009229 in out


# -- UIDs: deterministic for the key, one-to-one, references resolve ---------------------------
def test_remapped_uids_are_keyed_deterministic_and_one_to_one() -> None:
    case = _case(_BY_PATTERN["00080018"])
    source, _ = _dataset(case)
    source.StudyInstanceUID = _uid(7)
    first = deidentify(source, _config(())).dataset
    again = deidentify(source, _config(())).dataset
    other = deidentify(source, DeidConfig(Profile(), Pseudonymiser(bytes(range(1, 33))))).dataset
    assert first.SOPInstanceUID == again.SOPInstanceUID  # deterministic for the key
    assert first.SOPInstanceUID != other.SOPInstanceUID  # another project, another UID
    assert first.SOPInstanceUID != first.StudyInstanceUID  # two UIDs, two new UIDs
    deepest = first.AnatomicRegionSequence[0].ReferencedImageSequence[0]
    assert deepest.SOPInstanceUID == first.SOPInstanceUID  # the same UID maps alike anywhere
    assert first.AnatomicRegionSequence[0].SOPInstanceUID != first.SOPInstanceUID
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert residual_identifiers(source, first) == []


# -- the engine bugs this file found -----------------------------------------------------------
def test_device_uids_are_kept_under_retain_device_identity() -> None:
    """Device UID and Manufacturer's Device Class UID are K under Retain Device Identity
    alone; the engine kept UIDs only under Retain UIDs and remapped them."""
    config = _config((DEVICE,))
    ds = Dataset()
    ds.PatientID, ds.Modality, ds.BurnedInAnnotation = PATIENT, "CT", "NO"
    ds.DeviceUID, ds.SOPInstanceUID = _uid(1), _uid(2)
    ds.add_new(0x0018100B, "UI", _uid(3))  # Manufacturer's Device Class UID
    out = deidentify(ds, config).dataset
    assert out.DeviceUID == _uid(1) and out[0x0018100B].value == _uid(3)
    assert out.SOPInstanceUID == PSEUDONYMS.uid(_uid(2))  # other UIDs are still remapped
    assert residual_identifiers(ds, out, profile=config.profile) == []


def test_safe_private_uids_are_remapped_like_any_other() -> None:
    """Private attributes are C under Retain Safe Private: an allow-listed element is kept
    (decision 0014: the allow-list is the review, the residual scan the check), but a UID in
    it is remapped like every UID (deid.py step 6); the engine copied it as it was, so the
    original UID was released, or, with the scan, every such file blocked."""
    ds = Dataset()
    ds.PatientName, ds.PatientID = NAME, PATIENT
    ds.Modality, ds.BurnedInAnnotation = "CT", "NO"
    ds.SOPInstanceUID = _uid(5)
    ds.add_new(PRIVATE_CREATOR_TAG, "LO", CREATOR)
    ds.add_new(0x00091002, "UI", _uid(5))  # a private reference to the instance
    ds.add_new(0x00091003, "DS", "1.5")
    safe = frozenset({(CREATOR, 0x02), (CREATOR, 0x03)})
    config = DeidConfig(Profile(frozenset({SAFE})), PSEUDONYMS, safe)
    out = deidentify(ds, config).dataset
    assert out[0x00091002].value == PSEUDONYMS.uid(_uid(5)) == out.SOPInstanceUID
    assert out[0x00091003].value == "1.5"
    assert out[PRIVATE_CREATOR_TAG].value == CREATOR
    assert residual_identifiers(ds, out, profile=config.profile) == []
    kept = DeidConfig(Profile(frozenset({SAFE, UIDS})), PSEUDONYMS, safe)
    assert deidentify(ds, kept).dataset[0x00091002].value == _uid(5)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _identifying_sequences() -> tuple[Dataset, set[str]]:
    """A dataset with the sequences of the review (each D under the basic profile), and
    every value of the input in them."""
    ds = Dataset()
    ds.PatientName, ds.PatientID = NAME, PATIENT
    ds.Modality, ds.BurnedInAnnotation = "CT", "NO"
    ds.InstitutionCodeSequence = Sequence([_code("RR8", "99NHSODS", "Leeds Teaching Hospitals")])
    ds.PersonIdentificationCodeSequence = Sequence([
        _code("STAFF4471", "99LTHT", "HARTWELL^GEORGINA")])
    operator = Dataset()
    operator.PersonIdentificationCodeSequence = Sequence([
        _code("STAFF9921", "99LTHT", "Evelyn Radiograph")])
    operator.InstitutionName = "St James's University Hospital"
    operator.InstitutionCodeSequence = Sequence([
        _code("RR813", "99NHSODS", "St James's University Hospital")])
    operator.PersonTelephoneNumbers = "01132433144"  # X
    ds.OperatorIdentificationSequence = Sequence([operator])
    values = {str(e.value) for sequence in (0x00080082, 0x00401101, 0x00081072)
              for e in ds[sequence].value[0].iterall() if e.VR != "SQ"}
    return ds, values


def _values_in(ds: Dataset) -> set[str]:
    return {str(v) for e in ds.iterall() if e.VR != "SQ"
            for v in (e.value if isinstance(e.value, list | tuple) else [e.value])}


def test_identifying_sequences_under_d_keep_only_dummies() -> None:
    """The review's finding: Institution Code (X/Z/D), Person Identification Code (D) and
    Operator Identification (X/D) Sequences are D, but the engine kept their items and
    cleaned them, so a site's code (RR8) and name, staff IDs and names went out with no
    options, and the residual scan looked for none of them. Now their items keep their
    structure (complete codes, for dciodvfy) with dummies in them; the scan finds these
    codes if they leak; and Retain Institution Identity, under which the table says K,
    keeps the Institution Code Sequence whole."""
    ds, values = _identifying_sequences()
    assert {"RR8", "Leeds Teaching Hospitals", "STAFF4471", "HARTWELL^GEORGINA",
            "STAFF9921", "01132433144"} <= values
    result = deidentify(ds, _config(()))
    out = result.dataset
    assert not values & _values_in(out)
    for code in (out.InstitutionCodeSequence[0], out.PersonIdentificationCodeSequence[0],
                 out.OperatorIdentificationSequence[0].PersonIdentificationCodeSequence[0],
                 out.OperatorIdentificationSequence[0].InstitutionCodeSequence[0]):
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
            "ANONYMOUS", "99ANONYMOUS", "ANONYMOUS")
    assert out.OperatorIdentificationSequence[0].InstitutionName == "ANONYMOUS"
    assert "PersonTelephoneNumbers" not in out.OperatorIdentificationSequence[0]  # X
    assert residual_identifiers(ds, out, identifying=result.identifying) == []
    again = copy.deepcopy(ds)  # an input already anonymised: its name is not identifying,
    again.PatientName = "ANONYMOUS"  # or every dummy of the output would be a finding
    assert residual_identifiers(again, deidentify(again, _config(())).dataset) == []

    leaked = deidentify(ds, _config(())).dataset  # the old output: the items as they were
    leaked.InstitutionCodeSequence = ds.InstitutionCodeSequence
    leaked.PersonIdentificationCodeSequence = ds.PersonIdentificationCodeSequence
    paths = {f.path for f in residual_identifiers(ds, leaked)}
    assert {"(0008,0082)[0](0008,0100)", "(0008,0082)[0](0008,0104)",
            "(0040,1101)[0](0008,0100)", "(0040,1101)[0](0008,0104)"} <= paths

    config = _config((INSTITUTION,))
    assert config.profile.action(0x00080082) is K
    assert config.profile.action(0x00401101) is D and config.profile.action(0x00081072) is D
    result = deidentify(ds, config)
    kept = result.dataset
    assert kept.InstitutionCodeSequence == ds.InstitutionCodeSequence  # K: whole
    survived = values & _values_in(kept)
    assert survived == {"RR8", "99NHSODS", "Leeds Teaching Hospitals"}  # and only those
    assert residual_identifiers(ds, kept, profile=config.profile,
                                identifying=result.identifying) == []


def test_items_under_d_keep_structure_and_lose_every_value() -> None:
    """The rules of an item under D, one by one (decision 0015, amended)."""
    observer = Dataset()
    observer.VerifyingObserverName = NAME  # D: a dummy
    observer.VerificationDateTime = "20240301101500"  # not listed: a dummy
    observer.add_new(0x00081160, "IS", ["2", "5"])  # Referenced Frame Number: structure
    observer.add_new(0x0040A30A, "DS", ["1.5", "2.5"])  # Numeric Value: two dummies
    observer.add_new(0x00700022, "FL", [1.5, 2.5, 3.5, 4.5])  # Graphic Data: four dummies
    observer.add_new(0x00209165, "AT", 0x00100020)  # Dimension Index Pointer: kept
    observer.add_new(0x00340002, "OB", b"SMITHSON")  # Flow Identifier: zeros, same length
    observer.add_new(0x00101000, "LO", PATIENT)  # Other Patient IDs: X, removed
    observer.add_new(0x00080050, "SH", "RR123456")  # Accession Number: Z, emptied
    observer.add_new(0x0040A160, "UT", "")  # Text Value, empty: stays empty
    observer.add_new(0x00090010, "LO", CREATOR)
    observer.add_new(0x00091001, "LO", PATIENT)  # private: removed, even if allow-listed
    observer.PersonIdentificationCodeSequence = Sequence([  # nested: dummies too
        _code("STAFF4471", "DCM", "HARTWELL^GEORGINA")])  # a registered scheme: kept
    ds = Dataset()
    ds.PatientID, ds.Modality, ds.BurnedInAnnotation = PATIENT, "CT", "NO"
    ds.VerifyingObserverSequence = Sequence([observer])
    for options in [(), (SAFE,), (MODIFIED, DESCRIPTORS)]:
        item = deidentify(ds, _config(options)).dataset.VerifyingObserverSequence[0]
        assert item.VerifyingObserverName == "ANONYMOUS"
        assert item.VerificationDateTime == "19000101000000"
        assert list(item[0x00081160].value) == [2, 5]
        assert list(item[0x0040A30A].value) == [0, 0]
        assert list(item[0x00700022].value) == [0, 0, 0, 0]
        assert item[0x00209165].value == 0x00100020
        assert item[0x00340002].value == bytes(8)
        assert 0x00101000 not in item and item[0x00080050].value in (None, "")
        assert item[0x0040A160].value in (None, "")
        assert 0x00091001 not in item and 0x00090010 not in item
        code = item.PersonIdentificationCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
            "ANONYMOUS", "DCM", "ANONYMOUS")
