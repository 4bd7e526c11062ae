"""Governance policies in the pure core: the strictest merge (rule by rule, and as a
commutative, associative, idempotent meet), provenance, differences, and the engine's
settings a policy allows."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given, settings

from imagebank.domain.confidentiality import Option, Profile
from imagebank.domain.policy import (
    Loosening,
    MaskingRule,
    Policy,
    PolicyRefusal,
    Rectangle,
    Retention,
    SafePrivate,
    Site,
    deid_settings,
    diff,
    harmonise,
    loosenings,
    merge,
    merge_two,
    shown_count,
)
from policykit import policies

OPT = Option
BANNER = Rectangle(0, 0, 1024, 60)
CORNER = Rectangle(824, 700, 200, 68)


def _policy(**changes: object) -> Policy:
    base = Policy(smallest_count=10, national_data_opt_out=False, retention=Retention(3650))
    return replace(base, **changes)  # type: ignore[arg-type]


def _safe(creator: str, element: int, reason: str = "numbers only") -> SafePrivate:
    return SafePrivate(creator, element, frozenset({reason}))


# -- properties of the merge ---------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(policies(), policies(), policies())
def test_merge_is_commutative_associative_and_idempotent(a: Policy, b: Policy,
                                                         c: Policy) -> None:
    assert merge_two(a, b) == merge_two(b, a)
    assert merge_two(merge_two(a, b), c) == merge_two(a, merge_two(b, c))
    assert merge_two(a, a) == a
    assert merge([a, b, c]) == merge([c, a, b])


@settings(max_examples=150, deadline=None)
@given(policies(), policies())
def test_the_merge_allows_nothing_either_site_does_not(a: Policy, b: Policy) -> None:
    merged = merge_two(a, b)
    assert loosenings(a, merged) == [] and loosenings(b, merged) == []
    assert diff(a, merged).b_allows == []
    # and it is the loosest such policy: each rule is one of the sites' (or their meet).
    assert merged.smallest_count in (a.smallest_count, b.smallest_count)
    assert merged.allowed_options == a.allowed_options & b.allowed_options


@settings(max_examples=100, deadline=None)
@given(policies())
def test_a_policy_does_not_differ_from_itself(a: Policy) -> None:
    assert diff(a, a).same


# -- each rule ------------------------------------------------------------------------------
def test_options_are_the_intersection() -> None:
    a = _policy(allowed_options=frozenset({OPT.RETAIN_LONG_FULL_DATES,
                                           OPT.RETAIN_LONG_MODIFIED_DATES, OPT.RETAIN_UIDS}))
    b = _policy(allowed_options=frozenset({OPT.RETAIN_LONG_MODIFIED_DATES, OPT.CLEAN_DESCRIPTORS}))
    assert merge_two(a, b).allowed_options == {OPT.RETAIN_LONG_MODIFIED_DATES}
    assert merge([a, _policy()]).allowed_options == frozenset()  # the basic profile alone


def test_safe_private_is_the_intersection_and_keeps_every_reason() -> None:
    allow = frozenset({OPT.RETAIN_SAFE_PRIVATE})
    a = _policy(allowed_options=allow, safe_private=frozenset({
        _safe("SIEMENS MR HEADER", 0x0C, "b-value"), _safe("GEMS_PARM_01", 0x39)}))
    b = _policy(allowed_options=allow, safe_private=frozenset({
        _safe("SIEMENS MR HEADER", 0x0C, "diffusion b-value"),
        _safe("SIEMENS MR HEADER", 0x0E)}))
    merged = merge_two(a, b)
    assert merged.safe_private == {SafePrivate("SIEMENS MR HEADER", 0x0C,
                                               frozenset({"b-value", "diffusion b-value"}))}
    # A site that does not allow the option keeps nothing private, whatever others list.
    assert merge_two(a, _policy()).safe_private == frozenset()
    assert OPT.RETAIN_SAFE_PRIVATE not in merge_two(a, _policy()).allowed_options


def test_masking_is_the_union_and_one_device_gets_one_rule() -> None:
    a = _policy(masking=frozenset({MaskingRule("GE Healthcare", "LOGIQ E9",
                                               frozenset({BANNER}), 768, 1024)}))
    b = _policy(masking=frozenset({
        MaskingRule("GE HEALTHCARE", "LOGIQ  E9", frozenset({BANNER, CORNER}), 768, 1024),
        MaskingRule("Philips", "EPIQ 7G", frozenset({Rectangle(0, 0, 800, 50)}))}))
    merged = merge_two(a, b)
    assert len(merged.masking) == 2
    assert merged.masks_for("ge healthcare", "Logiq E9", 768, 1024) == {BANNER, CORNER}
    assert merged.masks_for("GE Healthcare", "LOGIQ E9", 600, 800) == frozenset()  # size
    assert merged.masks_for("PHILIPS", "EPIQ 7G", 600, 800) == {Rectangle(0, 0, 800, 50)}
    # One spelling, whichever order the sites come in.
    assert {r.manufacturer for r in merged.masking} == {
        r.manufacturer for r in merge_two(b, a).masking} == {"GE HEALTHCARE", "Philips"}


def test_scalars_take_the_strictest_value() -> None:
    a = _policy(smallest_count=5, national_data_opt_out=True, retention=Retention(3650),
                review_date=date(2026, 3, 31))
    b = _policy(smallest_count=10, national_data_opt_out=False,
                retention=Retention(None, project_end=True), review_date=None)
    merged = merge_two(a, b)
    assert merged.smallest_count == 10
    assert merged.national_data_opt_out is True
    # 3650 days or the end of the project, whichever comes first.
    assert merged.retention == Retention(3650, project_end=True)
    assert merged.review_date == date(2026, 3, 31)
    assert merge_two(a, _policy(retention=Retention(365))).retention == Retention(365)


def test_count_rounding_merges_to_a_multiple_of_every_sites_base() -> None:
    five, three, one = (_policy(count_rounding=n) for n in (5, 3, 1))
    assert merge_two(five, three).count_rounding == 15
    assert merge_two(five, one).count_rounding == 5
    assert merge_two(five, _policy(count_rounding=10)).count_rounding == 10
    assert loosenings(_policy(count_rounding=10), five) == [
        Loosening("count_rounding", "counts rounded to multiples of 5, not of 10")]
    assert loosenings(five, _policy(count_rounding=10)) == []
    with pytest.raises(ValueError, match="count_rounding"):
        _policy(count_rounding=0)


@pytest.mark.parametrize(("count", "smallest", "base", "shown"), [
    (0, 10, 5, 0), (1, 10, 5, "< 10"), (9, 10, 5, "< 10"), (10, 10, 5, 10), (12, 10, 5, 10),
    (13, 10, 5, 15), (1234, 10, 1, 1234), (1, 1, 1, 1), (2, 1, 5, "< 5"), (3, 1, 5, 5),
    (149, 8, 100, 100), (150, 8, 100, 200)])
def test_counts_shown_outside_the_site(count: int, smallest: int, base: int,
                                       shown: int | str) -> None:
    assert shown_count(count, _policy(smallest_count=smallest, count_rounding=base)) == shown


def test_site_details_survive_only_when_every_site_agrees() -> None:
    leeds = _policy(site=Site("Leeds", "RR8"))
    assert merge_two(leeds, leeds).site == Site("Leeds", "RR8")
    assert merge_two(leeds, _policy(site=Site("Oxford", "RTH"))).site == Site()


def test_merge_needs_a_policy() -> None:
    with pytest.raises(ValueError, match="at least one"):
        merge([])


@pytest.mark.parametrize(("build", "words"), [
    (lambda: _policy(smallest_count=0), "smallest_count"),
    (lambda: _policy(allowed_options=frozenset({OPT.RETAIN_LONG_FULL_DATES})),
     "retain_long_modified_dates"),
    (lambda: _policy(safe_private=frozenset({_safe("X", 1)})), "retain_safe_private"),
    (lambda: _policy(allowed_options=frozenset({OPT.RETAIN_SAFE_PRIVATE}),
                     safe_private=frozenset({_safe("X", 1, "a"), _safe("X", 1, "b")})),
     "twice"),
    (lambda: _policy(masking=frozenset({MaskingRule("A", "B", frozenset({BANNER})),
                                        MaskingRule("a", "b", frozenset({CORNER}))})),
     "same device"),
    (lambda: MaskingRule("A", "B", frozenset({BANNER}), rows=768, columns=800), "outside"),
    (lambda: MaskingRule("A", "B", frozenset()), "at least one rectangle"),
    (lambda: Rectangle(0, 0, 0, 10), "width"),
    (lambda: SafePrivate("X", 0x100, frozenset({"a"})), "0xFF"),
    (Retention, "days, project_end"),
    (lambda: Retention(0), "at least 1"),
])
def test_a_constructed_policy_is_valid(build: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        build()  # type: ignore[operator]


# -- provenance -----------------------------------------------------------------------------
def test_harmonise_names_the_sites_that_set_each_rule() -> None:
    allow = frozenset({OPT.RETAIN_SAFE_PRIVATE, OPT.CLEAN_DESCRIPTORS})
    leeds = _policy(allowed_options=allow, smallest_count=10, retention=Retention(3650),
                    safe_private=frozenset({_safe("GEMS_PARM_01", 0x39)}),
                    masking=frozenset({MaskingRule("GE", "E9", frozenset({BANNER}))}))
    manchester = _policy(allowed_options=allow | {OPT.RETAIN_UIDS}, smallest_count=8,
                         national_data_opt_out=True, retention=Retention(None, True),
                         review_date=date(2025, 12, 31),
                         safe_private=frozenset({_safe("GEMS_PARM_01", 0x39),
                                                 _safe("SIEMENS MR HEADER", 0x0C)}),
                         masking=frozenset({MaskingRule("GE", "E9",
                                                        frozenset({BANNER, CORNER}))}))
    oxford = _policy(allowed_options=frozenset({OPT.CLEAN_DESCRIPTORS}), smallest_count=10,
                     retention=Retention(1825))
    h = harmonise([("leeds", leeds), ("manchester", manchester), ("oxford", oxford)])
    assert h.policy == merge([leeds, manchester, oxford])
    assert h.options[OPT.CLEAN_DESCRIPTORS] == ()
    assert h.options[OPT.RETAIN_SAFE_PRIVATE] == ("oxford",)
    assert h.options[OPT.RETAIN_UIDS] == ("leeds", "oxford")
    assert h.options[OPT.RETAIN_LONG_FULL_DATES] == ("leeds", "manchester", "oxford")
    assert h.safe_private == {("GEMS_PARM_01", 0x39): ("oxford",),
                              ("SIEMENS MR HEADER", 0x0C): ("leeds", "oxford")}
    key = next(iter(h.policy.masking)).key
    assert h.masking == {(key, BANNER): ("leeds", "manchester"), (key, CORNER): ("manchester",)}
    assert h.smallest_count == ("leeds", "oxford")
    assert h.national_data_opt_out == ("manchester",)
    assert h.retention_days == ("oxford",) and h.retention_project_end == ("manchester",)
    assert h.review_date == ("manchester",)


def test_harmonise_needs_distinct_labels() -> None:
    with pytest.raises(ValueError, match="distinct"):
        harmonise([("a", _policy()), ("a", _policy())])


# -- differences ----------------------------------------------------------------------------
def test_diff_says_what_each_side_allows_that_the_other_does_not() -> None:
    a = _policy(allowed_options=frozenset({OPT.CLEAN_DESCRIPTORS}), smallest_count=10,
                national_data_opt_out=True, retention=Retention(1825, project_end=True),
                masking=frozenset({MaskingRule("GE", "E9", frozenset({BANNER}))}))
    b = _policy(allowed_options=frozenset({OPT.RETAIN_UIDS, OPT.RETAIN_SAFE_PRIVATE}),
                smallest_count=5, national_data_opt_out=False, retention=Retention(3650),
                safe_private=frozenset({_safe("GEMS_PARM_01", 0x39)}))
    d = diff(a, b)
    assert {(x.rule, x.detail) for x in d.b_allows} == {
        ("allowed_options", "retain_uids"), ("allowed_options", "retain_safe_private"),
        ("safe_private", "GEMS_PARM_01 0x39"),
        ("masking", "GE / E9: x=0 y=0 width=1024 height=60 not masked"),
        ("smallest_count", "counts from 5 to 9 shown"),
        ("national_data_opt_out", "opted-out patients included"),
        ("retention", "kept 3650 days instead of 1825 days or the end of the project, "
                      "whichever comes first")}
    assert [(x.rule, x.detail) for x in d.a_allows] == [("allowed_options",
                                                          "clean_descriptors")]
    assert not d.same


@pytest.mark.parametrize(("a", "b", "looser"), [
    (Retention(365), Retention(366), True),
    (Retention(365), Retention(None, True), True),   # may outlive 365 days
    (Retention(None, True), Retention(365), True),   # may outlive the project
    (Retention(365, True), Retention(365), True),
    (Retention(365), Retention(365, True), False),
    (Retention(365), Retention(30), False),
])
def test_retention_loosening(a: Retention, b: Retention, looser: bool) -> None:
    found = loosenings(_policy(retention=a), _policy(retention=b))
    assert [x.rule for x in found] == (["retention"] if looser else [])


# -- the engine's settings ------------------------------------------------------------------
def test_deid_settings_give_the_profile_and_the_safe_private_pairs() -> None:
    policy = _policy(allowed_options=frozenset({OPT.RETAIN_SAFE_PRIVATE, OPT.CLEAN_DESCRIPTORS,
                                                OPT.RETAIN_LONG_MODIFIED_DATES}),
                     safe_private=frozenset({_safe("GEMS_PARM_01", 0x39)}))
    profile, safe = deid_settings(policy, ["retain_safe_private", "clean_descriptors"])
    assert profile == Profile(frozenset({OPT.RETAIN_SAFE_PRIVATE, OPT.CLEAN_DESCRIPTORS}))
    assert safe == {("GEMS_PARM_01", 0x39)}
    profile, safe = deid_settings(policy, [OPT.CLEAN_DESCRIPTORS])
    assert safe == frozenset()  # not asked for: nothing private is kept
    assert deid_settings(policy) == (Profile(), frozenset())  # the basic profile: always


@pytest.mark.parametrize(("asked", "words"), [
    (["retain_uids", "clean_descriptors"], "does not allow retain_uids (it allows: "
                                           "clean_descriptors)"),
    (["retain_uid"], "unknown option 'retain_uid'"),
])
def test_deid_settings_refuse_what_the_policy_does_not_allow(asked: list[str],
                                                             words: str) -> None:
    policy = _policy(allowed_options=frozenset({OPT.CLEAN_DESCRIPTORS}))
    with pytest.raises(PolicyRefusal) as caught:
        deid_settings(policy, asked)
    assert words in caught.value.message
    assert caught.value.code == "not_allowed_by_policy" and caught.value.status == 400


def test_deid_settings_refuse_both_date_options() -> None:
    both = frozenset({OPT.RETAIN_LONG_FULL_DATES, OPT.RETAIN_LONG_MODIFIED_DATES})
    with pytest.raises(PolicyRefusal, match="exclude each other"):
        deid_settings(_policy(allowed_options=both), both)
