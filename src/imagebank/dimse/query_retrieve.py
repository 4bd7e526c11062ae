"""DICOM Query/Retrieve over DIMSE (PS3.4 Annex C): C-FIND, C-MOVE and C-GET, and C-ECHO of
remote AEs.

Patient Root and Study Root information models. Everything is scoped to the project of the
called AE title (the association's project, admitted by ``scp.DicomListener``):

* C-FIND turns the identifier into filters in DICOM's matching syntax (an element with a value
  is a filter, an empty one a return key; sequences are ignored) for ``Queries``, pages
  through the matches and answers one pending identifier per match holding exactly the
  requested keys, plus QueryRetrieveLevel, SpecificCharacterSet (ISO_IR 192) and
  RetrieveAETitle. Filters on attributes that are not indexed cannot be matched: they are
  answered as return keys with status 0xFF01 (PS3.4 C.2.2.1, C.4.1.1.4).
* C-MOVE and C-GET resolve the instances under the unique keys given (PS3.4 C.4.2.2.1) and
  send each object as stored: read from the object store one at a time, its elements kept
  undecoded (pydicom's raw elements), in its own transfer syntax where the peer accepts it
  (explicit and implicit VR little endian are converted into each other by pynetdicom).
  A C-MOVE destination must be a configured remote AE (``imagebank ae add``); its
  sub-association proposes one presentation context per stored (SOP class, transfer syntax).
* One audit event per request (route ``dimse c-find`` / ``c-move`` / ``c-get``) with counts,
  the level and the names of the keys, never their values (no UIDs, no patient data), written
  before the final response is sent. Error comments never quote the identifier's values.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Protocol

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from imagebank.domain.errors import ImagebankError, InvalidInputError
from imagebank.domain.model import INDEXED_ATTRIBUTES, Level
from imagebank.services.audit import make_event
from imagebank.services.nodes import Nodes
from imagebank.services.query import LEVELS, Queries
from imagebank.services.runtime import Runtime

log = logging.getLogger("imagebank.dimse")

#: The SOP classes served, each with its information model ("patient" or "study" root).
FIND_MODELS = {PatientRootQueryRetrieveInformationModelFind: "patient",
               StudyRootQueryRetrieveInformationModelFind: "study"}
MOVE_MODELS = {PatientRootQueryRetrieveInformationModelMove: "patient",
               StudyRootQueryRetrieveInformationModelMove: "study"}
GET_MODELS = {PatientRootQueryRetrieveInformationModelGet: "patient",
              StudyRootQueryRetrieveInformationModelGet: "study"}
QUERY_RETRIEVE_SOP_CLASSES = (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS)

#: Matches fetched from the index at a time (a query matching 100k instances is streamed).
PAGE = 500
#: PS3.7 C.4.2.1.5: the sub-operation counts are US, so a retrieve sends at most this many.
MAX_SUBOPERATIONS = 65535
#: PS3.8 9.3.2.2: an association proposes at most 128 presentation contexts.
MAX_CONTEXTS = 128

_FIND_PENDING, _FIND_PENDING_WARNING = 0xFF00, 0xFF01
_PENDING, _CANCEL, _SUCCESS, _WARNING = 0xFF00, 0xFE00, 0x0000, 0xB000
_NO_MATCH_FOR_CLASS = 0xA900  # Identifier does not match SOP Class
_UNABLE = 0xC000  # Unable to process
_ALL_FAILED = 0xA702  # Unable to perform sub-operations
_DESTINATION_UNKNOWN = 0xA801

#: Elements of an identifier that are not keys.
_NOT_KEYS = frozenset({0x00080005, 0x00080052, 0x00080054})  # charset, level, RetrieveAETitle
_INSTANCE_AVAILABILITY = 0x00080056
_DEPTH = {Level.SUBJECT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.INSTANCE: 3}
_ATTRIBUTE_LEVEL = {a.keyword: a.level for a in INDEXED_ATTRIBUTES}
_UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
               "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


class AssociationState(Protocol):
    """What the listener knows of an admitted association (``scp._Association``)."""

    project_id: str
    calling: str
    address: str
    counts: dict[str, int]
    lock: Any


class Refused(Exception):
    """A request answered with a failure status; ``comment`` never quotes a value."""

    def __init__(self, status: int, comment: str, keyword: str | None = None) -> None:
        super().__init__(comment)
        self.status, self.comment, self.keyword = status, comment, keyword

    def dataset(self) -> Dataset:
        answer = Dataset()
        answer.Status = self.status
        answer.ErrorComment = _short(self.comment)
        tag = tag_for_keyword(self.keyword) if self.keyword else None
        if tag is not None:
            answer.OffendingElement = [tag]
        return answer


def _short(text: str, limit: int = 64) -> str:
    """An ErrorComment (LO: at most 64 characters), cut at a word."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[:limit - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."


