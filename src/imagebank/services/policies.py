"""Governance policy files: reading them with clear errors, writing them, harmonising several.

The format is YAML with ``version: 1`` (decision 0016; ``domain.policy`` holds the model and
the strictest merge). Reading is strict: every problem of a file is reported at once, one line
each, as ``FILE:LINE: FIELD.PATH: what is wrong; expected what``. Unknown fields, fields given
twice and YAML aliases are errors, so a typo can never silently weaken a policy. A field may be
left out only where leaving it out is the strictest choice (no options, no private elements,
no masks); the others (the smallest count, the opt-out, retention) must be stated.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from imagebank.domain.confidentiality import Option
from imagebank.domain.policy import (
    POLICY_VERSION,
    Harmonised,
    MaskingRule,
    Policy,
    PolicyDiff,
    PolicyError,
    Rectangle,
    Retention,
    SafePrivate,
    Site,
    deid_settings,
    harmonise,
)

__all__ = ["EXPECTED", "deid_settings", "diff_document", "harmonise_files",
           "harmonised_document", "load_policy", "parse_policy", "policy_document",
           "render_harmonised", "render_policy", "site_labels", "stored_policy",
           "write_text_atomically"]

MAX_BYTES = 1_000_000
MAX_DAYS = 36_525  # 100 years
MAX_PIXELS = 65_535  # Rows and Columns are US (PS3.5)
_ODS_RE = re.compile(r"^[A-Z0-9]{3,10}$")
_HEX_RE = re.compile(r"^0[xX][0-9A-Fa-f]{1,2}$")

#: What each field holds, as the errors say it (and decision 0016 documents it).
EXPECTED = {
    "version": f"{POLICY_VERSION} (the policy format's version)",
    "site": "a mapping with name, ods_code and contact (each optional)",
    "site.name": "the site's name: one line of up to 200 characters",
    "site.ods_code": "the organisation's ODS code: 3 to 10 capital letters and digits, "
                     "e.g. RR8",
    "site.contact": "who answers for the policy: one line of up to 200 characters",
    "allowed_options": "a list of profile option names (write [] for none): "
                       + ", ".join(o.value for o in Option),
    "safe_private": "a list of private elements, each with creator, element and "
                    "justification (write [] for none)",
    "safe_private.creator": "the private creator's value: 1 to 64 characters, no backslash",
    "safe_private.element": "the element's low byte, 0x00 to 0xFF: \"0x10\" or a number",
    "safe_private.justification": "why the element is safe: text, or a list of texts",
    "masking": "a list of masking rules, each with manufacturer, model, rectangles and "
               "optionally rows and columns (write [] for none)",
    "masking.manufacturer": "the Manufacturer (0008,0070) value: 1 to 64 characters",
    "masking.model": "the Manufacturer's Model Name (0008,1090) value: 1 to 64 characters",
    "masking.rows": f"the image's Rows, 1 to {MAX_PIXELS}",
    "masking.columns": f"the image's Columns, 1 to {MAX_PIXELS}",
    "masking.rectangles": "a list of rectangles, each with x, y, width and height in pixels",
    "masking.rectangles.x": f"a pixel column, 0 to {MAX_PIXELS}",
    "masking.rectangles.y": f"a pixel row, 0 to {MAX_PIXELS}",
    "masking.rectangles.width": f"a width in pixels, 1 to {MAX_PIXELS}",
    "masking.rectangles.height": f"a height in pixels, 1 to {MAX_PIXELS}",
    "smallest_count": "a whole number, at least 1: the smallest count that may be shown "
                      "outside the site",
    "count_rounding": "a whole number, at least 1: counts shown outside the site are rounded "
                      "to a multiple of it (1: not rounded)",
    "national_data_opt_out": "true or false: whether the National Data Opt-out applies",
    "retention": f"a number of days (1 to {MAX_DAYS}), \"project-end\", or a mapping with "
                 "days and/or project_end: true",
    "retention.days": f"a number of days, 1 to {MAX_DAYS}",
    "retention.project_end": "true or false: whether data is deleted when the project ends",
    "review_date": "a date, YYYY-MM-DD",
}
_TOP = {"version": True, "site": False, "allowed_options": False, "safe_private": False,
        "masking": False, "smallest_count": True, "count_rounding": False,
        "national_data_opt_out": True,
        "retention": True, "review_date": False}


class YamlLoader(yaml.SafeLoader):
    """Safe YAML without aliases: a policy (or a mapping file, decision 0024) is plain text a
    reviewer reads top to bottom."""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.get_mark()
            raise yaml.MarkedYAMLError(problem="aliases (*name) are not allowed in a policy",
                                       problem_mark=mark)
        return super().compose_node(parent, index)


def _show(value: Any) -> str:
    """A value as an error may quote it: short ones whole, others only by their kind."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**12 else "a very large number"
    if isinstance(value, str):
        if len(value) <= 40 and value.isprintable():
            return f'"{value}"'
        return f"a text of {len(value):,} characters"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, datetime | date | float):
        text = str(value)
        return text if len(text) <= 40 else "a value"
    return "a value"


