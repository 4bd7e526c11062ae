"""Is-a relations of a code system, for cohort queries' ``SYSTEM:<<CODE`` (decision 0022).

Two inputs, told apart by their first line:

- **SNOMED CT RF2 relationships** (``sct2_Relationship_*.txt``, ``sct2_StatedRelationship_*``;
  tab-separated, header ``id effectiveTime active moduleId sourceId destinationId
  relationshipGroup typeId characteristicTypeId modifierId``): the rows of type
  116680003 |Is a|; ``sourceId`` is the child, ``destinationId`` the parent. A Full release
  holds every version of a relationship: the latest ``effectiveTime`` of each ``id`` decides
  whether it is active. A (child, parent) pair is active when any of its relationships is;
  a pair whose relationships are all inactive is reported as retired.
- **CSV**: a header ``child,parent`` and one direct edge a row (any code system).

A line that cannot be read is a ``RelationProblem`` naming the file's line, never its values.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imagebank.domain.errors import InvalidInputError

#: SNOMED CT's 116680003 |Is a (attribute)|.
IS_A = "116680003"
RF2_COLUMNS = ("id", "effectiveTime", "active", "moduleId", "sourceId", "destinationId",
               "relationshipGroup", "typeId", "characteristicTypeId", "modifierId")
#: Problems kept (the count is always complete).
MAX_PROBLEMS = 100


@dataclass
class Relations:
    """What a file says: the active (child, parent) edges, and the pairs it retires."""

    format: str
    active: set[tuple[str, str]] = field(default_factory=set)
    retired: set[tuple[str, str]] = field(default_factory=set)
    rows: int = 0
    problems: int = 0
    problem_lines: list[str] = field(default_factory=list)

    def problem(self, where: str) -> None:
        self.problems += 1
        if len(self.problem_lines) < MAX_PROBLEMS:
            self.problem_lines.append(where)


def read_relations(path: Path) -> Relations:
    """The edges of an RF2 relationship file or a ``child,parent`` CSV (see the module)."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {path} ({exc.strerror or 'unreadable'}).") from exc
    with handle:
        try:
            first = handle.readline()
            header = first.rstrip("\r\n")
            if tuple(header.split("\t")) == RF2_COLUMNS:
                return _rf2(path, handle)
            if [c.strip().lower() for c in header.split(",")] == ["child", "parent"]:
                return _csv(path, handle)
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{path} is not UTF-8 text.") from exc
    raise InvalidInputError(
        f"{path} is neither an RF2 relationship file (its header starts 'id\\teffectiveTime"
        "\\tactive') nor a CSV file with the header 'child,parent'.")


def _rf2(path: Path, lines: Iterator[str]) -> Relations:
    relations = Relations("rf2")
    # id -> (effectiveTime, active, child, parent): the latest version of each relationship
    latest: dict[str, tuple[str, bool, str, str]] = {}
    for number, line in enumerate(lines, start=2):
        cells = line.rstrip("\r\n").split("\t")
        if cells == [""]:
            continue
        relations.rows += 1
        if len(cells) != len(RF2_COLUMNS) or cells[2] not in ("0", "1") or not all(
                cells[i] for i in (0, 1, 4, 5, 7)):
            relations.problem(f"{path}:{number}")
            continue
        if cells[7] != IS_A:
            continue
        known = latest.get(cells[0])
        if known is None or cells[1] >= known[0]:
            latest[cells[0]] = (cells[1], cells[2] == "1", cells[4], cells[5])
    seen: set[tuple[str, str]] = set()
    for _, active, child, parent in latest.values():
        (relations.active if active else seen).add((child, parent))
    relations.retired = seen - relations.active
    return relations


def _csv(path: Path, lines: Iterator[str]) -> Relations:
    relations = Relations("csv")
    for number, row in enumerate(csv.reader(lines), start=2):
        if not row or row == [""]:
            continue
        relations.rows += 1
        cells = [c.strip() for c in row]
        if len(cells) != 2 or not all(cells) or any(len(c) > 255 for c in cells):
            relations.problem(f"{path}:{number}")
            continue
        relations.active.add((cells[0], cells[1]))
    return relations