# -- identifiers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FindQuery:
    """A C-FIND identifier as the index's query: the level, the filters (keyword → DICOM
    matching syntax; "" for a return key), and every requested key in tag order."""

    level: str
    filters: dict[str, str]
    keys: tuple[str, ...]
    #: Requested keys of a level below the query's: answered empty.
    below: tuple[str, ...] = ()


def _level(identifier: Dataset, model: str) -> str:
    value = identifier.get("QueryRetrieveLevel")
    level = str(value or "").strip().upper()
    if level not in _UNIQUE_KEY:
        raise Refused(_NO_MATCH_FOR_CLASS, "QueryRetrieveLevel must be PATIENT, STUDY, SERIES "
                      "or IMAGE", "QueryRetrieveLevel")
    if level == "PATIENT" and model == "study":
        raise Refused(_NO_MATCH_FOR_CLASS, "The Study Root model has no PATIENT level",
                      "QueryRetrieveLevel")
    return level


def _value_text(value: Any) -> str | None:
    """A key's value in DICOM matching syntax (multiple values joined by backslashes); None
    for values that cannot be a filter (binary, sequences)."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return None
    if isinstance(value, MultiValue | list | tuple):
        parts = [_value_text(v) for v in value]
        return None if any(p is None for p in parts) else "\\".join(str(p) for p in parts)
    if isinstance(value, Dataset):
        return None
    return str(value)


def find_query(identifier: Dataset, model: str) -> FindQuery:
    """The query a C-FIND identifier asks (PS3.4 C.4.1.1.3); raises Refused."""
    level = _level(identifier, model)
    depth = _DEPTH[LEVELS[level]]
    filters: dict[str, str] = {}
    keys: list[str] = []
    below: list[str] = []
    for element in identifier:
        tag = int(element.tag)
        if (tag in _NOT_KEYS or element.tag.is_private or element.tag.element == 0
                or element.tag.group == 0x0002 or element.VR == "SQ" or not element.keyword):
            continue
        keyword = str(element.keyword)
        keys.append(keyword)
        if tag == _INSTANCE_AVAILABILITY:
            continue
        try:
            text = _value_text(element.value)
        except Exception:  # noqa: BLE001 - a value pydicom cannot convert: not a filter
            raise Refused(_UNABLE, f"{keyword} has a value that cannot be read",
                          keyword) from None
        if text is None:
            continue
        text = text.strip(" \x00")
        attribute_level = _ATTRIBUTE_LEVEL.get(keyword)
        if attribute_level is not None and _DEPTH[attribute_level] > depth:
            if text not in ("", "*"):
                raise Refused(_UNABLE, f"{keyword} cannot be matched at the {level} level",
                              keyword)
            below.append(keyword)
            continue
        filters[keyword] = text
    return FindQuery(level, filters, tuple(keys), tuple(below))


@dataclass(frozen=True)
class RetrieveQuery:
    """A C-MOVE or C-GET identifier: the level and the unique keys given (PS3.4 C.4.2.2.1).
    Lists of UIDs are kept as given; keys above the level narrow the match when present."""

    level: str
    patient_id: str | None = None
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_uids: tuple[str, ...] = ()


def _uids(identifier: Dataset, keyword: str) -> tuple[str, ...]:
    text = _value_text(identifier.get(keyword)) or ""
    return tuple(u.strip(" \x00") for u in text.split("\\") if u.strip(" \x00"))


def retrieve_query(identifier: Dataset, model: str) -> RetrieveQuery:
    level = _level(identifier, model)
    patient = (_value_text(identifier.get("PatientID")) or "").strip(" \x00")
    if patient and ("*" in patient or "?" in patient or "\\" in patient):
        raise Refused(_UNABLE, "PatientID in a retrieve is one value, without wildcards",
                      "PatientID")
    query = RetrieveQuery(level, patient or None, _uids(identifier, "StudyInstanceUID"),
                          _uids(identifier, "SeriesInstanceUID"),
                          _uids(identifier, "SOPInstanceUID"))
    present = {"PATIENT": query.patient_id, "STUDY": query.study_uids,
               "SERIES": query.series_uids, "IMAGE": query.sop_uids}[level]
    if not present:
        unique = _UNIQUE_KEY[level]
        raise Refused(_NO_MATCH_FOR_CLASS, f"A {level} retrieve needs {unique}", unique)
    return query


def storage_contexts(rows: Sequence[dict[str, Any]]) -> list[PresentationContext]:
    """What a C-MOVE sub-association proposes: each stored (SOP class, transfer syntax) in a
    context of its own, then, per SOP class stored uncompressed, one offering explicit and
    implicit VR little endian (pynetdicom converts between them); at most 128."""
    exact: dict[tuple[str, str], None] = {}
    for row in rows:
        if row.get("sop_class_uid") and row.get("transfer_syntax_uid"):
            exact[(row["sop_class_uid"], row["transfer_syntax_uid"])] = None
    contexts = [build_context(sop, [syntax]) for sop, syntax in exact]
    fallback: dict[str, None] = {}
    for sop, syntax in exact:
        uid = UID(syntax)
        if uid.is_transfer_syntax and not uid.is_compressed and uid.is_little_endian:
            fallback[sop] = None
    contexts += [build_context(sop, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
                 for sop in fallback]
    return contexts[:MAX_CONTEXTS]


# -- sub-operation results ------------------------------------------------------------------
@dataclass
class _Tally:
    """C-STORE sub-operation results, from the C-STORE-RSPs the peer sends back."""

    total: int = 0
    attempted: int = 0
    completed: int = 0
    warning: int = 0
    established: bool = False

    def on_response(self, event: Any) -> None:
        message = event.message
        if isinstance(message, C_STORE_RSP):
            status = int(message.command_set.Status)
            kind = STORAGE_SERVICE_CLASS_STATUS.get(status, ("Failure",))[0]
            if kind == "Success":
                self.completed += 1
            elif kind == "Warning":
                self.warning += 1

    def on_established(self, _event: Any) -> None:
        self.established = True

    @property
    def failed(self) -> int:
        return max(0, self.attempted - self.completed - self.warning)

    def final_status(self) -> int:
        """The final status pynetdicom answers once every sub-operation is done."""
        if not self.failed and not self.warning:
            return _SUCCESS
        return _ALL_FAILED if self.failed == self.total else _WARNING


@dataclass
class _Request:
    """One C-FIND/C-MOVE/C-GET request being served, for its audit event."""

    service: str
    action: str
    state: AssociationState | None
    model: str
    level: str | None = None
    keys: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)
    audited: bool = False


# -- the service ----------------------------------------------------------------------------
class QueryRetrieve:
    """The C-FIND, C-MOVE and C-GET handlers of a ``DicomListener``."""

    def __init__(self, runtime: Runtime, state_of: Callable[[Any], AssociationState | None]
                 ) -> None:
        self.runtime = runtime
        self.archive = runtime.archive
        self.queries = Queries(runtime.archive)
        self.nodes = Nodes(runtime.archive.sessions)
        self.state_of = state_of

    @staticmethod
    def contexts() -> tuple[str, ...]:
        return QUERY_RETRIEVE_SOP_CLASSES

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        return [(evt.EVT_C_FIND, self.on_find), (evt.EVT_C_MOVE, self.on_move),
                (evt.EVT_C_GET, self.on_get)]

    # -- audit ------------------------------------------------------------------------------
    def _audit(self, request: _Request, status: int, outcome: str, **counts: int) -> None:
        if request.audited:
            return
        request.audited = True
        state = request.state
        detail = {"model": f"{request.model}_root", **request.detail, **counts}
        if request.keys:
            detail["keys"] = list(request.keys)
        if request.level:
            detail["level"] = request.level
        event = make_event(
            actor=state.calling if state else None, via="dimse",
            client=state.address if state else None, method="DIMSE",
            route=f"dimse {request.service}", action=request.action,
            project_id=state.project_id if state else None,
            level=LEVELS[request.level].value if request.level else None,
            status=status, outcome=outcome, detail=json.dumps(detail, sort_keys=True))
        try:
            self.runtime.audit.record(event).result(timeout=30)
        except Exception:  # noqa: BLE001 - logged; the answer is already decided
            log.error("audit event of a DICOM %s could not be written", request.service)
        if state is not None:
            with state.lock:
                for name, value in counts.items():
                    key = {"matches": "found", "completed": "retrieved",
                           "failed": "retrieve_failed"}.get(name)
                    if key:
                        state.counts[key] = state.counts.get(key, 0) + value

    # -- C-FIND -----------------------------------------------------------------------------
    def on_find(self, event: Any) -> Iterator[tuple[Any, Dataset | None]]:
        request = _Request("c-find", "search", self.state_of(event.assoc),
                           FIND_MODELS.get(str(event.request.AffectedSOPClassUID), "study"))
        matches = 0
        try:
            if request.state is None:  # pragma: no cover - never admitted, never asked
                raise Refused(_UNABLE, "Association not admitted")
            query = self._decoded(event, find_query, request)
            request.level, request.keys = query.level, query.keys
            try:
                search = self.queries.parse(LEVELS[query.level], query.filters)
            except InvalidInputError as exc:
                raise Refused(_UNABLE, exc.message, _offending(exc.message, query.keys)
                              ) from None
            pending = _FIND_PENDING_WARNING if search.unsupported else _FIND_PENDING
            if search.unsupported:
                request.detail["unsupported"] = list(search.unsupported)
            called = _called(event)
            found = self.queries.iter_search(search, project_ids=[request.state.project_id],
                                             batch=PAGE)
            try:
                for match in found:
                    if event.is_cancelled:
                        self._audit(request, _CANCEL, "cancelled", matches=matches)
                        yield _CANCEL, None
                        return
                    matches += 1
                    yield pending, _answer(query, match, called)
            finally:
                found.close()  # ends the read transaction, whatever ended the answers
            self._audit(request, _SUCCESS, "ok", matches=matches)
        except Refused as refused:
            self._audit(request, refused.status, "rejected", matches=matches)
            yield refused.dataset(), None
        except Exception as exc:  # noqa: BLE001 - answered; only its kind is logged
            # (a database error's text may quote the query's values: never logged)
            code = exc.code if isinstance(exc, ImagebankError) else type(exc).__name__
            log.error("C-FIND could not be answered: %s", code)
            self._audit(request, _UNABLE, "error", matches=matches)
            yield Refused(_UNABLE, "The index could not be read").dataset(), None
        finally:  # the association ended while answering
            self._audit(request, 0, "aborted", matches=matches)

    # -- C-MOVE -----------------------------------------------------------------------------
    def on_move(self, event: Any) -> Iterator[Any]:
        request = _Request("c-move", "download", self.state_of(event.assoc),
                           MOVE_MODELS.get(str(event.request.AffectedSOPClassUID), "study"))
        title = _text(event.move_destination)
        try:
            remote = self.nodes.destination(title) if title else None
        except ImagebankError:
            remote = None
        if request.state is None or remote is None:
            request.detail["destination"] = title[:16] or None
            self._audit(request, _DESTINATION_UNKNOWN, "rejected")
            yield None, None
            return
        request.detail["destination"] = remote["name"]
        tally = _Tally()
        handlers = [(evt.EVT_DIMSE_RECV, tally.on_response),
                    (evt.EVT_ESTABLISHED, tally.on_established)]
        try:
            rows = self._resolve(event, request)
        except Refused as refused:
            # pynetdicom wants the destination before any status: it gets a Verification-only
            # sub-association, one failed sub-operation, and the reason.
            try:
                yield remote["host"], remote["port"], {
                    "contexts": [build_context(Verification)], "evt_handlers": handlers}
                yield 1
                self._audit(request, refused.status, "rejected")
                yield refused.dataset(), None
            finally:  # the destination could not be reached: pynetdicom answered 0xA801
                self._audit(request, _DESTINATION_UNKNOWN, "failed")
            return
        tally.total = len(rows)
        yield remote["host"], remote["port"], {"contexts": storage_contexts(rows),
                                               "evt_handlers": handlers}
        if not rows:
            self._audit(request, _SUCCESS, "ok", instances=0, completed=0, failed=0,
                        warning=0)
        yield from self._send(event, request, rows, tally)

    # -- C-GET ------------------------------------------------------------------------------
    def on_get(self, event: Any) -> Iterator[Any]:
        request = _Request("c-get", "download", self.state_of(event.assoc),
                           GET_MODELS.get(str(event.request.AffectedSOPClassUID), "study"))
        tally = _Tally(established=True)
        try:
            if request.state is None:  # pragma: no cover - never admitted, never asked
                raise Refused(_UNABLE, "Association not admitted")
            rows = self._resolve(event, request)
        except Refused as refused:
            yield 1
            self._audit(request, refused.status, "rejected")
            yield refused.dataset(), None
            return
        tally.total = len(rows)
        if not rows:
            self._audit(request, _SUCCESS, "ok", instances=0, completed=0, failed=0,
                        warning=0)
        event.assoc.bind(evt.EVT_DIMSE_RECV, tally.on_response)
        try:
            yield from self._send(event, request, rows, tally)
        finally:
            event.assoc.unbind(evt.EVT_DIMSE_RECV, tally.on_response)

    # -- retrieves --------------------------------------------------------------------------
    def _resolve(self, event: Any, request: _Request) -> list[dict[str, Any]]:
        """The instances a C-MOVE/C-GET identifier names, in the association's project."""
        query = self._decoded(event, retrieve_query, request)
        request.level = query.level
        request.keys = tuple(k for k, v in (
            ("PatientID", query.patient_id), ("StudyInstanceUID", query.study_uids),
            ("SeriesInstanceUID", query.series_uids), ("SOPInstanceUID", query.sop_uids)) if v)
        assert request.state is not None
        try:
            rows = self.queries.instances(
                [request.state.project_id], patient_id=query.patient_id,
                study_uid="\\".join(query.study_uids) or None,
                series_uid="\\".join(query.series_uids) or None, sop_uids=query.sop_uids,
                limit=MAX_SUBOPERATIONS + 1)  # one more tells "too many" (never all of them)
        except InvalidInputError as exc:
            raise Refused(_UNABLE, exc.message, _offending(exc.message, request.keys)
                          ) from None
        except Exception as exc:  # noqa: BLE001 - answered; only its kind is logged
            code = exc.code if isinstance(exc, ImagebankError) else type(exc).__name__
            log.error("%s could not be answered: %s", request.service.upper(), code)
            raise Refused(_UNABLE, "The index could not be read") from None
        if len(rows) > MAX_SUBOPERATIONS:
            raise Refused(_UNABLE, f"More than {MAX_SUBOPERATIONS} instances: retrieve "
                          "series by series")
        return rows

    def _send(self, event: Any, request: _Request, rows: list[dict[str, Any]], tally: _Tally
              ) -> Iterator[Any]:
        """Yield the number of sub-operations, then each instance as stored."""
        def counts() -> dict[str, int]:
            return {"instances": tally.total, "completed": tally.completed,
                    "failed": tally.failed if tally.established else tally.total,
                    "warning": tally.warning}

        try:
            yield len(rows)
            for row in rows:
                if event.is_cancelled:
                    self._audit(request, _CANCEL, "cancelled", **counts())
                    yield _CANCEL, None
                    return
                tally.attempted += 1
                yield _PENDING, self._load(row)
            status = tally.final_status()
            self._audit(request, status, "ok" if status == _SUCCESS else (
                "failed" if status == _ALL_FAILED else "partial"), **counts())
        finally:  # the destination refused the association, or the caller went away
            if not tally.established:
                self._audit(request, _DESTINATION_UNKNOWN, "failed", **counts())
            else:
                self._audit(request, 0, "aborted", **counts())

    def _load(self, row: dict[str, Any]) -> Dataset:
        """The stored object, its elements left undecoded until pynetdicom encodes them (in
        the same transfer syntax: written back byte for byte)."""
        try:
            return dcmread(BytesIO(self.archive.store.get(row["object_key"])))
        except Exception as exc:  # noqa: BLE001 - counted as a failed sub-operation
            log.error("stored object of instance %s could not be read (%s)", row["id"],
                      type(exc).__name__)
            unreadable = Dataset()  # no SOPClassUID: pynetdicom counts it as failed
            unreadable.SOPInstanceUID = row["sop_instance_uid"]
            return unreadable

    @staticmethod
    def _decoded(event: Any, parse: Callable[[Dataset, str], Any], request: _Request) -> Any:
        try:
            identifier = event.identifier
        except Exception:  # noqa: BLE001 - whatever pydicom raises on a broken identifier
            raise Refused(_UNABLE, "The identifier could not be decoded") from None
        try:
            return parse(identifier, request.model)
        except Refused:
            raise
        except Exception:  # noqa: BLE001 - a value pydicom cannot convert
            raise Refused(_UNABLE, "The identifier could not be read") from None