def _generic(path: str) -> str:
    """``masking[2].rectangles[0].width`` → ``masking.rectangles.width`` (for EXPECTED)."""
    return re.sub(r"\[\d+\]", "", path)


class YamlReader:
    """Walks the YAML nodes (so each problem has its line), collecting every problem."""

    def __init__(self, source: str, loader: YamlLoader) -> None:
        self.source = source
        self.loader = loader
        self._problems: list[tuple[int, str]] = []

    @property
    def problems(self) -> list[str]:
        """Every problem found, one line each, in the order of the file."""
        return [text for _, text in sorted(self._problems, key=lambda p: p[0])]

    def problem(self, node: Node, path: str, what: str) -> None:
        line = node.start_mark.line + 1
        where = f"{self.source}:{line}"
        self._problems.append((line, f"{where}: {path}: {what}" if path else f"{where}: {what}"))

    def wrong(self, node: Node, path: str, what: str) -> None:
        self.problem(node, path, f"{what}; expected {EXPECTED[_generic(path)]}")

    def value(self, node: Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError, yaml.YAMLError):  # e.g. 2026-13-01 as a date
            return node.value if isinstance(node, ScalarNode) else None

    def mapping(self, node: Node, path: str, fields: Mapping[str, bool]) -> dict[str, Node]:
        if not isinstance(node, MappingNode):
            self.problem(node, path, f"{self.kind(node)} is not a mapping; expected a mapping "
                         f"with the fields {', '.join(fields)}")
            return {}
        seen: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.problem(key_node, path, f"{_show(key)} is not a field name")
                continue
            here = f"{path}.{key}" if path else key
            if key in seen:
                self.problem(key_node, here, f"given twice (first on line "
                             f"{seen[key].start_mark.line + 1}); expected it once")
            elif key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
                hint = (f"did you mean {close[0]}? " if close else "") + (
                    "expected one of: " + ", ".join(fields))
                name = key if len(key) <= 40 and key.isprintable() else _show(key)
                self.problem(key_node, f"{path}.{name}" if path else name,
                             f"unknown field; {hint}")
            else:
                seen[key] = value_node
        for name, required in fields.items():
            if required and name not in seen:
                here = f"{path}.{name}" if path else name
                self.wrong(node, here, "missing")
        return seen

    def sequence(self, node: Node, path: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.wrong(node, path, f"{self.kind(node)} is not a list")
            return []
        return list(node.value)

    def kind(self, node: Node) -> str:
        if isinstance(node, ScalarNode):
            return _show(self.value(node))
        return "a mapping" if isinstance(node, MappingNode) else "a list"

    def integer(self, node: Node, path: str, low: int, high: int | None = None) -> int | None:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, int) or isinstance(value, bool):
            self.wrong(node, path, f"{self.kind(node)} is not a whole number")
            return None
        if value < low or (high is not None and value > high):
            self.wrong(node, path, f"{_show(value)} is out of range")
            return None
        return value

    def boolean(self, node: Node, path: str) -> bool | None:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, bool):
            self.wrong(node, path, f"{self.kind(node)} is not true or false")
            return None
        return value

    def text(self, node: Node, path: str, most: int, *, lines: bool = False,
             check: Callable[[str], bool] | None = None) -> str | None:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str):
            self.wrong(node, path, f"{self.kind(node)} is not text")
            return None
        text = value.strip()
        if not text:
            self.wrong(node, path, "empty text")
        elif len(text) > most:
            self.wrong(node, path, f"{len(text):,} characters are too many")
        elif not all(c.isprintable() or (lines and c == "\n") for c in text):
            self.wrong(node, path, "control characters or line breaks are not allowed")
        elif check is not None and not check(text):
            self.wrong(node, path, f"{_show(text)} is not valid")
        else:
            return text
        return None


