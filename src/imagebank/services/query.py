"""Searching the archive the DICOM way, for C-FIND and QIDO-RS (and what retrieves send).

``Queries.search`` takes a level, attribute filters in DICOM's matching syntax (keywords or
tags as keys), the projects in scope, and the attributes to return; it answers DICOM JSON
datasets (PS3.18 Annex F). The values come from the index's columns; attributes that are not
columns (an ``includefield``) come from the stored header of the instance or, at study and
series level, of the first instance, as Orthanc and dcm4chee do.

Matching is on the indexed attributes (``domain.matching``). Filters on other attributes
cannot be matched: they are named in ``SearchResult.unsupported`` (QIDO-RS answers them in a
Warning header; C-FIND treats them as return keys, as PS3.4 C.2.2.1 allows).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from imagebank.domain.errors import InvalidInputError
from imagebank.domain.matching import Condition, matching_keywords, parse_match
from imagebank.domain.model import INDEXED_ATTRIBUTES, IndexedAttribute, Level
from imagebank.index import query as sql
from imagebank.services.archive import Archive

#: Query levels by their DICOM names (C-FIND's QueryRetrieveLevel) and QIDO-RS resources.
LEVELS: dict[str, Level] = {
    "PATIENT": Level.SUBJECT, "STUDY": Level.STUDY, "SERIES": Level.SERIES,
    "IMAGE": Level.INSTANCE,
    "patients": Level.SUBJECT, "studies": Level.STUDY, "series": Level.SERIES,
    "instances": Level.INSTANCE,
}

_BY_KEYWORD: dict[str, IndexedAttribute] = {a.keyword: a for a in INDEXED_ATTRIBUTES}
_ORDER = (Level.SUBJECT, Level.STUDY, Level.SERIES, Level.INSTANCE)

#: Attributes computed from the hierarchy rather than stored in a column.
_COUNTS: dict[str, tuple[Level, str]] = {
    "NumberOfPatientRelatedStudies": (Level.SUBJECT, "num_studies"),
    "NumberOfPatientRelatedSeries": (Level.SUBJECT, "num_series"),
    "NumberOfPatientRelatedInstances": (Level.SUBJECT, "num_instances"),
    "NumberOfStudyRelatedSeries": (Level.STUDY, "num_series"),
    "NumberOfStudyRelatedInstances": (Level.STUDY, "num_instances"),
    "ModalitiesInStudy": (Level.STUDY, "modalities_in_study"),
    "NumberOfSeriesRelatedInstances": (Level.SERIES, "num_instances"),
}

#: What each level returns by default (PS3.18 Table 10.6.3-3 to -5, and PS3.4 C.6.1.1).
DEFAULT_RETURN: dict[Level, tuple[str, ...]] = {
    Level.SUBJECT: ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                    "PatientSex", "NumberOfPatientRelatedStudies",
                    "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"),
    Level.STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
                  "ReferringPhysicianName", "PatientName", "PatientID", "IssuerOfPatientID",
                  "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                  "StudyDescription", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances"),
    Level.SERIES: ("StudyInstanceUID", "Modality", "SeriesDescription", "SeriesInstanceUID",
                   "SeriesNumber", "SeriesDate", "SeriesTime", "BodyPartExamined",
                   "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
                   "NumberOfSeriesRelatedInstances"),
    Level.INSTANCE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID",
                     "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames"),
}

#: Keys that are the query's parameters, not attributes (QIDO-RS).
_PARAMETERS = frozenset({"includefield", "limit", "offset", "fuzzymatching", "orderby"})
#: The subject's columns a study row carries (as ``repo.list_studies`` gives them).
_PATIENT_COLUMNS = ("patient_id", "issuer_of_patient_id", "patient_name",
                    "patient_birth_date", "patient_sex")


def keyword_of(key: str) -> str:
    """An attribute's keyword from a keyword or a tag (``00100020`` or ``(0010,0020)``)."""
    text = key.strip()
    compact = text.strip("()").replace(",", "")
    if len(compact) == 8 and all(c in "0123456789abcdefABCDEF" for c in compact):
        keyword = keyword_for_tag(int(compact, 16))
        if keyword:
            return str(keyword)
        raise InvalidInputError(f"{compact.upper()} is not a standard DICOM attribute.")
    if tag_for_keyword(text) is None:
        raise InvalidInputError(f"{text[:64]!r} is not a DICOM keyword or tag.")
    return text


