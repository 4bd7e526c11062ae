"""Policy files: strict reading with every problem at once (file, line, field path, what is
wrong, what is expected), writing that reads back, harmonising files, and the engine's
settings from a policy applied to a real dataset."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from imagebank.dicom.deid import DeidConfig, deidentify
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study
from imagebank.domain.confidentiality import Option
from imagebank.domain.policy import (
    MaskingRule,
    Policy,
    PolicyError,
    Rectangle,
    Retention,
    SafePrivate,
    Site,
    deid_settings,
    harmonise,
    merge,
)
from imagebank.domain.pseudonyms import Pseudonymiser
from imagebank.services.policies import (
    harmonise_files,
    harmonised_document,
    load_policy,
    parse_policy,
    policy_document,
    render_harmonised,
    render_policy,
    site_labels,
    write_text_atomically,
)
from policykit import policies

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "policies"
MINIMAL = """\
version: 1
smallest_count: 10
national_data_opt_out: true
retention: 3650
"""


def _problems(text: str, source: str = "site.yaml") -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source)
    problems = list(caught.value.problems)
    assert caught.value.message.splitlines() == problems
    for line in problems:
        assert line.startswith(f"{source}:") and "\n" not in line and len(line) < 400
    return problems


def _one(text: str) -> str:
    problems = _problems(text)
    assert len(problems) == 1, problems
    return problems[0]


# -- reading -------------------------------------------------------------------------------
def test_a_minimal_policy_reads_with_the_strictest_defaults() -> None:
    policy = parse_policy(MINIMAL)
    assert policy == Policy(smallest_count=10, national_data_opt_out=True,
                            retention=Retention(3650))
    assert policy.allowed_options == frozenset() and policy.safe_private == frozenset()
    assert policy.masking == frozenset() and policy.site == Site()


def test_every_field_reads() -> None:
    text = MINIMAL.replace("retention: 3650", """\
retention: {days: 1825, project_end: true}
site: {name: Leeds Teaching Hospitals NHS Trust, ods_code: rr8, contact: IG team}
review_date: 2026-03-31
allowed_options: [retain_long_full_dates, retain_long_modified_dates, retain_safe_private]
safe_private:
  - {creator: "SIEMENS MR HEADER ", element: "0x0c", justification: b-value}
  - creator: GEMS_PARM_01
    element: 57
    justification: [b-value, "numbers only"]
masking:
  - manufacturer: GE Healthcare
    model: LOGIQ E9
    rows: 768
    columns: 1024
    rectangles: [{x: 0, y: 0, width: 1024, height: 60}]