def _read_site(r: YamlReader, node: Node) -> Site:
    fields = r.mapping(node, "site", {"name": False, "ods_code": False, "contact": False})
    name = r.text(fields["name"], "site.name", 200) if "name" in fields else None
    ods = None
    if "ods_code" in fields:
        ods = r.text(fields["ods_code"], "site.ods_code", 10,
                     check=lambda t: bool(_ODS_RE.fullmatch(t.upper())))
    contact = r.text(fields["contact"], "site.contact", 200) if "contact" in fields else None
    return Site(name, ods.upper() if ods else None, contact)


def _read_options(r: YamlReader, node: Node) -> set[Option]:
    chosen: dict[Option, int] = {}
    names = [o.value for o in Option]
    for i, item in enumerate(r.sequence(node, "allowed_options")):
        path = f"allowed_options[{i}]"
        value = r.value(item) if isinstance(item, ScalarNode) else None
        if not isinstance(value, str) or value not in names:
            close = difflib.get_close_matches(value, names, n=1, cutoff=0.5) if isinstance(
                value, str) else []
            hint = f"did you mean {close[0]}?" if close else "expected one of: " + ", ".join(
                names)
            r.problem(item, path, f"{r.kind(item)} is not a profile option; {hint}")
        elif Option(value) in chosen:
            r.problem(item, path, f"{value} is listed twice (also allowed_options"
                      f"[{chosen[Option(value)]}]); expected each option once")
        else:
            chosen[Option(value)] = i
    if Option.RETAIN_LONG_FULL_DATES in chosen and (
            Option.RETAIN_LONG_MODIFIED_DATES not in chosen):
        r.problem(node, "allowed_options", "retain_long_full_dates is allowed but "
                  "retain_long_modified_dates, which reveals less, is not; expected both "
                  "(or neither)")
    return set(chosen)


def _read_element(r: YamlReader, node: Node, path: str) -> int | None:
    value = r.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, str) and _HEX_RE.fullmatch(value.strip()):
        return int(value.strip(), 16)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFF:
        return value
    r.wrong(node, path, f"{r.kind(node)} is not an element byte")
    return None


def _read_safe_private(r: YamlReader, node: Node) -> list[SafePrivate]:
    entries: list[SafePrivate] = []
    where: dict[tuple[str, int], int] = {}
    fields = {"creator": True, "element": True, "justification": True}
    for i, item in enumerate(r.sequence(node, "safe_private")):
        path = f"safe_private[{i}]"
        got = r.mapping(item, path, fields)
        creator = (r.text(got["creator"], f"{path}.creator", 64,
                          check=lambda t: "\\" not in t) if "creator" in got else None)
        element = _read_element(r, got["element"], f"{path}.element") if (
            "element" in got) else None
        reasons: list[str] = []
        if "justification" in got:
            jnode, jpath = got["justification"], f"{path}.justification"
            items = ([(jnode, jpath)] if not isinstance(jnode, SequenceNode) else
                     [(n, f"{jpath}[{k}]") for k, n in enumerate(jnode.value)])
            if not items:
                r.wrong(jnode, jpath, "an empty list")
            for n, p in items:
                text = r.text(n, p, 1000, lines=True)
                reasons += [text] if text else []
            if len(reasons) != len(items):
                reasons = []
        if creator is None or element is None or not reasons:
            continue
        if (creator, element) in where:
            r.problem(item, path, f"repeats safe_private[{where[(creator, element)]}] (same "
                      "creator and element); expected each element once")
            continue
        where[(creator, element)] = i
        entries.append(SafePrivate(creator, element, frozenset(reasons)))
    return entries


