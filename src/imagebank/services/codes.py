"""Code systems' is-a relations into the index (``imagebank codes import``, decision 0022):
SNOMED CT RF2 relationship files or ``child,parent`` CSV (``ingest.code_relations``), for a
cohort query's ``SYSTEM:<<CODE``. Idempotent: an edge is added once; an RF2 file's retired
is-a relationships are removed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebank.domain.cohort import SYSTEMS
from imagebank.domain.errors import InvalidInputError
from imagebank.index import codes
from imagebank.ingest.code_relations import read_relations
from imagebank.services.archive import Archive


@dataclass(frozen=True)
class CodesSummary:
    system: str
    format: str
    rows: int
    relations: int
    added: int
    removed: int
    problems: int
    problem_lines: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "format": self.format, "rows": self.rows,
                "relations": self.relations, "added": self.added, "removed": self.removed,
                "problems": self.problems}


def import_code_relations(archive: Archive, path: str | Path, system: str) -> CodesSummary:
    """Load the is-a edges of ``path`` as the code system ``system`` (SNOMED, ICD10 ...)."""
    name = system.strip().upper()
    if name not in SYSTEMS:
        raise InvalidInputError(f"Unknown code system {system!r}; the systems are "
                                f"{', '.join(SYSTEMS)}.")
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"Nothing to import at {file}: no such file.")
    relations = read_relations(file)
    if relations.format == "rf2" and name != "SNOMED":
        raise InvalidInputError("An RF2 relationship file is SNOMED CT's: use --system SNOMED.")
    with archive.sessions.begin() as session:
        added = codes.add_code_relations(session, name, relations.active)
        removed = codes.remove_code_relations(session, name, relations.retired)
    return CodesSummary(name, relations.format, relations.rows, len(relations.active), added,
                        removed, relations.problems, tuple(relations.problem_lines))