""")
    policy = parse_policy(text)
    assert policy.retention == Retention(1825, project_end=True)
    assert policy.site == Site("Leeds Teaching Hospitals NHS Trust", "RR8", "IG team")
    assert policy.review_date == date(2026, 3, 31)
    assert policy.allowed_options == {Option.RETAIN_LONG_FULL_DATES,
                                      Option.RETAIN_LONG_MODIFIED_DATES,
                                      Option.RETAIN_SAFE_PRIVATE}
    assert policy.safe_private == {
        SafePrivate("SIEMENS MR HEADER", 0x0C, frozenset({"b-value"})),
        SafePrivate("GEMS_PARM_01", 0x39, frozenset({"b-value", "numbers only"}))}
    assert policy.masking == {MaskingRule("GE Healthcare", "LOGIQ E9",
                                          frozenset({Rectangle(0, 0, 1024, 60)}), 768, 1024)}
    assert parse_policy(MINIMAL.replace("3650", "project-end")).retention == Retention(
        None, project_end=True)
    assert parse_policy(MINIMAL + 'review_date: "2026-01-02"\n').review_date == date(2026, 1, 2)


@pytest.mark.parametrize(("change", "path", "words"), [
    # wrong values, each naming the field path and what is expected
    (("smallest_count: 10", "smallest_count: 0"), "smallest_count", "0 is out of range"),
    (("smallest_count: 10", "smallest_count: ten"), "smallest_count", "not a whole number"),
    (("smallest_count: 10", "smallest_count: true"), "smallest_count", "not a whole number"),
    (("national_data_opt_out: true", "national_data_opt_out: 1"), "national_data_opt_out",
     "not true or false"),
    (("retention: 3650", "retention: forever"), "retention", '"forever" is not a retention'),
    (("retention: 3650", "retention: 0"), "retention", "out of range"),
    (("retention: 3650", "retention: {project_end: false}"), "retention", "no limit"),
    (("retention: 3650", "retention: {days: -1}"), "retention.days", "out of range"),
    (("retention: 3650", "retention: {days: 30, keep: 1}"), "retention.keep",
     "unknown field"),
    (("version: 1", "version: one"), "version", "not a version"),
    # unknown and repeated fields
    (("smallest_count: 10", "smallest_count: 10\nsmalest_count: 5"), "smalest_count",
     "unknown field; did you mean smallest_count?"),
    (("smallest_count: 10", "smallest_count: 10\nsmallest_count: 5"), "smallest_count",
     "given twice (first on line 2)"),
    (("retention: 3650", "retention: 3650\nsite: {name: Leeds, ods: RR8}"), "site.ods",
     "did you mean ods_code?"),
    (("retention: 3650", "retention: 3650\nsite: {ods_code: R-8}"), "site.ods_code",
     "3 to 10 capital letters"),
    (("retention: 3650", "retention: 3650\nreview_date: 2026-13-01"), "review_date",
     "not a date"),
    (("retention: 3650", "retention: 3650\nreview_date: 2026-01-01 10:00:00"), "review_date",
     "not a date"),
    # options
    (("retention: 3650", "retention: 3650\nallowed_options: [retian_uids]"),
     "allowed_options[0]", "did you mean retain_uids?"),
    (("retention: 3650", "retention: 3650\nallowed_options: retain_uids"), "allowed_options",
     "is not a list"),
    (("retention: 3650", "retention: 3650\nallowed_options: [retain_uids, retain_uids]"),
     "allowed_options[1]", "listed twice"),
    (("retention: 3650", "retention: 3650\nallowed_options: [retain_long_full_dates]"),
     "allowed_options", "retain_long_modified_dates, which reveals less"),
    # safe private
    (("retention: 3650", "retention: 3650\nallowed_options: [retain_safe_private]\n"
      "safe_private: [{creator: X, element: '10', justification: j}]"),
     "safe_private[0].element", '"10" is not an element byte; expected'),
    (("retention: 3650", "retention: 3650\nallowed_options: [retain_safe_private]\n"
      "safe_private: [{creator: X, element: 256, justification: j}]"),
     "safe_private[0].element", "0x00 to 0xFF"),
    (("retention: 3650", "retention: 3650\nallowed_options: [retain_safe_private]\n"
      "safe_private: [{creator: 'A\\B', element: 1, justification: j}]"),
     "safe_private[0].creator", "no backslash"),
    (("retention: 3650", "retention: 3650\nallowed_options: [retain_safe_private]\n"
      "safe_private: [{creator: X, element: 1}]"),
     "safe_private[0].justification", "missing; expected why the element is safe"),
    (("retention: 3650", "retention: 3650\nallowed_options: [retain_safe_private]\n"
      "safe_private: [{creator: X, element: 1, justification: []}]"),
     "safe_private[0].justification", "an empty list"),
    (("retention: 3650", "retention: 3650\nallowed_options: [retain_safe_private]\n"
      "safe_private: [{creator: X, element: 1, justification: j},\n"
      "               {creator: X, element: '0x01', justification: k}]"),
     "safe_private[1]", "repeats safe_private[0]"),
    (("retention: 3650", "retention: 3650\n"
      "safe_private: [{creator: X, element: 1, justification: j}]"),
     "safe_private", "retain_safe_private is not in allowed_options"),
    # masking
    (("retention: 3650", "retention: 3650\nmasking: [{manufacturer: GE, model: E9, "
      "rectangles: [{x: 0, y: 0, width: -3, height: 10}]}]"),
     "masking[0].rectangles[0].width", "-3 is out of range; expected a width in pixels"),
    (("retention: 3650", "retention: 3650\nmasking: [{manufacturer: GE, model: E9, "
      "rectangles: [{x: 0, y: 0, height: 10}]}]"),
     "masking[0].rectangles[0].width", "missing"),
    (("retention: 3650", "retention: 3650\nmasking: [{manufacturer: GE, model: E9, "
      "columns: 100, rectangles: [{x: 50, y: 0, width: 60, height: 10}]}]"),
     "masking[0].rectangles[0]", "reaches column 110 of an image 100 columns wide"),
    (("retention: 3650", "retention: 3650\nmasking: [{manufacturer: GE, model: E9, "
      "rows: 10, rectangles: [{x: 0, y: 5, width: 6, height: 10}]}]"),
     "masking[0].rectangles[0]", "reaches row 15"),
    (("retention: 3650", "retention: 3650\nmasking: [{manufacturer: GE, model: E9, "
      "rectangles: []}]"), "masking[0].rectangles", "an empty list"),
    (("retention: 3650", "retention: 3650\nmasking: [{manufacturer: GE, model: E9, "
      "rectangles: [[0, 0, 5, 5]]}]"), "masking[0].rectangles[0]", "is not a mapping"),
    (("retention: 3650", "retention: 3650\nmasking:\n"
      "  - {manufacturer: GE, model: E9, rectangles: [{x: 0, y: 0, width: 5, height: 5}]}\n"
      "  - {manufacturer: ge, model: e9, rectangles: [{x: 1, y: 0, width: 5, height: 5}]}"),
     "masking[1]", "same device and size as masking[0]"),
    (("retention: 3650", "retention: 3650\nmasking: [{manufacturer: '', model: E9, "
      "rectangles: [{x: 0, y: 0, width: 5, height: 5}]}]"),
     "masking[0].manufacturer", "empty text"),
])
def test_each_problem_names_the_field_and_what_is_expected(change: tuple[str, str], path: str,
                                                           words: str) -> None:
    old, new = change
    assert old in MINIMAL
    line = _one(MINIMAL.replace(old, new))
    assert re.match(rf"site\.yaml:\d+: {re.escape(path)}: ", line), line
    assert words in line
    assert "expected" in line or "did you mean" in line


@pytest.mark.parametrize("field", ["version", "smallest_count", "national_data_opt_out",
                                   "retention"])
def test_required_fields(field: str) -> None:
    text = "\n".join(x for x in MINIMAL.splitlines() if not x.startswith(field)) + "\n"
    assert re.fullmatch(rf"site\.yaml:1: {field}: missing; expected .+", _one(text))


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    problems = _problems("""\
version: 1
smallest_count: 0
alowed_options: []
masking:
  - manufacturer: GE
    model: E9
    rectangles: [{x: 0, y: 0, width: 0, height: 10}]
