"""Governance policies: what a site lets leave it, and the strictest merge of several sites'.

A site's policy (read from YAML by ``services.policies``; the format is decision 0016) says:

* which options of the confidentiality profile (PS3.15 E.3, ``confidentiality.Option``) a
  project MAY use. Every option relaxes the basic profile (each moves rows from X, Z, D or U to
  K or C), so the basic profile alone is always allowed and nothing is ever required;
* its safe-private allow-list: (private creator, element byte) pairs, each with a reason;
* masking rules for burned-in text, per manufacturer and model (and optionally image size);
* the smallest count that may be shown outside the site (small-number suppression);
* whether the National Data Opt-out applies;
* how long released data may be kept: a number of days, to the end of the project, or
  whichever of the two comes first.

``merge`` gives the strictest policy that satisfies every input (a meet: commutative,
associative, idempotent; the merge of valid policies is a valid policy). ``harmonise`` adds,
for each rule, the sites that made it so. ``diff`` says what one policy allows that another
does not. ``deid_settings`` turns a policy and a project's chosen options into the profile
and safe-private set the de-identification engine takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import reduce

from imagebank.domain.confidentiality import Option, Profile
from imagebank.domain.errors import InvalidInputError

POLICY_VERSION = 1
#: Options whose use needs another, less revealing one allowed too.
_IMPLIES = {Option.RETAIN_LONG_FULL_DATES: Option.RETAIN_LONG_MODIFIED_DATES}


class PolicyError(InvalidInputError):
    """A policy file is not valid. ``problems`` holds one line per problem (file, line, field
    path, what is wrong, what is expected); the message is those lines."""

    code = "invalid_policy"

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


class PolicyRefusal(InvalidInputError):
    """A project asked for something its policy does not allow."""

    code = "not_allowed_by_policy"


@dataclass(frozen=True, order=True, slots=True)
class Rectangle:
    """A region of the image, in pixels from the top left corner (column x, row y)."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if min(self.x, self.y) < 0 or min(self.width, self.height) < 1:
            raise ValueError("a rectangle needs x, y >= 0 and width, height >= 1")


