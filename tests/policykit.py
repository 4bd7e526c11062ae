"""Random valid governance policies (hypothesis strategies) for the policy tests.

Small pools of creators, devices and sites make merges overlap often; free text from the
whole of Unicode (what a valid policy may hold) checks that writing and reading agree."""

from __future__ import annotations

from datetime import date

from hypothesis import strategies as st

from imagebank.domain.confidentiality import Option
from imagebank.domain.policy import (
    MaskingRule,
    Policy,
    Rectangle,
    Retention,
    SafePrivate,
    Site,
)


def _valid(text: str, lines: bool = False) -> bool:
    return bool(text) and text == text.strip() and all(
        c.isprintable() or (lines and c == "\n") for c in text)


def texts(most: int, *, lines: bool = False) -> st.SearchStrategy[str]:
    """Text a policy may hold: printable (no control characters, separators other than the
    space, or unassigned code points), without surrounding spaces."""
    alphabet = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"),
                             include_characters=" \n" if lines else " ")
    return st.text(alphabet, min_size=1, max_size=most).map(str.strip).filter(
        lambda t: _valid(t, lines))


CREATORS = st.sampled_from(["SIEMENS MR HEADER", "GEMS_PARM_01", "Philips MR Imaging DD 001"]
                           ) | texts(64).filter(lambda t: "\\" not in t)
ELEMENTS = st.sampled_from([0x0C, 0x0E, 0x39]) | st.integers(0, 0xFF)
REASONS = st.sampled_from(["Diffusion b-value.", "Rescale slope."]) | texts(60, lines=True)
DEVICES = st.sampled_from([("GE Healthcare", "LOGIQ E9"), ("ge healthcare", "logiq  e9"),
                           ("Philips", "EPIQ 7G")]) | st.tuples(texts(64), texts(64))
SIZES = st.sampled_from([(None, None), (768, 1024), (600, 800)]) | st.tuples(
    st.none() | st.integers(1, 65535), st.none() | st.integers(1, 65535))


def _span(draw: st.DrawFn, size: int | None) -> tuple[int, int]:
    """A start and a length that fit in ``size`` pixels (any, up to 65535, without one)."""
    if size is None:
        return draw(st.integers(0, 65535)), draw(st.integers(1, 65535))
    start = draw(st.sampled_from([0]) | st.integers(0, size - 1))
    return start, draw(st.integers(1, size - start))


@st.composite
def rectangles(draw: st.DrawFn, rows: int | None, columns: int | None) -> Rectangle:
    x, width = _span(draw, columns)
    y, height = _span(draw, rows)
    return Rectangle(x, y, width, height)


@st.composite
def masking_rules(draw: st.DrawFn) -> MaskingRule:
    maker, model = draw(DEVICES)
    rows, columns = draw(SIZES)
    rects = draw(st.frozensets(rectangles(rows, columns), min_size=1, max_size=3))
    return MaskingRule(maker, model, rects, rows, columns)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    options = set(draw(st.sets(st.sampled_from(list(Option)))))
    if Option.RETAIN_LONG_FULL_DATES in options:
        options.add(Option.RETAIN_LONG_MODIFIED_DATES)
    safe: dict[tuple[str, int], SafePrivate] = {}
    if Option.RETAIN_SAFE_PRIVATE in options:
        for creator, element in draw(st.lists(st.tuples(CREATORS, ELEMENTS), max_size=4)):
            reasons = draw(st.frozensets(REASONS, min_size=1, max_size=2))
            safe[(creator, element)] = SafePrivate(creator, element, reasons)
    masks = {rule.key: rule for rule in draw(st.lists(masking_rules(), max_size=3))}
    days = draw(st.none() | st.sampled_from([365, 1825]) | st.integers(1, 36525))
    end = draw(st.booleans()) if days is not None else True
    site = draw(st.sampled_from([Site(), Site("Leeds", "RR8", "IG team")])
                | st.builds(Site, st.none() | texts(200),
                            st.none() | st.from_regex(r"[A-Z0-9]{3,10}", fullmatch=True),
                            st.none() | texts(200)))
    return Policy(
        smallest_count=draw(st.sampled_from([5, 8, 10]) | st.integers(1, 10**6)),
        national_data_opt_out=draw(st.booleans()),
        retention=Retention(days, end),
        allowed_options=frozenset(options),
        safe_private=frozenset(safe.values()),
        masking=frozenset(masks.values()),
        site=site,
        review_date=draw(st.none() | st.dates(date(2000, 1, 1), date(2100, 12, 31))),
        count_rounding=draw(st.sampled_from([1, 5, 10]) | st.integers(1, 1000)),
    )