national_data_opt_out: maybe
""")
    assert [p.split(": ")[1] for p in problems] == [
        "retention", "smallest_count", "alowed_options", "masking[0].rectangles[0].width",
        "national_data_opt_out"]
    # In the file's order; a missing field is where its mapping starts.
    assert [int(p.split(":")[1]) for p in problems] == [1, 2, 3, 7, 8]


def test_huge_values_are_never_echoed() -> None:
    big, number, key = "A" * 5000, "9" * 200, "B" * 300
    problems = _problems(f"version: 1\nsmallest_count: {number}x\nnational_data_opt_out: "
                         f"{big}\nretention: {number}\nsite: {{name: {big}}}\n{key}: 1\n")
    assert len(problems) == 5
    text = "\n".join(problems)
    assert big[:50] not in text and number[:30] not in text and key[:50] not in text
    assert "a text of 5,000 characters" in text and "a very large number" in text
    assert "a text of 300 characters: unknown field" in text


@pytest.mark.parametrize(("text", "words"), [
    ("", "empty; expected a policy"),
    ("# nothing but a comment\n", "empty"),
    ("- 1\n- 2\n", "a list is not a mapping; expected a mapping with the fields version"),
    ("version: 1\nsmallest_count: [1\n", "not valid YAML"),
    ("a: &x 1\nb: *x\n", "aliases (*name) are not allowed"),
    ("version: 2\nfuture_field: 1\n", "version: 2 is not a version this imagebank reads"),
])
def test_documents_that_are_not_policies(text: str, words: str) -> None:
    assert words in _one(text)


def test_files(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())  # a byte-order mark is fine
    assert load_policy(good).smallest_count == 10
    for name, data, words in [("latin1.yaml", MINIMAL.encode() + b"# caf\xe9\n", "not UTF-8"),
                              ("big.yaml", b"#" * 1_000_001, "larger than 1,000,000 bytes")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PolicyError, match=re.escape(words)):
            load_policy(tmp_path / name)
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(tmp_path / "missing.yaml")
    with pytest.raises(PolicyError, match="cannot be read"):
        load_policy(tmp_path)


# -- writing that reads back ---------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(policies())
def test_a_written_policy_reads_back_the_same(policy: Policy) -> None:
    text = render_policy(policy, header=["a header\nwith a line break"])
    assert parse_policy(text) == policy
    assert policy_document(parse_policy(text)) == policy_document(policy)


@settings(max_examples=60, deadline=None)
@given(st.lists(policies(), min_size=1, max_size=4))
def test_a_harmonised_policy_is_a_valid_policy(sites: list[Policy]) -> None:
    labels = [f"site{i}" for i in range(len(sites))]
    h = harmonise(list(zip(labels, sites, strict=True)))
    text = render_harmonised(h, [f"{label}.yaml" for label in labels])
    assert parse_policy(text) == merge(sites) == h.policy
    doc = harmonised_document(h, labels)
    assert doc["policy"] == policy_document(h.policy)


def test_the_examples_are_valid_and_harmonise(tmp_path: Path) -> None:
    paths = sorted(EXAMPLES.glob("*.yaml"))
    assert len(paths) >= 3
    loaded = [load_policy(p) for p in paths]
    h, labels = harmonise_files(paths)
    assert labels == [p.stem for p in paths]
    assert h.policy == merge(loaded)
    assert h.policy.allowed_options < loaded[0].allowed_options  # the examples differ
    text = render_harmonised(h, [str(p) for p in paths])
    merged = tmp_path / "merged.yaml"
    write_text_atomically(merged, text)
    assert load_policy(merged) == h.policy
    assert "# set by " in text and "# not allowed:" in text


def test_harmonise_reports_the_problems_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL.replace("10", "0"))
    (tmp_path / "b.yaml").write_text(MINIMAL.replace("true", "yes please"))
    (tmp_path / "c.yaml").write_text(MINIMAL)
    with pytest.raises(PolicyError) as caught:
        harmonise_files([tmp_path / n for n in ("a.yaml", "b.yaml", "c.yaml")])
    assert [p.split(":")[0].rsplit("/", 1)[-1] for p in caught.value.problems] == [
        "a.yaml", "b.yaml"]


def test_site_labels_are_file_names_unless_they_clash() -> None:
    assert site_labels(["x/leeds.yaml", "y/oxford.yml"]) == ["leeds", "oxford"]
    assert site_labels(["x/site.yaml", "y/site.yaml"]) == ["x/site.yaml", "y/site.yaml"]


def test_an_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.yaml"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_text_atomically(target, None)  # type: ignore[arg-type]
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


# -- the engine's settings from a policy file -----------------------------------------------
def test_the_policys_safe_private_list_drives_the_engine(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(MINIMAL + """\
allowed_options: [retain_safe_private]
safe_private:
  - {creator: ACME 1.0, element: "0x02", justification: "a slice thickness, a number"}
""")
    policy = load_policy(tmp_path / "p.yaml")
    ds: Dataset = next(iter(make_study(SyntheticPatient.make(1),
                                       series=[SeriesSpec(slices=1, rows=8, columns=8)])))
    ds.BurnedInAnnotation = "NO"
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091001, "LO", "SMITHSON^ALEXANDRA")
    ds.add_new(0x00091002, "DS", "1.5")
    profile, safe = deid_settings(policy, ["retain_safe_private"])
    out = deidentify(ds, DeidConfig(profile, Pseudonymiser(bytes(range(32))), safe)).dataset
    assert out[0x00091002].value == "1.5"
    assert 0x00091001 not in out
