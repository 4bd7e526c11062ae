"""Mapping files for clinical tables (``imagebank clinical import --mapping``, decision 0024):
YAML read with the care of a policy file (``services.policies``). Every problem is reported at
once, one line each, as ``FILE:LINE: FIELD.PATH: what is wrong; expected what``; unknown
fields, fields given twice and YAML aliases are errors. ``domain.clinical_mapping`` holds the
model and its rules; ``docs/clinical/mapping-example.yaml`` is an example.

    version: 1
    source: gp-pathology           # optional: names the extract (row IDs are unique in it)
    delimiter: ","                 # optional: CSV only; default: sniffed
    empty_values: ["", "NULL"]     # optional: cell texts that mean no value
    columns:                       # field: the column it is read from
      patient: nhs_number
      code: test_code
      value: result
      unit: units
      date: taken
    fixed:                         # field: one value for every row
      issuer: NHS
      kind: observation
      system: LOINC
    date_formats:                  # optional: strptime formats (default: ISO 8601)
      date: "%d/%m/%Y %H:%M"
"""

from __future__ import annotations

import os
import re

import yaml
from yaml.nodes import Node, ScalarNode

from imagebank.domain.clinical_mapping import (
    FIELDS,
    MAPPING_VERSION,
    MappingError,
    TableMapping,
    mapping_problems,
)
from imagebank.services.policies import YamlLoader, YamlReader, read_yaml_file

__all__ = ["load_mapping", "parse_mapping"]

MAX_BYTES = 100_000
_TOP = {"version": True, "source": False, "delimiter": False, "empty_values": False,
        "columns": True, "fixed": False, "date_formats": False}
_DATE_FIELDS = {"date": False, "end_date": False, "birth_date": False}
EXPECTED = {
    "version": f"{MAPPING_VERSION} (the mapping format's version)",
    "source": "a short name of the extract: letters, digits, - _ . (up to 64)",
    "delimiter": 'the CSV delimiter: one character, e.g. "," or ";" or "\\t"',
    "empty_values": 'a list of cell texts that mean no value, e.g. ["", "NULL", "NA"]',
    "columns": "a mapping of fields to column names: " + ", ".join(FIELDS),
    "fixed": "a mapping of fields to one value for every row: "
             + ", ".join(f for f, r in FIELDS.items() if r.fixed),
    "date_formats": "a mapping of date, end_date and birth_date to strptime formats",
    **{f"columns.{f}": "a column name: text of up to 200 characters" for f in FIELDS},
    **{f"fixed.{f}": "a value: text of up to 200 characters" for f in FIELDS},
    **{f"date_formats.{f}": "a strptime format, e.g. %d/%m/%Y" for f in _DATE_FIELDS},
}
_SOURCE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class _MappingLoader(YamlLoader):
    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.MarkedYAMLError(problem="aliases (*name) are not allowed in a mapping",
                                       problem_mark=self.get_mark())
        return super().compose_node(parent, index)


class _MappingReader(YamlReader):
    def wrong(self, node: Node, path: str, what: str) -> None:
        self.problem(node, path, f"{what}; expected {EXPECTED[path]}")

    def scalar_text(self, node: Node, path: str) -> str | None:
        """Text, or a number as written (a code or column name YAML reads as a number)."""
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = node.value
        if not isinstance(value, str):
            self.wrong(node, path, f"{self.kind(node)} is not text")
        elif len(value) > 200:
            self.wrong(node, path, f"{len(value):,} characters are too many")
        elif not value.isprintable():
            self.wrong(node, path, "control characters or line breaks are not allowed")
        else:
            return value.strip()
        return None


def _names(r: _MappingReader, node: Node, path: str, fields: dict[str, bool]
           ) -> tuple[dict[str, str], dict[str, Node]]:
    got = r.mapping(node, path, fields)
    values: dict[str, str] = {}
    for name, value_node in got.items():
        text = r.scalar_text(value_node, f"{path}.{name}")
        if text is not None:
            values[name] = text
    return values, got