@dataclass
class SearchResult:
    """The matches as DICOM JSON, and the filters that could not be matched on."""

    matches: list[dict[str, Any]] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Search:
    """A parsed query: conditions, ModalitiesInStudy, what to return."""

    level: Level
    conditions: tuple[Condition, ...]
    modalities: tuple[str, ...]
    returned: tuple[str, ...]
    unsupported: tuple[str, ...]
    include_all: bool = False


@functools.cache
def _tag_and_vr(keyword: str) -> tuple[str, str] | None:
    """The keyword's tag (8 hex digits, as DICOM JSON keys it) and VR; None if not a keyword.
    Cached: every match of every search asks for the same dozen."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    return f"{tag:08X}", dictionary_VR(tag)


def _element(keyword: str, value: Any) -> dict[str, Any]:
    known = _tag_and_vr(keyword)
    vr = known[1] if known is not None else "UN"
    element: dict[str, Any] = {"vr": vr}
    if value is None or value == "":
        return element
    if vr == "PN":
        element["Value"] = [{"Alphabetic": str(value)}]
    elif vr in ("IS", "SL", "SS", "UL", "US"):
        element["Value"] = [int(part) for part in str(value).split("\\") if part.strip()]
    elif vr in ("DS", "FL", "FD"):
        element["Value"] = [float(part) for part in str(value).split("\\") if part.strip()]
    else:
        element["Value"] = [part for part in str(value).split("\\")]
    return element


def _from_columns(keyword: str, level: Level) -> bool:
    """Whether the index's rows of a ``level`` query hold ``keyword``'s value."""
    depth = _ORDER.index(level)
    attribute = _BY_KEYWORD.get(keyword)
    if attribute is not None:
        return _ORDER.index(attribute.level) <= depth
    count = _COUNTS.get(keyword)
    return count is not None and _ORDER.index(count[0]) <= depth


class Queries:
    """C-FIND and QIDO-RS over the index (every call in its own read transaction)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    # -- parsing ----------------------------------------------------------------------------
    def parse(self, level: Level, filters: Mapping[str, str], *, fuzzy: bool = False,
              include: Iterable[str] = (), include_all: bool = False) -> Search:
        """A Search from filters (keyword or tag → DICOM matching syntax).

        Raises InvalidInputError for an unknown attribute, a value that can match nothing,
        or a filter below the query's level.
        """
        conditions: list[Condition] = []
        modalities: list[str] = []
        unsupported: list[str] = []
        returned: list[str] = list(DEFAULT_RETURN[level])
        depth = _ORDER.index(level)
        for key, raw in filters.items():
            if key in _PARAMETERS:
                continue
            keyword = keyword_of(key)
            if keyword not in returned:
                returned.append(keyword)
            if keyword == "ModalitiesInStudy":
                modalities.extend(v.strip() for v in str(raw).split("\\")
                                  if v.strip() not in ("", "*"))
                continue
            attribute = _BY_KEYWORD.get(keyword)
            if attribute is None or keyword not in matching_keywords():
                if str(raw).strip(" \x00*"):
                    unsupported.append(keyword)
                continue
            if _ORDER.index(attribute.level) > depth:
                raise InvalidInputError(
                    f"{keyword} is an attribute of the {attribute.level.value} level: it "
                    f"cannot be matched in a {level.value} query.")
            try:
                condition = parse_match(keyword, str(raw), fuzzy=fuzzy)
            except ValueError as exc:
                raise InvalidInputError(f"{exc}.") from None
            if condition is not None:
                conditions.append(condition)
        for key in include:
            keyword = keyword_of(key)
            if keyword not in returned:
                returned.append(keyword)
        if include_all:
            for attribute in INDEXED_ATTRIBUTES:
                if (_ORDER.index(attribute.level) <= depth
                        and attribute.keyword not in returned):
                    returned.append(attribute.keyword)
        return Search(level, tuple(conditions), tuple(modalities), tuple(returned),
                      tuple(unsupported), include_all)

    # -- running ----------------------------------------------------------------------------
    def search(self, search: Search, *, project_ids: Sequence[str] | None,
               limit: int | None = None, offset: int = 0) -> SearchResult:
        """The matches of ``search`` in the projects ``project_ids`` (None: every project)."""
        result = SearchResult(unsupported=list(search.unsupported))
        result.matches.extend(self.iter_search(search, project_ids=project_ids, limit=limit,
                                               offset=offset))
        return result

    def iter_search(self, search: Search, *, project_ids: Sequence[str] | None,
                    limit: int | None = None, offset: int = 0, batch: int = 500
                    ) -> Generator[dict[str, Any], None, None]:
        """The matches of ``search`` one by one, from one streamed query in one read
        transaction (C-FIND: however many match, one batch is held at a time)."""
        needs_header = not all(_from_columns(k, search.level) for k in search.returned)
        with self.archive.sessions() as session:
            for rows in sql.iter_find(
                    session, search.level, search.conditions, project_ids=project_ids,
                    modalities=search.modalities or None, limit=limit, offset=offset,
                    with_metadata=needs_header and search.level is Level.INSTANCE,
                    batch=batch):
                headers: dict[str, str] = {}
                if needs_header and search.level in (Level.STUDY, Level.SERIES) and rows:
                    name = search.level.value
                    headers = sql.first_instance_metadata(session, search.level,
                                                          [r[name]["id"] for r in rows])
                for row in rows:
                    header_text = (row["instance"].get("metadata_json")
                                   if search.level is Level.INSTANCE
                                   else headers.get(row.get(search.level.value, {})
                                                    .get("id", "")))
                    yield self._dataset(search, row, header_text)

    def find_studies(self, search: Search, *, project_ids: Sequence[str] | None,
                     limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """The studies a study-level ``search`` matches, newest first, as the REST API
        lists studies: the study's row with its subject's patient attributes (the POST
        study search, whose criteria travel in a body rather than a URL)."""
        if search.level is not Level.STUDY:
            raise InvalidInputError("find_studies takes a study-level search.")
        with self.archive.sessions() as session:
            rows = sql.find(session, Level.STUDY, search.conditions, project_ids=project_ids,
                            modalities=search.modalities or None, limit=limit, offset=offset)
        return [{**row["study"], **{key: row["subject"].get(key) for key in _PATIENT_COLUMNS}}
                for row in rows]

    def _dataset(self, search: Search, row: Mapping[str, Mapping[str, Any]],
                 header_text: str | None) -> dict[str, Any]:
        header: dict[str, Any] | None = None
        dataset: dict[str, Any] = {}
        for keyword in search.returned:
            known = _tag_and_vr(keyword)
            if known is None:
                continue
            key = known[0]
            attribute = _BY_KEYWORD.get(keyword)
            source = _COUNTS.get(keyword)
            if attribute is not None and attribute.level.value in row:
                dataset[key] = _element(keyword, row[attribute.level.value].get(attribute.column))
            elif source is not None and source[0].value in row:
                dataset[key] = _element(keyword, row[source[0].value].get(source[1]))
            else:
                if header is None:
                    header = json.loads(header_text) if header_text else {}
                found = header.get(key)
                if found is not None and "BulkDataURI" not in found:
                    dataset[key] = found
                elif search.include_all is False:
                    dataset[key] = _element(keyword, None)
        dataset["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
        return {key: dataset[key] for key in sorted(dataset)}

    # -- retrieves --------------------------------------------------------------------------
    def instances(self, project_ids: Sequence[str] | None, *, study_uid: str | None = None,
                  series_uid: str | None = None, sop_uids: Sequence[str] = (),
                  patient_id: str | None = None, with_metadata: bool = False,
                  limit: int | None = None) -> list[dict[str, Any]]:
        """The instance rows (with ``study_instance_uid`` and ``series_instance_uid``) under
        the UIDs given, in the projects in scope, ordered by study, series and number (the
        first ``limit`` of them when given)."""
        filters: dict[str, str] = {}
        if patient_id is not None:
            filters["PatientID"] = patient_id
        if study_uid is not None:
            filters["StudyInstanceUID"] = study_uid
        if series_uid is not None:
            filters["SeriesInstanceUID"] = series_uid
        if sop_uids:
            filters["SOPInstanceUID"] = "\\".join(sop_uids)
        if not filters:
            raise InvalidInputError("A retrieve needs a patient, study, series or instance.")
        search = self.parse(Level.INSTANCE, filters)
        with self.archive.sessions() as session:
            rows = sql.find(session, Level.INSTANCE, search.conditions,
                            project_ids=project_ids, with_metadata=with_metadata,
                            limit=limit)
        found = []
        for row in rows:
            instance = dict(row["instance"])
            instance["study_instance_uid"] = row["study"]["study_instance_uid"]
            instance["series_instance_uid"] = row["series"]["series_instance_uid"]
            found.append(instance)
        return found