def _read_rectangle(r: YamlReader, node: Node, path: str, rows: int | None,
                    columns: int | None) -> Rectangle | None:
    got = r.mapping(node, path, {"x": True, "y": True, "width": True, "height": True})
    x, y, width, height = (
        r.integer(got[k], f"{path}.{k}", low, MAX_PIXELS) if k in got else None
        for k, low in (("x", 0), ("y", 0), ("width", 1), ("height", 1)))
    if x is None or y is None or width is None or height is None:
        return None
    if columns is not None and x + width > columns:
        r.problem(node, path, f"reaches column {x + width} of an image {columns} columns wide"
                  "; expected x + width at most columns")
    elif rows is not None and y + height > rows:
        r.problem(node, path, f"reaches row {y + height} of an image {rows} rows high; "
                  "expected y + height at most rows")
    else:
        return Rectangle(x, y, width, height)
    return None


def _read_masking(r: YamlReader, node: Node) -> list[MaskingRule]:
    rules: list[MaskingRule] = []
    where: dict[tuple[str, str, int, int], int] = {}
    fields = {"manufacturer": True, "model": True, "rows": False, "columns": False,
              "rectangles": True}
    for i, item in enumerate(r.sequence(node, "masking")):
        path = f"masking[{i}]"
        got = r.mapping(item, path, fields)
        maker, model = (r.text(got[k], f"{path}.{k}", 64) if k in got else None
                        for k in ("manufacturer", "model"))
        rows, columns = (r.integer(got[k], f"{path}.{k}", 1, MAX_PIXELS) if k in got else None
                         for k in ("rows", "columns"))
        bad_size = any(k in got and v is None for k, v in (("rows", rows),
                                                           ("columns", columns)))
        rects: list[Rectangle | None] = []
        if "rectangles" in got:
            rpath = f"{path}.rectangles"
            nodes = r.sequence(got["rectangles"], rpath)
            if not nodes and isinstance(got["rectangles"], SequenceNode):
                r.wrong(got["rectangles"], rpath, "an empty list")
            rects = [_read_rectangle(r, n, f"{rpath}[{k}]", rows, columns)
                     for k, n in enumerate(nodes)]
        if maker is None or model is None or bad_size or not rects or None in rects:
            continue
        rule = MaskingRule(maker, model, frozenset(x for x in rects if x is not None),
                           rows, columns)
        if rule.key in where:
            r.problem(item, path, f"is for the same device and size as masking"
                      f"[{where[rule.key]}]; expected one rule with all its rectangles")
            continue
        where[rule.key] = i
        rules.append(rule)
    return rules


def _read_retention(r: YamlReader, node: Node) -> Retention | None:
    if isinstance(node, MappingNode):
        got = r.mapping(node, "retention", {"days": False, "project_end": False})
        days = r.integer(got["days"], "retention.days", 1, MAX_DAYS) if "days" in got else None
        end = r.boolean(got["project_end"], "retention.project_end") if (
            "project_end" in got) else False
        if ("days" in got and days is None) or end is None:
            return None
        if days is None and not end:
            r.wrong(node, "retention", "no limit is stated")
            return None
        return Retention(days, end)
    value = r.value(node) if isinstance(node, ScalarNode) else None
    if value == "project-end":
        return Retention(None, project_end=True)
    if isinstance(value, int) and not isinstance(value, bool):
        days = r.integer(node, "retention", 1, MAX_DAYS)
        return Retention(days) if days is not None else None
    r.wrong(node, "retention", f"{r.kind(node)} is not a retention")
    return None


def _read_date(r: YamlReader, node: Node) -> date | None:
    value = r.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value.strip())
        except ValueError:
            pass
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    r.wrong(node, "review_date", f"{r.kind(node)} is not a date")
    return None