def _device_key(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass(frozen=True, slots=True)
class MaskingRule:
    """Rectangles to blank in the pixel data of images from one device: Manufacturer
    (0008,0070) and Manufacturer's Model Name (0008,1090), compared without regard to case
    or spacing; Rows and Columns too when given (the rule applies to any size otherwise)."""

    manufacturer: str
    model: str
    rectangles: frozenset[Rectangle]
    rows: int | None = None
    columns: int | None = None

    def __post_init__(self) -> None:
        if not self.rectangles:
            raise ValueError("a masking rule needs at least one rectangle")
        for r in self.rectangles:
            if (self.columns is not None and r.x + r.width > self.columns) or (
                self.rows is not None and r.y + r.height > self.rows
            ):
                raise ValueError("a rectangle lies outside the image")

    @property
    def key(self) -> tuple[str, str, int, int]:
        """What identifies the rule (0 for a size not given)."""
        return (
            _device_key(self.manufacturer),
            _device_key(self.model),
            self.rows or 0,
            self.columns or 0,
        )

    def applies_to(self, manufacturer: str, model: str, rows: int, columns: int) -> bool:
        return (_device_key(manufacturer), _device_key(model)) == self.key[:2] and (
            self.rows in (None, rows) and self.columns in (None, columns)
        )


@dataclass(frozen=True, slots=True)
class SafePrivate:
    """A private element kept under Retain Safe Private: the private creator's value and the
    element's low byte (the ``EE`` of ``(gggg,xxEE)``), with why it is safe."""

    creator: str
    element: int
    justifications: frozenset[str]

    def __post_init__(self) -> None:
        if not 0 <= self.element <= 0xFF:
            raise ValueError("a private element byte is 0x00 to 0xFF")
        if not self.creator or not self.justifications:
            raise ValueError("a safe private element needs a creator and a justification")

    @property
    def key(self) -> tuple[str, int]:
        return (self.creator, self.element)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long released data may be kept: ``days`` after release, until the project ends
    (``project_end``), or whichever comes first when both are given."""

    days: int | None = None
    project_end: bool = False

    def __post_init__(self) -> None:
        if self.days is None and not self.project_end:
            raise ValueError("retention needs days, project_end, or both")
        if self.days is not None and self.days < 1:
            raise ValueError("retention days must be at least 1")


@dataclass(frozen=True, slots=True)
class Site:
    name: str | None = None
    ods_code: str | None = None
    contact: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A site's sharing policy, or the strictest merge of several. A constructed policy is
    valid (``ValueError`` otherwise); ``services.policies`` reads one with clear errors."""

    smallest_count: int
    national_data_opt_out: bool
    retention: Retention
    allowed_options: frozenset[Option] = frozenset()
    safe_private: frozenset[SafePrivate] = frozenset()
    masking: frozenset[MaskingRule] = frozenset()
    site: Site = field(default_factory=Site)
    review_date: date | None = None
    #: Counts shown outside the site are rounded to the nearest multiple of this (1: exact).
    count_rounding: int = 1

    def __post_init__(self) -> None:
        if self.smallest_count < 1:
            raise ValueError("smallest_count must be at least 1")
        if self.count_rounding < 1:
            raise ValueError("count_rounding must be at least 1")
        for option, needed in _IMPLIES.items():
            if option in self.allowed_options and needed not in self.allowed_options:
                raise ValueError(f"{option.value} is allowed without {needed.value}")
        if self.safe_private and Option.RETAIN_SAFE_PRIVATE not in self.allowed_options:
            raise ValueError("a safe-private list needs retain_safe_private allowed")
        if len({e.key for e in self.safe_private}) != len(self.safe_private):
            raise ValueError("a private element is listed twice")
        if len({r.key for r in self.masking}) != len(self.masking):
            raise ValueError("two masking rules are for the same device and size")

    def masks_for(
        self, manufacturer: str, model: str, rows: int, columns: int
    ) -> frozenset[Rectangle]:
        """Every rectangle to blank in an image from this device and of this size."""
        return frozenset(
            r
            for rule in self.masking
            if rule.applies_to(manufacturer, model, rows, columns)
            for r in rule.rectangles
        )


# -- the strictest merge ---------------------------------------------------------------------
def _merge_masking(rules: Iterable[MaskingRule]) -> frozenset[MaskingRule]:
    grouped: dict[tuple[str, str, int, int], list[MaskingRule]] = {}
    for rule in rules:
        grouped.setdefault(rule.key, []).append(rule)
    merged = set()
    for same in grouped.values():
        # One spelling for the device, whatever the order of the sites: the smallest.
        manufacturer, model = min((r.manufacturer, r.model) for r in same)
        merged.add(
            MaskingRule(
                manufacturer,
                model,
                frozenset().union(*(r.rectangles for r in same)),
                same[0].rows,
                same[0].columns,
            )
        )
    return frozenset(merged)


def shown_count(count: int, policy: Policy) -> int | str:
    """A count of people as it may be shown outside the site: 0 as it is, counts from 1 to
    below ``smallest_count`` as ``"< N"``, others rounded half up to a multiple of
    ``count_rounding`` (one that would round to 0 is shown as ``"< base"`` instead)."""
    if count <= 0:
        return 0
    if count < policy.smallest_count:
        return f"< {policy.smallest_count}"
    base = policy.count_rounding
    rounded = (count + base // 2) // base * base
    return rounded if rounded > 0 else f"< {base}"


def _min_optional(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def merge_two(a: Policy, b: Policy) -> Policy:
    """The strictest policy that satisfies both ``a`` and ``b``."""
    kept = {e.key: e for e in b.safe_private}
    safe = frozenset(
        SafePrivate(e.creator, e.element, e.justifications | kept[e.key].justifications)
        for e in a.safe_private
        if e.key in kept
    )
    review = (
        b.review_date
        if a.review_date is None
        else a.review_date
        if b.review_date is None
        else min(a.review_date, b.review_date)
    )
    return Policy(
        smallest_count=max(a.smallest_count, b.smallest_count),
        national_data_opt_out=a.national_data_opt_out or b.national_data_opt_out,
        retention=Retention(
            _min_optional(a.retention.days, b.retention.days),
            a.retention.project_end or b.retention.project_end,
        ),
        allowed_options=a.allowed_options & b.allowed_options,
        safe_private=safe,
        masking=_merge_masking([*a.masking, *b.masking]),
        site=a.site if a.site == b.site else Site(),
        review_date=review,
        # A multiple of both sites' bases: rounded as each of them asks.
        count_rounding=math.lcm(a.count_rounding, b.count_rounding),
    )


def merge(policies: Iterable[Policy]) -> Policy:
    """The strictest merge of one or more policies (order does not matter)."""
    items = list(policies)
    if not items:
        raise ValueError("merge needs at least one policy")
    return reduce(merge_two, items)


# -- provenance: which site made each rule -----------------------------------------------------
@dataclass(frozen=True)
class Harmonised:
    """A merged policy with, for each rule, the sites (by label, in the order given) that made
    it what it is. A rule every site agrees on names them all."""

    policy: Policy
    sites: tuple[str, ...]
    #: Every option: the sites that do not allow it (none: the option is allowed).
    options: Mapping[Option, tuple[str, ...]]
    #: Every private element some site lists: the sites that do not (none: it is kept).
    safe_private: Mapping[tuple[str, int], tuple[str, ...]]
    #: Every rectangle of the merged masking rules, by the rule's key: the sites it comes from.
    masking: Mapping[tuple[tuple[str, str, int, int], Rectangle], tuple[str, ...]]
    smallest_count: tuple[str, ...]
    #: The sites whose rounding is not 1 (the merged base is a multiple of each).
    count_rounding: tuple[str, ...]
    national_data_opt_out: tuple[str, ...]
    retention_days: tuple[str, ...]
    retention_project_end: tuple[str, ...]
    review_date: tuple[str, ...]
    #: Each site's own values of the scalar rules, for showing what was overruled.
    values: Mapping[str, Policy]


def harmonise(sites: Sequence[tuple[str, Policy]]) -> Harmonised:
    """The strictest merge of ``(label, policy)`` pairs, with each rule's provenance."""
    if not sites:
        raise ValueError("harmonise needs at least one policy")
    labels = [label for label, _ in sites]
    if len(set(labels)) != len(labels):
        raise ValueError("site labels must be distinct")
    merged = merge(p for _, p in sites)

    def which(test: Callable[[Policy], bool]) -> tuple[str, ...]:
        return tuple(label for label, p in sites if test(p))

    def unlisted(key: tuple[str, int]) -> tuple[str, ...]:
        return which(lambda p: key not in {e.key for e in p.safe_private})

    def masked_by(key: tuple[str, str, int, int], rect: Rectangle) -> tuple[str, ...]:
        return which(lambda p: any(m.key == key and rect in m.rectangles for m in p.masking))

    def forbidding(option: Option) -> tuple[str, ...]:
        return which(lambda p: option not in p.allowed_options)

    listed = {e.key for _, p in sites for e in p.safe_private}
    days = merged.retention.days
    return Harmonised(
        policy=merged,
        sites=tuple(labels),
        options={o: forbidding(o) for o in Option},
        safe_private={k: unlisted(k) for k in sorted(listed)},
        masking={
            (rule.key, rect): masked_by(rule.key, rect)
            for rule in merged.masking
            for rect in rule.rectangles
        },
        smallest_count=which(lambda p: p.smallest_count == merged.smallest_count),
        count_rounding=which(lambda p: p.count_rounding > 1),
        national_data_opt_out=which(lambda p: p.national_data_opt_out),
        retention_days=which(lambda p: days is not None and p.retention.days == days),
        retention_project_end=which(lambda p: p.retention.project_end),
        review_date=which(
            lambda p: merged.review_date is not None and p.review_date == merged.review_date
        ),
        values=dict(sites),
    )


# -- what one policy allows that another does not ----------------------------------------------
@dataclass(frozen=True, order=True, slots=True)
class Loosening:
    """One thing a policy allows that another does not: the rule and what, in words."""

    rule: str
    detail: str


def _device(rule_key: tuple[str, str, int, int], rules: Iterable[MaskingRule]) -> str:
    for rule in rules:
        if rule.key == rule_key:
            size = (
                f" {rule.columns or 'any'}x{rule.rows or 'any'}"
                if (rule.rows or rule.columns)
                else ""
            )
            return f"{rule.manufacturer} / {rule.model}{size}"
    return "?"  # pragma: no cover - the key comes from the same rules


def _retention_text(r: Retention) -> str:
    parts = ([f"{r.days} days"] if r.days is not None else []) + (
        ["the end of the project"] if r.project_end else []
    )
    return " or ".join(parts) + (", whichever comes first" if len(parts) == 2 else "")


def loosenings(a: Policy, b: Policy) -> list[Loosening]:
    """What ``b`` allows that ``a`` does not, rule by rule (empty when ``b`` is at least as
    strict as ``a`` everywhere). Masks compare rectangle by rectangle, exactly."""
    found = [
        Loosening("allowed_options", o.value)
        for o in Option
        if o in b.allowed_options and o not in a.allowed_options
    ]
    a_private = {e.key for e in a.safe_private}
    found += [
        Loosening("safe_private", f"{c} 0x{e:02X}")
        for c, e in sorted(e.key for e in b.safe_private)
        if (c, e) not in a_private
    ]
    b_masks = {(rule.key, r) for rule in b.masking for r in rule.rectangles}
    found += [
        Loosening(
            "masking",
            f"{_device(key, a.masking)}: x={r.x} y={r.y} "
            f"width={r.width} height={r.height} not masked",
        )
        for key, r in sorted(
            {(rule.key, r) for rule in a.masking for r in rule.rectangles} - b_masks
        )
    ]
    if b.smallest_count < a.smallest_count:
        found.append(
            Loosening(
                "smallest_count", f"counts from {b.smallest_count} to {a.smallest_count - 1} shown"
            )
        )
    if b.count_rounding % a.count_rounding:
        found.append(
            Loosening(
                "count_rounding",
                f"counts rounded to multiples of {b.count_rounding}, not of {a.count_rounding}",
            )
        )
    if a.national_data_opt_out and not b.national_data_opt_out:
        found.append(Loosening("national_data_opt_out", "opted-out patients included"))
    if (
        (b.retention.days is None and a.retention.days is not None)
        or (
            b.retention.days is not None
            and a.retention.days is not None
            and b.retention.days > a.retention.days
        )
        or (a.retention.project_end and not b.retention.project_end)
    ):
        found.append(
            Loosening(
                "retention",
                f"kept {_retention_text(b.retention)} instead of {_retention_text(a.retention)}",
            )
        )
    return found


@dataclass(frozen=True)
class PolicyDiff:
    """``b_allows``: what B allows that A does not; ``a_allows``: the other way round."""

    a_allows: list[Loosening]
    b_allows: list[Loosening]

    @property
    def same(self) -> bool:
        return not (self.a_allows or self.b_allows)


def diff(a: Policy, b: Policy) -> PolicyDiff:
    return PolicyDiff(a_allows=loosenings(b, a), b_allows=loosenings(a, b))


# -- from a policy to the engine's settings ----------------------------------------------------
def deid_settings(
    policy: Policy, options: Iterable[str | Option] = ()
) -> tuple[Profile, frozenset[tuple[str, int]]]:
    """The profile with the ``options`` a project asks for, and the safe-private pairs for
    ``dicom.deid.DeidConfig`` (empty unless Retain Safe Private is asked for). Refuses
    (``PolicyRefusal``) an unknown option or one the policy does not allow."""
    try:
        profile = Profile.of(options)
    except ValueError as exc:
        raise PolicyRefusal(str(exc)) from None
    refused = [o.value for o in Option if o in profile.options - policy.allowed_options]
    if refused:
        allowed = ", ".join(o.value for o in Option if o in policy.allowed_options) or "none"
        raise PolicyRefusal(
            f"the policy does not allow {', '.join(refused)} (it allows: "
            f"{allowed}); ask for fewer options or change the policy."
        )
    safe = (
        frozenset(e.key for e in policy.safe_private)
        if Option.RETAIN_SAFE_PRIVATE in profile.options
        else frozenset()
    )
    return profile, safe