def _empty_values(r: _MappingReader, node: Node) -> frozenset[str] | None:
    items = r.sequence(node, "empty_values")
    values: set[str] = set()
    for i, item in enumerate(items):
        value = r.value(item) if isinstance(item, ScalarNode) else None
        if not isinstance(value, str) or len(value) > 40 or not value.isprintable():
            r.problem(item, f"empty_values[{i}]", f"{r.kind(item)} is not a short text; "
                      f"expected {EXPECTED['empty_values']}")
            continue
        values.add(value.strip())
    return frozenset(values) if isinstance(node, yaml.SequenceNode) else None


def _read(r: _MappingReader, root: Node) -> TableMapping | None:
    got = r.mapping(root, "", _TOP)
    if "version" in got:
        version = r.value(got["version"]) if isinstance(got["version"], ScalarNode) else None
        if version != MAPPING_VERSION or isinstance(version, bool):
            r.wrong(got["version"], "version", f"{r.kind(got['version'])} is not a version "
                    "this imagebank reads")
    source = "table"
    if "source" in got:
        source = r.text(got["source"], "source", 64,
                        check=lambda t: bool(_SOURCE_RE.fullmatch(t))) or source
    delimiter = None
    if "delimiter" in got:
        value = r.value(got["delimiter"]) if isinstance(got["delimiter"], ScalarNode) else None
        if isinstance(value, str):
            delimiter = value
        else:
            r.wrong(got["delimiter"], "delimiter", f"{r.kind(got['delimiter'])} is not text")
    empty = _empty_values(r, got["empty_values"]) if "empty_values" in got else None
    every = dict.fromkeys(FIELDS, False)  # unknown names are typos; the rules are the domain's
    columns, column_nodes = (_names(r, got["columns"], "columns", every) if "columns" in got
                             else ({}, {}))
    fixed, fixed_nodes = _names(r, got["fixed"], "fixed", every) if "fixed" in got else ({}, {})
    formats, format_nodes = (_names(r, got["date_formats"], "date_formats", _DATE_FIELDS)
                             if "date_formats" in got else ({}, {}))
    nodes = {**{f"columns.{k}": n for k, n in column_nodes.items()},
             **{f"fixed.{k}": n for k, n in fixed_nodes.items()},
             **{f"date_formats.{k}": n for k, n in format_nodes.items()}}
    for path, what in mapping_problems(columns, fixed, formats, delimiter):
        if "columns" not in got and (path.startswith("columns.")
                                     or what.startswith("a format for columns.")):
            continue  # columns itself is reported missing: these would only add noise
        if path.startswith("columns.") and path not in nodes:
            node = got["columns"]  # a required field that is missing: where columns are
        else:
            node = nodes.get(path) or got.get(path) or root
        r.problem(node, path, what)
    if r.problems:
        return None
    return TableMapping(columns, fixed, formats, source, delimiter,
                        empty if empty is not None else frozenset({""}))


def parse_mapping(text: str, source: str = "mapping") -> TableMapping:
    """A mapping from YAML text; ``MappingError`` lists every problem, naming ``source``."""
    try:
        loader = _MappingLoader(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "reason", None) or "cannot be read"
        raise MappingError([f"{source}: not valid YAML: {problem}"]) from None
    try:
        root = loader.get_single_node()
        reader = _MappingReader(source, loader)
        mapping = _read(reader, root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or "cannot be read"
        raise MappingError([f"{where}: not valid YAML: {problem}"]) from None
    finally:
        loader.dispose()
    if root is None:
        raise MappingError([f"{source}: empty; expected a mapping with version: "
                            f"{MAPPING_VERSION} and columns"])
    if reader.problems or mapping is None:
        raise MappingError(reader.problems)
    return mapping


def load_mapping(path: str | os.PathLike[str]) -> TableMapping:
    """Read and validate a mapping file (``MappingError`` lists every problem)."""
    return parse_mapping(read_yaml_file(path, "a mapping", MAX_BYTES, MappingError), str(path))