def parse_policy(text: str, source: str = "policy") -> Policy:
    """A policy from YAML text; ``PolicyError`` lists every problem, naming ``source``."""
    try:
        loader = YamlLoader(text)  # refuses characters YAML does not allow, at once
    except yaml.YAMLError as exc:
        problem = getattr(exc, "reason", None) or "cannot be read"
        raise PolicyError([f"{source}: not valid YAML: {problem} (a control character "
                           "or an unpaired surrogate)"]) from None
    try:
        root = loader.get_single_node()
        reader = YamlReader(source, loader)
        policy = _read(reader, root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or "cannot be read"
        raise PolicyError([f"{where}: not valid YAML: {problem}"]) from None
    finally:
        loader.dispose()
    if root is None:
        raise PolicyError([f"{source}: empty; expected a policy with version: "
                           f"{POLICY_VERSION}, smallest_count, national_data_opt_out, "
                           "retention"])
    if reader.problems or policy is None:
        raise PolicyError(reader.problems)
    return policy


def _read(r: YamlReader, root: Node) -> Policy | None:
    for key, node in root.value if isinstance(root, MappingNode) else ():
        if isinstance(key, ScalarNode) and key.value == "version" and isinstance(
                node, ScalarNode) and r.value(node) != POLICY_VERSION:
            r.wrong(node, "version", f"{r.kind(node)} is not a version this imagebank reads")
            version = r.value(node)
            if isinstance(version, int) and not isinstance(version, bool):
                return None  # another format: its fields would only add noise
    got = r.mapping(root, "", _TOP)
    if "version" in got and not isinstance(got["version"], ScalarNode):
        r.wrong(got["version"], "version", f"{r.kind(got['version'])} is not a version this "
                "imagebank reads")
    site = _read_site(r, got["site"]) if "site" in got else Site()
    options = _read_options(r, got["allowed_options"]) if "allowed_options" in got else set()
    safe = _read_safe_private(r, got["safe_private"]) if "safe_private" in got else []
    if safe and Option.RETAIN_SAFE_PRIVATE not in options:
        r.problem(got["safe_private"], "safe_private", f"{len(safe)} elements listed but "
                  "retain_safe_private is not in allowed_options; expected the option "
                  "allowed, or no list")
    masking = _read_masking(r, got["masking"]) if "masking" in got else []
    count = (r.integer(got["smallest_count"], "smallest_count", 1)
             if "smallest_count" in got else None)
    rounding = (r.integer(got["count_rounding"], "count_rounding", 1)
                if "count_rounding" in got else 1)
    opt_out = (r.boolean(got["national_data_opt_out"], "national_data_opt_out")
               if "national_data_opt_out" in got else None)
    retention = _read_retention(r, got["retention"]) if "retention" in got else None
    review = _read_date(r, got["review_date"]) if "review_date" in got else None
    if r.problems or count is None or opt_out is None or retention is None or rounding is None:
        return None
    try:
        return Policy(count, opt_out, retention, frozenset(options), frozenset(safe),
                      frozenset(masking), site, review, rounding)
    except ValueError as exc:  # pragma: no cover - every invariant is checked above
        r.problem(root, "", str(exc))
        return None


def read_yaml_file(path: str | os.PathLike[str], what: str, most: int,
                   error: Callable[[list[str]], Exception]) -> str:
    """The text of a short YAML file (a policy, a mapping), or ``error`` with the one
    problem: missing, unreadable, larger than ``most`` bytes, not UTF-8."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(most + 1)
    except FileNotFoundError:
        raise error([f"{source}: no such file"]) from None
    except OSError as exc:
        raise error([f"{source}: cannot be read ({exc.strerror or 'error'})"]) from None
    if len(data) > most:
        raise error([f"{source}: larger than {most:,} bytes; expected {what}, which is a "
                     "short text file"])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error([f"{source}: not UTF-8 text; expected a YAML file"]) from None


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file (``PolicyError`` lists every problem)."""
    return parse_policy(read_yaml_file(path, "a policy", MAX_BYTES, PolicyError), str(path))


def site_labels(paths: Sequence[str]) -> list[str]:
    """Short names for sites in messages and comments: the file names without ``.yaml``,
    or the paths as given when two names clash."""
    stems = [_printable(Path(p).stem) for p in paths]
    return stems if len(set(stems)) == len(stems) else [_printable(p) for p in paths]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def harmonise_files(paths: Sequence[Path | str]) -> tuple[Harmonised, list[str]]:
    """Load every policy (reporting the problems of all files at once) and harmonise them;
    returns the result and each site's label, in the order given."""
    policies: list[Policy] = []
    problems: list[str] = []
    for path in paths:
        try:
            policies.append(load_policy(path))
        except PolicyError as exc:
            problems += exc.problems
    if problems:
        raise PolicyError(problems)
    labels = site_labels([str(p) for p in paths])
    return harmonise(list(zip(labels, policies, strict=True))), labels


# -- writing -----------------------------------------------------------------------------------
def _element(value: int) -> str:
    return f"0x{value:02X}"


def _sorted_rules(rules: Iterable[MaskingRule]) -> list[MaskingRule]:
    return sorted(rules, key=lambda r: r.key)


def policy_document(policy: Policy) -> dict[str, Any]:
    """The normalised policy as plain data (the YAML and JSON forms)."""
    doc: dict[str, Any] = {"version": POLICY_VERSION}
    site = {k: v for k, v in (("name", policy.site.name), ("ods_code", policy.site.ods_code),
                              ("contact", policy.site.contact)) if v is not None}
    if site:
        doc["site"] = site
    doc["allowed_options"] = [o.value for o in Option if o in policy.allowed_options]
    doc["safe_private"] = [
        {"creator": e.creator, "element": _element(e.element),
         "justification": (min(e.justifications) if len(e.justifications) == 1
                           else sorted(e.justifications))}
        for e in sorted(policy.safe_private, key=lambda e: e.key)]
    doc["masking"] = [
        {"manufacturer": m.manufacturer, "model": m.model,
         **({"rows": m.rows} if m.rows is not None else {}),
         **({"columns": m.columns} if m.columns is not None else {}),
         "rectangles": [{"x": r.x, "y": r.y, "width": r.width, "height": r.height}
                        for r in sorted(m.rectangles)]}
        for m in _sorted_rules(policy.masking)]
    doc["smallest_count"] = policy.smallest_count
    if policy.count_rounding != 1:
        doc["count_rounding"] = policy.count_rounding
    doc["national_data_opt_out"] = policy.national_data_opt_out
    doc["retention"] = {**({"days": policy.retention.days}
                           if policy.retention.days is not None else {}),
                        "project_end": policy.retention.project_end}
    if policy.review_date is not None:
        doc["review_date"] = policy.review_date.isoformat()
    return doc


def _quote(text: str) -> str:
    """A YAML double-quoted scalar that reads back as ``text``, whatever it holds."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable() and c not in "\x85\u2028\u2029\ufeff":
            out.append(c)
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return _quote(str(value))


def _with(line: str, comment: str | None) -> str:
    return f"{line}  # {comment}" if comment else line


Comments = Callable[[str, Any], str | None]


def render_policy(policy: Policy, *, header: Sequence[str] = (),
                  harmonised: Harmonised | None = None) -> str:
    """The policy as YAML that ``parse_policy`` reads back to the same policy; with
    ``harmonised``, each rule carries a comment naming the sites that set it."""
    doc = policy_document(policy)
    note = _Notes(harmonised)
    lines = [f"# {_printable(h)}" for h in header]
    lines.append(f"version: {POLICY_VERSION}")
    if "site" in doc:
        lines.append("site:")
        lines += [f"  {k}: {_scalar(v)}" for k, v in doc["site"].items()]
    lines.append("allowed_options:" + ("" if doc["allowed_options"] else " []"))
    lines += [_with(f"  - {o}", note.option(o)) for o in doc["allowed_options"]]
    lines += note.forbidden_options()
    lines.append("safe_private:" + ("" if doc["safe_private"] else " []"))
    for e in doc["safe_private"]:
        lines.append(_with(f"  - creator: {_quote(e['creator'])}", note.kept_private()))
        lines.append(f"    element: {_quote(e['element'])}")
        reasons = e["justification"]
        if isinstance(reasons, str):
            lines.append(f"    justification: {_quote(reasons)}")
        else:
            lines.append("    justification:")
            lines += [f"      - {_quote(j)}" for j in reasons]
    lines += note.left_out_private()
    lines.append("masking:" + ("" if doc["masking"] else " []"))
    for rule, m in zip(_sorted_rules(policy.masking), doc["masking"], strict=True):
        lines.append(f"  - manufacturer: {_quote(m['manufacturer'])}")
        lines.append(f"    model: {_quote(m['model'])}")
        lines += [f"    {k}: {m[k]}" for k in ("rows", "columns") if k in m]
        lines.append("    rectangles:")
        for rect in sorted(rule.rectangles):
            lines.append(_with(f"      - {{x: {rect.x}, y: {rect.y}, width: {rect.width}, "
                               f"height: {rect.height}}}", note.mask(rule, rect)))
    lines.append(_with(f"smallest_count: {doc['smallest_count']}", note.smallest_count()))
    if "count_rounding" in doc:
        lines.append(_with(f"count_rounding: {doc['count_rounding']}", note.count_rounding()))
    lines.append(_with(f"national_data_opt_out: {_scalar(doc['national_data_opt_out'])}",
                       note.opt_out()))
    lines.append("retention:")
    if "days" in doc["retention"]:
        lines.append(_with(f"  days: {doc['retention']['days']}", note.retention_days()))
    lines.append(_with(f"  project_end: {_scalar(doc['retention']['project_end'])}",
                       note.project_end()))
    if "review_date" in doc:
        lines.append(_with(f"review_date: {doc['review_date']}", note.review_date()))
    return "\n".join(lines) + "\n"


class _Notes:
    """The provenance comments of a harmonised policy (nothing without one)."""

    def __init__(self, h: Harmonised | None) -> None:
        self.h = h

    def _sites(self, labels: Sequence[str], every: str = "all sites") -> str:
        assert self.h is not None
        if len(labels) == len(self.h.sites) and len(labels) > 1:
            return every
        return ", ".join(labels)

    def _others(self, pick: Callable[[Policy], Any], winners: Sequence[str]) -> str:
        assert self.h is not None
        rest = [f"{label} {_show(pick(self.h.values[label])).replace('nothing', 'none')}"
                for label in self.h.sites if label not in winners]
        return f" (others: {', '.join(rest)})" if rest else ""

    def option(self, name: str) -> str | None:
        return None if self.h is None else "allowed by all sites"

    def forbidden_options(self) -> list[str]:
        if self.h is None:
            return []
        rows = [f"#   - {o.value}  # " + (f"not allowed by {self._sites(by)}" if self._sites(
            by, "") else "no site allows it") for o, by in self.h.options.items() if by]
        return ["# not allowed:", *rows] if rows else []

    def kept_private(self) -> str | None:
        return None if self.h is None else "listed by all sites"

    def left_out_private(self) -> list[str]:
        if self.h is None:
            return []
        rows = [f"#   - {_printable(c)} {_element(e)}  # not listed by {self._sites(by)}"
                for (c, e), by in self.h.safe_private.items() if by]
        return ["# left out:", *rows] if rows else []

    def mask(self, rule: MaskingRule, rect: Rectangle) -> str | None:
        if self.h is None:
            return None
        return "from " + self._sites(self.h.masking[(rule.key, rect)])

    def smallest_count(self) -> str | None:
        if self.h is None:
            return None
        by = self.h.smallest_count
        return f"set by {self._sites(by)}" + self._others(lambda p: p.smallest_count, by)

    def count_rounding(self) -> str | None:
        if self.h is None:
            return None
        return "a multiple of the rounding of " + self._sites(self.h.count_rounding)

    def opt_out(self) -> str | None:
        if self.h is None:
            return None
        by = self.h.national_data_opt_out
        return f"applied by {self._sites(by)}" if by else "no site applies it"

    def retention_days(self) -> str | None:
        if self.h is None:
            return None
        by = self.h.retention_days
        return f"set by {self._sites(by)}" + self._others(lambda p: p.retention.days, by)

    def project_end(self) -> str | None:
        if self.h is None:
            return None
        by = self.h.retention_project_end
        return f"set by {self._sites(by)}" if by else "no site asks for it"

    def review_date(self) -> str | None:
        if self.h is None:
            return None
        return "set by " + self._sites(self.h.review_date)


def render_harmonised(h: Harmonised, paths: Sequence[str]) -> str:
    """The merged policy as YAML with the sites that set each rule in comments."""
    header = [f"The strictest merge of {len(h.sites)} site policies, computed by imagebank "
              "policy harmonise:"]
    for label, path in zip(h.sites, paths, strict=True):
        site = h.values[label].site
        about = ", ".join(x for x in (site.name, site.ods_code) if x)
        header.append(f"  {label}: {path}" + (f" ({about})" if about else ""))
    header.append("Do not edit by hand: harmonise the sites' policies again instead.")
    return render_policy(h.policy, header=header, harmonised=h)


def harmonised_document(h: Harmonised, paths: Sequence[str]) -> dict[str, Any]:
    """The merged policy and each rule's provenance, as plain data (``--json``)."""
    p = h.policy
    return {
        "policy": policy_document(p),
        "sites": [{"label": label, "file": path, "name": h.values[label].site.name,
                   "ods_code": h.values[label].site.ods_code}
                  for label, path in zip(h.sites, paths, strict=True)],
        "provenance": {
            "allowed_options": [{"option": o.value, "allowed": not by, "not_allowed_by": list(by)}
                                for o, by in h.options.items()],
            "safe_private": [{"creator": c, "element": _element(e), "kept": not by,
                              "not_listed_by": list(by)}
                             for (c, e), by in h.safe_private.items()],
            "masking": [{"manufacturer": rule.manufacturer, "model": rule.model,
                         "rows": rule.rows, "columns": rule.columns,
                         "rectangle": {"x": r.x, "y": r.y, "width": r.width,
                                       "height": r.height},
                         "from": list(h.masking[(rule.key, r)])}
                        for rule in _sorted_rules(p.masking) for r in sorted(rule.rectangles)],
            "smallest_count": {"value": p.smallest_count, "set_by": list(h.smallest_count)},
            "national_data_opt_out": {"value": p.national_data_opt_out,
                                      "set_by": list(h.national_data_opt_out)},
            "retention_days": {"value": p.retention.days, "set_by": list(h.retention_days)},
            "retention_project_end": {"value": p.retention.project_end,
                                      "set_by": list(h.retention_project_end)},
            "review_date": {"value": p.review_date.isoformat() if p.review_date else None,
                            "set_by": list(h.review_date)},
        },
    }


def diff_document(d: PolicyDiff, a: str, b: str) -> dict[str, Any]:
    return {"a": a, "b": b, "same": d.same,
            "b_allows": [{"rule": x.rule, "detail": x.detail} for x in d.b_allows],
            "a_allows": [{"rule": x.rule, "detail": x.detail} for x in d.a_allows]}


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def project_policy(paths: Sequence[Path | str], options: Sequence[str] = ()) -> str:
    """A project's policy, as stored with it: the strictest merge of its sites' policy files,
    rendered with each rule's provenance; refuses options the merge does not allow (and every
    problem of every file, at once)."""
    if not paths:
        raise PolicyError(["a research project needs its sites' policies (--policy FILE, "
                           "one per site)"])
    harmonised, labels = harmonise_files(paths)
    return _project_policy(harmonised, labels, options)


def project_policy_texts(texts: Sequence[str], options: Sequence[str] = ()) -> str:
    """As ``project_policy``, from the policies' texts (the API): sites labelled by number."""
    if not texts:
        raise PolicyError(["a research project needs its sites' policies (one per site)"])
    policies: list[Policy] = []
    problems: list[str] = []
    labels = [f"site {n}" for n in range(1, len(texts) + 1)]
    for label, text in zip(labels, texts, strict=True):
        try:
            policies.append(parse_policy(text, label))
        except PolicyError as exc:
            problems += exc.problems
    if problems:
        raise PolicyError(problems)
    return _project_policy(harmonise(list(zip(labels, policies, strict=True))), labels,
                           options)


#: The first line of a project's policy as ``project_policy`` writes it (decision 0019),
#: followed by the sites' labels; ``stored_policy`` reads them back from it.
MERGED_HEADER = "imagebank project policy: the strictest merge of "


def _project_policy(harmonised: Harmonised, labels: Sequence[str],
                    options: Sequence[str]) -> str:
    from imagebank.domain.policy import deid_settings

    deid_settings(harmonised.policy, options)
    header = [MERGED_HEADER + ", ".join(labels)]
    return render_policy(harmonised.policy, header=header, harmonised=harmonised)


_MERGED_FROM = re.compile(rf"^# {re.escape(MERGED_HEADER)}(.+)$", re.M)


def stored_policy(project: Mapping[str, Any]) -> dict[str, Any] | None:
    """A research project's policy as the API and the web UI show it (decision 0031): the
    YAML stored with it (``text``), its normalised form (``policy``, what ``imagebank policy
    show --json`` prints), the sites it merges (``sites``: their labels, from the first
    line, or the one site it names) and the options its releases use (``options``). None
    for a project without one (a site's identifiable project)."""
    text = project.get("policy")
    if not text:
        return None
    policy = parse_policy(text, f"project {project['id']}")
    merged = _MERGED_FROM.search(text)
    if merged is not None:
        sites = [s.strip() for s in merged.group(1).split(", ") if s.strip()]
    else:
        named = policy.site.name or policy.site.ods_code
        sites = [named] if named else []
    return {"text": text, "policy": policy_document(policy), "sites": sites,
            "options": sorted(json.loads(project.get("deid_options") or "[]"))}
