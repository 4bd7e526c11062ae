"""The DICOM listener: C-ECHO and C-STORE (pynetdicom), with the REST API's rules.

* An association is admitted only if its *called* AE title is a project's and its *calling*
  AE title (and address, when one is set) is on that project's list; anything else gets an
  A-ASSOCIATE-RJ (called or calling AE title not recognised) and an audit event.
* C-STORE hands the dataset, as received (never decoded and re-encoded), to the shared
  ingest pipeline (``Archive.store_objects``): stored or identical duplicate → Success;
  a conflict or a rejected object → a failure status with a reason code in ErrorComment,
  the object kept in quarantine.
* One audit event per association (admitted or not) with its counts; pynetdicom's logging of
  identifiers is off and its logger quiet, so no patient data reaches a log line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from imagebank.dimse import tuning
from imagebank.dimse.query_retrieve import QueryRetrieve
from imagebank.domain.errors import ImagebankError, StorageError
from imagebank.services.audit import make_event
from imagebank.services.nodes import Nodes
from imagebank.services.runtime import Runtime

log = logging.getLogger("imagebank.dimse")

_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
# Private and new storage SOP classes are archived too (as Orthanc and dcm4chee do).
_config.UNRESTRICTED_STORAGE_SERVICE = True
logging.getLogger("pynetdicom").setLevel(logging.WARNING)
tuning.install()

DEFAULT_AE_TITLE = "IMAGEBANK"
#: A-ASSOCIATE-RJ: rejected-permanent, by the service user, calling / called AE not known.
_REJECT_CALLING = (0x01, 0x01, 0x03)
_REJECT_CALLED = (0x01, 0x01, 0x07)
#: C-STORE failure statuses (PS3.4 B.2.3).
_OUT_OF_RESOURCES = 0xA700
_CANNOT_UNDERSTAND = 0xC000
_STATE = "_imagebank_state"


@dataclass
class _Association:
    project_id: str
    calling: str
    address: str
    counts: dict[str, int] = field(default_factory=lambda: {"stored": 0, "duplicates": 0,
                                                            "failed": 0, "echoes": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set when its connection has closed (counted out of ``tuning.associations``).
    closed: bool = False


class DicomListener:
    """A C-ECHO / C-STORE SCP on ``host:port`` (port 0: any free port, see ``port``)."""

    def __init__(self, runtime: Runtime, host: str = "127.0.0.1", port: int = 11112,
                 ae_title: str = DEFAULT_AE_TITLE, max_associations: int = 16) -> None:
        self.runtime = runtime
        self.nodes = Nodes(runtime.archive.sessions)
        self.host = host
        self.requested_port = port
        self.ae = AE(ae_title=ae_title)
        self.ae.require_called_aet = False  # the called AE title picks the project (below)
        self.ae.maximum_associations = max_associations
        self.ae.maximum_pdu_size = 0  # no limit on what peers may send in one PDU
        self.ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                # Roles: a C-GET's SCU proposes to be the SCP of its storage contexts.
                self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES,
                                              scu_role=True, scp_role=True)
        # C-FIND, C-MOVE, C-GET (query_retrieve.py), scoped to the association's project.
        self.query_retrieve = QueryRetrieve(runtime, lambda assoc: getattr(assoc, _STATE, None))
        for sop_class in self.query_retrieve.contexts():
            self.ae.add_supported_context(sop_class)
        self._server: Any = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self.requested_port
        return int(self._server.server_address[1])

    def start(self) -> None:
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end), (evt.EVT_CONN_CLOSE, self._on_close),
            *self.query_retrieve.handlers()]
        try:
            self._server = self.ae.start_server((self.host, self.requested_port), block=False,
                                                evt_handlers=handlers)
        except OSError as exc:
            raise StorageError(f"The DICOM listener cannot listen on {self.host}:"
                               f"{self.requested_port} ({exc.strerror}).") from None
        log.info("DICOM listener on %s:%d", self.host, self.port)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, then wait (up to ``timeout`` in all) for the associations still
        running: one that just ended may still be writing its audit event."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            deadline = time.monotonic() + timeout
            for association in server.active_associations:
                association.join(max(0.0, deadline - time.monotonic()))

    # -- events -----------------------------------------------------------------------------
    def _audit(self, *, action: str, project_id: str | None, calling: str, address: str,
               status: int, outcome: str, detail: dict[str, Any] | None = None) -> None:
        event = make_event(actor=calling, via="dimse", client=address, method="DIMSE",
                           route=f"dimse {action}", action=action, project_id=project_id,
                           status=status, outcome=outcome,
                           detail=json.dumps(detail, sort_keys=True) if detail else None)
        try:
            self.runtime.audit.record(event).result(timeout=30)
        except Exception:  # noqa: BLE001 - logged; the association is already decided
            log.error("audit event of a DICOM association could not be written")

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        called = _text(request.called_ae_title)
        calling = _text(request.calling_ae_title)
        address = str(assoc.requestor.address)
        try:
            admission = self.nodes.admit(called, calling, address)
        except ImagebankError:
            admission = None
        if admission is None or not admission.ok:
            reason = admission.reason if admission else "index_unavailable"
            self._audit(action="associate", project_id=admission.project_id if admission
                        else None, calling=calling, address=address, status=0,
                        outcome="denied", detail={"reason": reason, "called": called})
            result = _REJECT_CALLED if reason == "called_unknown" else _REJECT_CALLING
            assoc.acse.send_reject(*result)
            assoc.kill()
            return
        setattr(assoc, _STATE, _Association(admission.project_id or "", calling, address))
        tuning.associations.add(1)

    def _on_close(self, event: Any) -> None:
        """The connection is gone (however it ended): one association fewer running."""
        state: _Association | None = getattr(event.assoc, _STATE, None)
        if state is not None and not state.closed:
            state.closed = True
            tuning.associations.add(-1)

    def _on_echo(self, event: Any) -> int:
        state: _Association | None = getattr(event.assoc, _STATE, None)
        if state is not None:
            with state.lock:
                state.counts["echoes"] += 1
        return 0x0000

    def _on_store(self, event: Any) -> Any:
        state: _Association | None = getattr(event.assoc, _STATE, None)
        if state is None:  # pragma: no cover - rejected associations never get here
            return _CANNOT_UNDERSTAND
        data = event.encoded_dataset(include_meta=True)
        try:
            summary, _ids = self.runtime.archive.store_objects([(data, "c-store")],
                                                               state.project_id)
        except ImagebankError as exc:
            log.error("C-STORE could not be stored: %s", exc.code)
            with state.lock:
                state.counts["failed"] += 1
            return _failure(_OUT_OF_RESOURCES, exc.code)
        with state.lock:
            state.counts["stored"] += summary.stored
            state.counts["duplicates"] += summary.duplicates
            if not summary.ok:
                state.counts["failed"] += 1
        if summary.ok:
            return 0x0000
        reason = next(iter(summary.reasons), "rejected")
        return _failure(_CANNOT_UNDERSTAND, reason)

    def _on_end(self, event: Any) -> None:
        state: _Association | None = getattr(event.assoc, _STATE, None)
        if state is None:
            return
        outcome = "ok" if not state.counts["failed"] else "rejected"
        aborted = event.event is evt.EVT_ABORTED
        self._audit(action="associate", project_id=state.project_id, calling=state.calling,
                    address=state.address, status=0, outcome=outcome,
                    detail={**state.counts, "ended": "aborted" if aborted else "released"})


def _failure(status: int, reason: str) -> Dataset:
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = reason[:64]
    return answer


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip()