def _answer(query: FindQuery, match: dict[str, Any], called: str) -> Dataset:
    """One C-FIND response identifier: exactly the requested keys, from the match."""
    chosen: dict[str, Any] = {}
    for keyword in query.keys:
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        key = f"{tag:08X}"
        element = match.get(key) if keyword not in query.below else None
        chosen[key] = element if _plain(element) else {"vr": dictionary_VR(tag)}
        if tag == _INSTANCE_AVAILABILITY:
            chosen[key] = {"vr": "CS", "Value": ["ONLINE"]}
    try:
        answer = Dataset.from_json(chosen)
    except Exception:  # noqa: BLE001 - an odd stored value: that key is answered empty
        answer = Dataset()
        for key, element in chosen.items():
            try:
                answer.update(Dataset.from_json({key: element}))
            except Exception:  # noqa: BLE001
                tag = int(key, 16)
                answer.add_new(tag, dictionary_VR(tag), None)
    answer.SpecificCharacterSet = "ISO_IR 192"
    answer.QueryRetrieveLevel = query.level
    answer.RetrieveAETitle = called
    return answer


def _plain(element: Any) -> bool:
    """Whether a DICOM JSON element is one a response can carry: text, numbers or person
    names (no sequences, no bulk data), as our DICOM JSON writer makes them."""
    if not isinstance(element, dict) or "vr" not in element:
        return False
    if element["vr"] == "SQ" or "BulkDataURI" in element:
        return False
    if "InlineBinary" in element:
        return isinstance(element["InlineBinary"], str)
    values = element.get("Value") or []
    if not isinstance(values, list):
        return False
    for value in values:
        if element["vr"] == "PN":
            if not (isinstance(value, dict) and all(isinstance(v, str)
                                                    for v in value.values())):
                return False
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            return False
    return True


def _offending(message: str, keys: Sequence[str]) -> str | None:
    """The key a parse error names (its messages start with the keyword)."""
    return next((k for k in sorted(keys, key=len, reverse=True) if message.startswith(k)),
                None)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip()


def _called(event: Any) -> str:
    return _text(event.assoc.requestor.primitive.called_ae_title)


# -- C-ECHO of remote AEs -------------------------------------------------------------------
@dataclass(frozen=True)
class EchoResult:
    ok: bool
    #: Why not, in words (empty when ok).
    reason: str
    milliseconds: float


def echo(host: str, port: int, ae_title: str, *, calling_ae_title: str,
         timeout: float = 10.0) -> EchoResult:
    """C-ECHO a remote AE (PS3.7 9.1.5): connect, associate, echo, release."""
    started = time.monotonic()

    def result(reason: str = "") -> EchoResult:
        return EchoResult(not reason, reason, (time.monotonic() - started) * 1000)

    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return result("the host name could not be resolved")
    ae = AE(ae_title=calling_ae_title)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    assoc = ae.associate(host, port, ae_title=ae_title)
    try:
        if assoc.is_established:
            status = assoc.send_c_echo()
            code = int(status.Status) if status is not None and "Status" in status else None
            if code == 0:
                return result()
            return result("no answer to the C-ECHO" if code is None
                          else f"the C-ECHO was answered with status 0x{code:04X}")
        if assoc.is_rejected:
            primitive = assoc.acceptor.primitive
            diagnostic = (getattr(primitive, "result_source", None),
                          getattr(primitive, "diagnostic", None))
            if diagnostic == (1, 3):
                return result(f"association rejected: the remote AE does not accept the "
                              f"calling AE title {calling_ae_title}")
            if diagnostic == (1, 7):
                return result(f"association rejected: the remote AE is not called {ae_title}")
            why = str(getattr(primitive, "reason_str", "") or "no reason given")
            transient = " (temporarily)" if getattr(primitive, "result", None) == 2 else ""
            return result(f"association rejected{transient}: {why[:1].lower() + why[1:]}")
        # pynetdicom reports a connection that failed as an abort too.
        return result(_unreachable(host, port, timeout))
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _unreachable(host: str, port: int, timeout: float) -> str:
    """Why no association could be made, in words (pynetdicom does not say)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return f"no association (the remote AE aborted it or gave no answer in {timeout:g} s)"
    except ConnectionRefusedError:
        return "connection refused (nothing listens on that port)"
    except TimeoutError:
        return f"no answer in {timeout:g} s"
    except OSError as exc:
        return f"cannot connect ({exc.strerror or type(exc).__name__})"
