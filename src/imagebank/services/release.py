"""Releases: data leaving the identifiable zone, only through the de-identification pipeline.

* **share** (``imagebank share --from SITE --to RESEARCH``, job kind ``share``): every
  instance of an identifiable project (or of the studies chosen) is de-identified under the
  research project's policy, options and key, checked by the residual-identifier scan, and
  stored in the research project (``Archive.receive(released=True)``: nothing else may store
  into a research project).
* **export** (``imagebank export PROJECT DEST``, job kind ``release``) to a folder, a zip, a
  DICOMweb server (STOW-RS) or a DICOM node (C-STORE). From an identifiable project the
  objects go through the pipeline under the policy and options given; from a research project
  they are sent as stored: they were de-identified on the way in, under the project's policy,
  which the manifest records (a second pass would remap the UIDs again and break the link
  with what the project already released).

Either may take chosen subjects (``subject_ids``: their studies, unless ``study_ids`` names
the studies) and, with ``clinical``, the clinical tables of the subjects released
(``services.clinical_release``: pseudonyms and times as the images', CSV and Parquet), which
a folder or zip holds under ``clinical/`` and a research project as project resources
(``Sink.attach``); a DICOMweb server or DICOM node takes images only.

Both run as jobs (``services.jobs``) with progress: the CLI queues the job and runs it in its
own process with a progress bar; the server's runner runs those queued through the API. The
de-identification itself runs in a process pool, or on a Dask distributed cluster when
``IMAGEBANK_JOBS`` names a scheduler (``tcp://host:8786``): tasks of ``TASK_OBJECTS``
objects, each read from the object store by the worker, results back in order. Everything
is deterministic under the key (same input, same bytes), so a job run again after a crash
finishes the work without duplicates: a project, a folder and the receivers keep what they
already have.

A **manifest** records what was released, with pseudonyms and new UIDs only: the policy (its
SHA-256 and the text), the profile's options and CID 7050 codes, the engine and table
editions, the key's fingerprint (never the key), counts by outcome and reason (no values), and
the retention the policy sets. It is written to ``DATA/releases/<job>.json`` and, for folders
and zips, beside the data (``manifest-<job>.json``). The identity map and the key never leave
the site: nothing maps a pseudonym back to an identifier.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import pydicom

from imagebank.dicom.deid import ENGINE, DeidConfig
from imagebank.domain.confidentiality import Profile
from imagebank.domain.errors import (
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from imagebank.domain.policy import Policy
from imagebank.ingest.worker import pool_context
from imagebank.services.archive import IDENTIFIABLE, RESEARCH, Archive
from imagebank.services.clinical_release import (
    RESOURCE_PREFIX,
    TableFile,
    file_sha256,
    resource_name,
    stored_tables,
    write_tables,
)
from imagebank.services.consent import (
    Screen,
    excluded_study_ids,
    record_share,
    require_optout_list,
    screen,
)
from imagebank.services.deid import (
    PARTIAL,
    Deidentified,
    DeidSummary,
    FileOutcome,
    Publisher,
    Status,
    deidentify_object,
    engine_settings,
    stage_file,
)
from imagebank.storage.durable import fsync_folder_quietly, link_new

#: Objects per task sent to a worker (a task's results travel back whole).
TASK_OBJECTS = 16
#: Objects stored in a research project per ``Archive.receive`` call.
STORE_BATCH = 64
MANIFEST_VERSION = 1
_JOBS_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://")


def engine_version() -> dict[str, str]:
    """What produced a release: imagebank's version, the engine's, the table's edition."""
    from imagebank import __version__
    from imagebank.domain import confidentiality_table as table

    return {"imagebank": __version__, "engine": ENGINE,
            "confidentiality_table": f"PS3.15 {table.EDITION}",
            "table_sha256": table.SOURCE_SHA256}


# -- what a release is -------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleaseSpec:
    """A share or an export, as queued in a job's parameters (JSON; never a key)."""

    kind: str  # "share" | "release"
    source: str  # the project released from
    target: str  # share: the research project; export: the destination
    options: tuple[str, ...] = ()
    #: An export's policy (YAML text); a share uses the research project's.
    policy: str | None = None
    study_ids: tuple[str, ...] = ()
    #: The key: a file (read when the job runs), else the key store's key of this name.
    key_file: str | None = None
    key_name: str | None = None
    #: Also the clinical tables of the subjects released (``services.clinical_release``).
    clinical: bool = False
    #: Only these subjects: their studies (unless ``study_ids`` names the studies) and their
    #: clinical data.
    subject_ids: tuple[str, ...] = ()
    #: The cohort query that chose the subjects (recorded in the manifest).
    cohort: str | None = None

    def params(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "options": list(self.options),
                "policy": self.policy, "study_ids": list(self.study_ids),
                "key_file": self.key_file, "key_name": self.key_name,
                "clinical": self.clinical, "subject_ids": list(self.subject_ids),
                "cohort": self.cohort}

    @classmethod
    def from_job(cls, kind: str, params: dict[str, Any]) -> ReleaseSpec:
        return cls(kind, str(params["source"]), str(params["target"]),
                   tuple(params.get("options") or ()), params.get("policy"),
                   tuple(params.get("study_ids") or ()), params.get("key_file"),
                   params.get("key_name"), bool(params.get("clinical")),
                   tuple(params.get("subject_ids") or ()), params.get("cohort"))


@dataclass(frozen=True)
class Plan:
    """A spec resolved against the archive: what the workers do, and what the manifest says."""

    spec: ReleaseSpec
    #: None: objects are sent as stored (an export of a research project).
    config: DeidConfig | None
    policy: Policy | None
    policy_text: str | None
    profile: Profile | None
    key_fingerprint: str | None


def plan(archive: Archive, spec: ReleaseSpec) -> Plan:
    """Check a share or export against the projects' zones and policies, before anything is
    queued or read: every refusal is a clear ``InvalidInputError`` (or ``PolicyError``)."""
    from imagebank.services.policies import parse_policy
    from imagebank.storage.keys import DEFAULT_NAME, fingerprint, read_key_file

    source = archive.ensure_project(spec.source)
    if spec.study_ids:
        _check_studies(archive, spec)
    if spec.subject_ids:
        _check_subjects(archive, spec)
    if spec.clinical:
        _check_clinical(spec, source)
    if spec.kind == "share":
        target = archive.ensure_project(spec.target)
        if source["zone"] != IDENTIFIABLE:
            raise InvalidInputError(
                f"Project {spec.source!r} is a research project: share releases data from a "
                "site's identifiable archive; export a research project instead.")
        if target["zone"] != RESEARCH:
            raise InvalidInputError(
                f"Project {spec.target!r} is not a research project, and only a research "
                "project receives a share: create one with `imagebank project create NAME "
                "--research --policy SITE.yaml`.")
        if spec.options or spec.policy:
            raise InvalidInputError("A share uses the research project's own policy and "
                                    "options; they are not given again.")
        policy_text = target.get("policy")
        options = json.loads(target.get("deid_options") or "[]")
        key_name = spec.key_name or spec.target
    else:
        if source["zone"] == RESEARCH:
            if spec.options or spec.policy or spec.key_file or spec.key_name:
                raise InvalidInputError(
                    f"Project {spec.source!r} is a research project: its data was "
                    "de-identified on the way in, under its own policy, and is exported as "
                    "stored; no --policy, --option, --key or --key-file applies.")
            text = source.get("policy")
            policy = parse_policy(text, f"project {spec.source}") if text else None
            return Plan(spec, None, policy, text, None, None)
        policy_text = spec.policy
        options = list(spec.options)
        key_name = spec.key_name or DEFAULT_NAME
    policy = parse_policy(policy_text, "the policy") if policy_text else None
    settings = engine_settings(options, policy)
    require_optout_list(archive, policy)
    if spec.key_file:
        key = read_key_file(spec.key_file)
    elif spec.kind != "share" and spec.key_name is not None:
        key = _existing_key(archive, spec.key_name)  # a mistyped name is not a new key
    else:
        key = _store_key(archive, key_name)
    return Plan(spec, settings.config(key), policy, policy_text, settings.profile,
                fingerprint(key))


def _check_clinical(spec: ReleaseSpec, source: dict[str, Any]) -> None:
    if spec.kind != "share" and spec.target.startswith(
            ("http://", "https://", "dicom://", "ae:")):
        raise InvalidInputError(
            "Clinical tables go to a folder, a zip or a research project; a DICOMweb server "
            "or a DICOM node receives images only: export without --clinical.")
    if source["zone"] == RESEARCH and (spec.study_ids or spec.subject_ids):
        raise InvalidInputError(
            f"Project {spec.source!r} is a research project: its clinical tables are "
            "exported whole, as its shares stored them; export without --study and "
            "--subject, or without --clinical.")


def _existing_key(archive: Archive, name: str) -> bytes:
    from imagebank.storage.keys import FileKeyStore, check_name

    key = FileKeyStore.in_data_folder(archive.settings.data).get(check_name(name))
    if key is None:
        raise NotFoundError(f"There is no de-identification key {name!r} in the key store; "
                            "`imagebank key create NAME` makes one (a share makes the "
                            "research project's).")
    return key


def _store_key(archive: Archive, name: str) -> bytes:
    from imagebank.storage.keys import FileKeyStore, get_or_create

    return get_or_create(FileKeyStore.in_data_folder(archive.settings.data), name)[0]


# -- work sent to the workers ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TaskSettings:
    store_location: str
    s3_endpoint_url: str | None
    config: DeidConfig | None


@dataclass(frozen=True, slots=True)
class Ref:
    instance_id: str
    object_key: str


@dataclass(slots=True)
class Result:
    """One object's result: released bytes and place, or the outcome that stops it."""

    instance_id: str
    outcome: FileOutcome | None = None
    relative: str = ""
    data: bytes = b""


_STORES: dict[tuple[str, str | None], Any] = {}


def release_task(settings: TaskSettings, refs: list[Ref]) -> list[Result]:
    """De-identify (or copy) objects read from the store: a worker's task, in a pool process
    or on a Dask worker. Results name no value of the input."""
    from imagebank.storage.factory import open_store

    where = (settings.store_location, settings.s3_endpoint_url)
    store = _STORES.get(where)
    if store is None:
        store = _STORES[where] = open_store(settings.store_location,
                                            s3_endpoint_url=settings.s3_endpoint_url)
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote values (patient data)
        for ref in refs:
            try:
                data = store.get(ref.object_key)
            except Exception as exc:  # noqa: BLE001 - one missing object fails one object
                results.append(Result(ref.instance_id, FileOutcome(
                    ref.instance_id, Status.FAILED, "unreadable_object",
                    f"The stored object cannot be read ({type(exc).__name__}); run "
                    "`imagebank check`.")))
                continue
            if settings.config is None:
                results.append(_as_stored(ref.instance_id, data))
                continue
            released = deidentify_object(data, settings.config, ref.instance_id)
            if isinstance(released, Deidentified):
                results.append(Result(ref.instance_id, None, released.relative,
                                      released.data()))
            else:
                results.append(Result(ref.instance_id, released))
    return results


def _as_stored(instance_id: str, data: bytes) -> Result:
    """An object of a research project, placed by its pseudonym and UIDs."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                             specific_tags=["PatientID", "StudyInstanceUID",
                                            "SeriesInstanceUID", "SOPInstanceUID"])
        parts = [str(ds.get(k, "") or "").strip() for k in
                 ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    except Exception as exc:  # noqa: BLE001 - a damaged stored object
        return Result(instance_id, FileOutcome(instance_id, Status.UNREADABLE, "unreadable",
                                               f"The stored object cannot be read "
                                               f"({type(exc).__name__})."))
    if not all(parts) or any("/" in p or p.startswith(".") for p in parts):
        return Result(instance_id, FileOutcome(instance_id, Status.REFUSED, "bad_uid",
                                               "The object lacks a pseudonym or a UID."))
    return Result(instance_id, None, "/".join(parts) + ".dcm", data)


# -- running tasks: a process pool, or a Dask cluster ----------------------------------------
class Runner(Protocol):
    def __call__(self, settings: TaskSettings, tasks: Iterable[list[Ref]]
                 ) -> Iterator[list[Result]]: ...


def check_scheduler(address: str) -> str:
    if not address.startswith(_JOBS_SCHEMES):
        raise ConfigurationError(
            "IMAGEBANK_JOBS names a Dask scheduler, e.g. tcp://127.0.0.1:8786.")
    return address


def runner_for(scheduler: str | None, workers: int, start_method: str | None = None
               ) -> Runner:
    """Where tasks run: the Dask scheduler ``scheduler`` (``IMAGEBANK_JOBS``), else a pool of
    ``workers`` processes (in this process when 1)."""
    if scheduler:
        return _DaskRunner(check_scheduler(scheduler))
    if workers <= 1:
        return _in_process
    return _PoolRunner(workers, start_method)


def _in_process(settings: TaskSettings, tasks: Iterable[list[Ref]]) -> Iterator[list[Result]]:
    for task in tasks:
        yield release_task(settings, task)


class _Pending(Protocol):
    def result(self) -> list[Result]: ...


def _ordered(submit: Callable[[list[Ref]], _Pending], tasks: Iterable[list[Ref]],
             window: int) -> Iterator[list[Result]]:
    """Results of ``tasks`` in order, with at most ``window`` of them queued at once."""
    inflight: deque[_Pending] = deque()
    for task in tasks:
        inflight.append(submit(task))
        while len(inflight) >= window:
            yield inflight.popleft().result()
    while inflight:
        yield inflight.popleft().result()


def _init_pool_worker(owner: int) -> None:
    """A pool worker ends with the process that runs the release, even when that one is
    killed (a forkserver's workers are not its children), and leaves Ctrl-C to it."""
    import signal

    from imagebank.ingest.worker import exit_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(owner)


@dataclass
class _PoolRunner:
    workers: int
    start_method: str | None

    def __call__(self, settings: TaskSettings, tasks: Iterable[list[Ref]]
                 ) -> Iterator[list[Result]]:
        context = pool_context(self.start_method)
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                 initializer=_init_pool_worker,
                                 initargs=(os.getpid(),)) as pool:
            try:
                yield from _ordered(lambda t: pool.submit(release_task, settings, t), tasks,
                                    self.workers * 3)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


@dataclass
class _DaskRunner:
    address: str

    def __call__(self, settings: TaskSettings, tasks: Iterable[list[Ref]]
                 ) -> Iterator[list[Result]]:
        from distributed import Client

        try:
            client = Client(self.address, timeout=10,  # type: ignore[no-untyped-call]
                            set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ConfigurationError(
                f"The Dask scheduler in IMAGEBANK_JOBS cannot be reached "
                f"({type(exc).__name__}).") from None
        try:
            shared = client.scatter(settings, broadcast=True)  # type: ignore[no-untyped-call]
            workers = max(1, sum(w.get("nthreads", 1) for w in
                                 client.scheduler_info()["workers"].values()))
            yield from _ordered(
                lambda t: client.submit(release_task, shared, t, pure=False),
                tasks, workers * 3)
        finally:
            client.close()  # type: ignore[no-untyped-call]


# -- where released objects go ---------------------------------------------------------------
class Sink(Protocol):
    def put(self, released: list[Result]) -> list[FileOutcome]:
        """Deliver ``released`` (all with data); one outcome each, in order."""
        ...

    def describe(self) -> dict[str, Any]:
        """Where the objects go (for the manifest; no credentials)."""
        ...

    def attach(self, table: TableFile) -> dict[str, Any]:
        """Deliver a clinical table (a file) beside the objects; what the manifest says of
        where it went and whether it was there already."""
        ...

    def finish(self, manifest: bytes, name: str) -> None:
        """Everything delivered: keep the manifest beside the data where it can be."""
        ...

    def abort(self) -> None: ...


class ProjectSink:
    """Into a research project, through the ingest pipeline's checks."""

    def __init__(self, archive: Archive, project: str, job_id: str = "") -> None:
        self.archive = archive
        self.project = project
        self.job_id = job_id

    def put(self, released: list[Result]) -> list[FileOutcome]:
        outcomes: list[FileOutcome] = []
        for start in range(0, len(released), STORE_BATCH):
            batch = released[start:start + STORE_BATCH]
            received = self.archive.receive([(r.data, "released object") for r in batch],
                                            self.project, released=True)
            for result, got in zip(batch, received.objects, strict=True):
                if got.outcome == "stored":
                    outcomes.append(FileOutcome(result.instance_id, Status.WRITTEN,
                                                bytes_out=len(result.data)))
                elif got.outcome == "duplicate":
                    outcomes.append(FileOutcome(result.instance_id, Status.WRITTEN,
                                                "unchanged", bytes_out=len(result.data)))
                else:
                    outcomes.append(FileOutcome(result.instance_id, Status.FAILED,
                                                got.reason or str(got.outcome),
                                                "The research project did not accept it."))
        return outcomes

    def describe(self) -> dict[str, Any]:
        return {"project": self.project}

    def attach(self, table: TableFile) -> dict[str, Any]:
        """A project-level resource ``clinical-<job>-<name>``; one with the same content
        from an earlier share is kept instead (a share run again adds nothing)."""
        for row in self.archive.resources(self.project, "project", self.project):
            name = str(row["name"])
            if (name.startswith(RESOURCE_PREFIX) and name.endswith(f"-{table.name}")
                    and row["sha256"] == table.sha256):
                return {"resource": row["id"], "outcome": "unchanged"}
        row = self.archive.add_resource(self.project, "project", self.project,
                                        resource_name(self.job_id, table.name),
                                        table.path.read_bytes(), table.content_type)
        return {"resource": row["id"], "outcome": "written"}

    def finish(self, manifest: bytes, name: str) -> None:
        self.archive.optimize()

    def abort(self) -> None:
        pass  # what was stored is whole and stays (a run again finds it as duplicates)


class FolderSink:
    """Into a folder: ``<pseudonym>/<study>/<series>/<instance>.dcm``, each file written whole
    (a temporary file, flushed, then linked to its name; never replacing a file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.partial = folder / PARTIAL
        try:
            self.partial.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"The folder {folder} cannot be made ({exc.strerror}).") \
                from None
        self.publisher = Publisher(folder, durable=True)
        self.run = uuid.uuid4().hex[:12]

    def put(self, released: list[Result]) -> list[FileOutcome]:
        staged = [stage_file(self.partial, self.run, r.instance_id, r.relative, [r.data])
                  for r in released]
        outcomes = self.publisher.add(staged, last=True)
        return outcomes

    def describe(self) -> dict[str, Any]:
        return {"folder": self.folder.name}

    def attach(self, table: TableFile) -> dict[str, Any]:
        """``clinical/<name>`` in the folder, written whole and never replacing a file."""
        relative = f"clinical/{table.name}"
        target = self.folder / relative
        temporary = self.partial / f"{self.run}-{uuid.uuid4().hex}.tmp"
        try:
            target.parent.mkdir(exist_ok=True)
            with open(table.path, "rb") as source, open(temporary, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            if link_new(temporary, target):
                fsync_folder_quietly(target.parent)
                return {"path": relative, "outcome": "written"}
            if file_sha256(target) == table.sha256:
                return {"path": relative, "outcome": "unchanged"}
            return {"path": relative, "outcome": "conflict"}
        except OSError as exc:
            raise StorageError(f"The clinical table {relative} cannot be written "
                               f"({exc.strerror}).") from None
        finally:
            temporary.unlink(missing_ok=True)

    def finish(self, manifest: bytes, name: str) -> None:
        _write_whole(self.folder / name, manifest)
        try:
            self.partial.rmdir()
        except OSError:
            pass

    def abort(self) -> None:
        self.publisher.discard()
        for leftover in self.partial.glob(f"{self.run}-*.tmp"):
            leftover.unlink(missing_ok=True)


class ZipSink:
    """Into a zip (entries stored, not deflated), written as ``DEST.partial`` and renamed
    when complete with its manifest: a zip at DEST is always whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.zip = zipfile.ZipFile(self.partial, "w", zipfile.ZIP_STORED, allowZip64=True)
        except OSError as exc:
            raise StorageError(f"The zip {path} cannot be written ({exc.strerror}).") \
                from None
        self.names: set[str] = set()

    def put(self, released: list[Result]) -> list[FileOutcome]:
        outcomes = []
        for r in released:
            if r.relative in self.names:
                outcomes.append(FileOutcome(r.instance_id, Status.WRITTEN, "unchanged",
                                            bytes_out=len(r.data)))
                continue
            self.zip.writestr(zipfile.ZipInfo(r.relative, (1980, 1, 1, 0, 0, 0)), r.data)
            self.names.add(r.relative)
            outcomes.append(FileOutcome(r.instance_id, Status.WRITTEN, bytes_out=len(r.data)))
        return outcomes

    def describe(self) -> dict[str, Any]:
        return {"zip": self.path.name}

    def attach(self, table: TableFile) -> dict[str, Any]:
        relative = f"clinical/{table.name}"
        if relative in self.names:
            return {"path": relative, "outcome": "unchanged"}
        info = zipfile.ZipInfo(relative, (1980, 1, 1, 0, 0, 0))
        with open(table.path, "rb") as source, self.zip.open(info, "w",
                                                              force_zip64=True) as out:
            shutil.copyfileobj(source, out, 1 << 20)
        self.names.add(relative)
        return {"path": relative, "outcome": "written"}

    def finish(self, manifest: bytes, name: str) -> None:
        self.zip.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), manifest)
        self.zip.close()
        with open(self.partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.partial, self.path)
        fsync_folder_quietly(self.path.parent)

    def abort(self) -> None:
        try:
            self.zip.close()
        finally:
            self.partial.unlink(missing_ok=True)


class StowSink:
    """To a DICOMweb server's STOW-RS (``dicomweb-client``), one request per batch."""

    def __init__(self, url: str) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.client = DICOMwebClient(url)

    def put(self, released: list[Result]) -> list[FileOutcome]:
        import requests

        datasets = [pydicom.dcmread(io.BytesIO(r.data)) for r in released]
        try:
            response = self.client.store_instances(datasets)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            return [FileOutcome(r.instance_id, Status.FAILED, "stow_refused",
                                f"The DICOMweb server answered HTTP {status}.")
                    for r in released]
        except requests.RequestException as exc:
            return [FileOutcome(r.instance_id, Status.FAILED, "unreachable",
                                f"The DICOMweb server cannot be reached "
                                f"({type(exc).__name__}).") for r in released]
        failed = {str(item.get("ReferencedSOPInstanceUID", ""))
                  for item in getattr(response, "FailedSOPSequence", [])}
        return [FileOutcome(r.instance_id, Status.FAILED, "stow_failed",
                            "The DICOMweb server refused this instance.")
                if str(ds.SOPInstanceUID) in failed else
                FileOutcome(r.instance_id, Status.WRITTEN, bytes_out=len(r.data))
                for r, ds in zip(released, datasets, strict=True)]

    def describe(self) -> dict[str, Any]:
        return {"dicomweb": _safe_url(self.client.base_url)}

    def attach(self, table: TableFile) -> dict[str, Any]:
        raise InvalidInputError("A DICOMweb server receives images only.")

    def finish(self, manifest: bytes, name: str) -> None:
        pass

    def abort(self) -> None:
        pass


class CStoreSink:
    """To a DICOM node (C-STORE, pynetdicom), one association per batch proposing the batch's
    SOP classes in their stored transfer syntaxes."""

    def __init__(self, ae_title: str, host: str, port: int, calling: str = "IMAGEBANK") -> None:
        self.ae_title, self.host, self.port, self.calling = ae_title, host, port, calling

    def put(self, released: list[Result]) -> list[FileOutcome]:
        from pynetdicom import AE

        datasets = [pydicom.dcmread(io.BytesIO(r.data)) for r in released]
        ae = AE(ae_title=self.calling)
        contexts: dict[str, set[str]] = {}
        for ds in datasets:
            contexts.setdefault(str(ds.SOPClassUID), set()).add(
                str(ds.file_meta.TransferSyntaxUID))
        for sop_class, syntaxes in list(contexts.items())[:128]:
            ae.add_requested_context(sop_class, sorted(syntaxes))
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            return [FileOutcome(r.instance_id, Status.FAILED, "association_refused",
                                "The DICOM node refused or did not answer the association.")
                    for r in released]
        outcomes = []
        try:
            for r, ds in zip(released, datasets, strict=True):
                status = assoc.send_c_store(ds)
                code = int(getattr(status, "Status", -1)) if status else -1
                if code in (0x0000, 0xB000, 0xB007, 0xB006):
                    outcomes.append(FileOutcome(r.instance_id, Status.WRITTEN,
                                                bytes_out=len(r.data)))
                else:
                    outcomes.append(FileOutcome(r.instance_id, Status.FAILED, "store_failed",
                                                f"The DICOM node answered status "
                                                f"0x{code & 0xFFFF:04X}."))
        finally:
            assoc.release()
        return outcomes

    def describe(self) -> dict[str, Any]:
        return {"dicom": f"{self.ae_title}@{self.host}:{self.port}"}

    def attach(self, table: TableFile) -> dict[str, Any]:
        raise InvalidInputError("A DICOM node receives images only.")

    def finish(self, manifest: bytes, name: str) -> None:
        pass

    def abort(self) -> None:
        pass


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_destination(archive: Archive, destination: str) -> str:
    """A destination as the user wrote it, checked before the job is queued: an ``http(s)://``
    DICOMweb base URL, ``dicom://AET@host:port``, ``ae:NAME`` (a remote AE added with
    ``imagebank ae add``), a path ending ``.zip``, or a folder. Never a place inside the
    data folder (released files would sit among the originals)."""
    if destination.startswith(("http://", "https://")):
        return destination
    if destination.startswith(("dicom://", "ae:")):
        _node(archive, destination)
        return destination
    path = Path(destination).expanduser().resolve()
    if path.is_relative_to(archive.settings.data.resolve()):
        raise InvalidInputError("The destination is inside the data folder; choose a place "
                                "outside it.")
    if path.suffix.lower() == ".zip":
        if path.exists():
            raise InvalidInputError(f"{destination} exists already; a zip is never replaced.")
    elif path.exists() and not path.is_dir():
        raise InvalidInputError(f"{destination} exists and is not a folder.")
    return str(path)


def _node(archive: Archive, destination: str) -> tuple[str, str, int]:
    from imagebank.services.nodes import Nodes, check_ae_title, check_host, check_port

    if destination.startswith("ae:"):
        remote = Nodes(archive.sessions).remote(destination[3:])
        return str(remote["ae_title"]), str(remote["host"]), int(remote["port"])
    rest = destination[len("dicom://"):]
    title, at, address = rest.partition("@")
    host, colon, port = address.rpartition(":")
    if not at or not colon or not port.isdigit():
        raise InvalidInputError("A DICOM node is dicom://AETITLE@host:port.")
    return check_ae_title(title), check_host(host), check_port(int(port))


def open_sink(archive: Archive, spec: ReleaseSpec, job_id: str = "") -> Sink:
    if spec.kind == "share":
        return ProjectSink(archive, spec.target, job_id)
    target = spec.target
    if target.startswith(("http://", "https://")):
        return StowSink(target)
    if target.startswith(("dicom://", "ae:")):
        return CStoreSink(*_node(archive, target))
    path = Path(target)
    if path.suffix.lower() == ".zip":
        return ZipSink(path)
    return FolderSink(path)


# -- the manifest ------------------------------------------------------------------------------
@dataclass
class Manifest:
    plan: Plan
    job_id: str
    #: Who was left out, and the consent state and opt-out list it was decided on.
    screen: Screen | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: pseudonym -> study UID -> series UID -> instance UIDs (new UIDs only).
    released: dict[str, dict[str, dict[str, list[str]]]] = field(default_factory=dict)
    #: The clinical tables released (``ClinicalTables.manifest``), when asked for.
    clinical: dict[str, Any] | None = None

    def add(self, relative: str) -> None:
        patient, study, series, name = relative.split("/")
        (self.released.setdefault(patient, {}).setdefault(study, {})
         .setdefault(series, []).append(name.removesuffix(".dcm")))

    def document(self, summary: DeidSummary, destination: dict[str, Any]) -> dict[str, Any]:
        p = self.plan
        policy = p.policy
        finished = datetime.now(UTC)
        retain_until = None
        if policy is not None and policy.retention.days is not None:
            retain_until = (finished.date() + timedelta(days=policy.retention.days)).isoformat()
        return {
            "manifest_version": MANIFEST_VERSION,
            "kind": "share" if p.spec.kind == "share" else "export",
            "job": self.job_id,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "from_project": p.spec.source,
            "to": p.spec.target if p.spec.kind == "share" else destination,
            "deidentified_here": p.config is not None,
            "engine": engine_version(),
            "profile": None if p.profile is None else {
                "options": sorted(o.value for o in p.profile.options),
                "method_codes": [c for c, _meaning in p.profile.method_codes()]},
            "policy": None if p.policy_text is None else {
                "sha256": hashlib.sha256(p.policy_text.encode()).hexdigest(),
                "site": None if policy is None else policy.site.name,
                "smallest_count": None if policy is None else policy.smallest_count,
                "national_data_opt_out": None if policy is None
                else policy.national_data_opt_out,
                "text": p.policy_text},
            "retention": None if policy is None else {
                "days": policy.retention.days,
                "until_project_end": policy.retention.project_end,
                "retain_until": retain_until},
            "key_fingerprint": p.key_fingerprint,
            "consent": None if self.screen is None else self.screen.manifest(),
            "cohort": p.spec.cohort,
            "clinical": self.clinical,
            "counts": summary.as_dict(),
            "patients": len(self.released),
            "released": self.released,
        }


def _json_default(value: Any) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _write_whole(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise StorageError(f"The manifest cannot be written ({exc.strerror}).") from None
    fsync_folder_quietly(path.parent)


# -- a release, start to end -------------------------------------------------------------------
Progress = Callable[[int, int, DeidSummary], None]


def _check_studies(archive: Archive, spec: ReleaseSpec) -> None:
    owners = archive.projects_of("study", list(spec.study_ids))
    for study in spec.study_ids:
        if owners.get(study) != spec.source:
            raise NotFoundError(f"No study {study} in project {spec.source!r}.")


def _check_subjects(archive: Archive, spec: ReleaseSpec) -> None:
    owners = archive.projects_of("subject", list(spec.subject_ids))
    for subject in spec.subject_ids:
        if owners.get(subject) != spec.source:
            raise NotFoundError(f"No subject {subject} in project {spec.source!r}.")


def _subjects_studies(archive: Archive, subject_ids: tuple[str, ...]) -> list[str]:
    from imagebank.index.consent import study_ids_of_subjects

    with archive.sessions.begin() as session:
        return sorted(study_ids_of_subjects(session, list(subject_ids)))


def released_subjects(archive: Archive, spec: ReleaseSpec) -> list[str] | None:
    """The subjects whose clinical data a release takes: those chosen and those of the
    studies chosen; None for every subject of the project (with images or not)."""
    from imagebank.index import repo

    if not spec.subject_ids and not spec.study_ids:
        return None
    with archive.sessions.begin() as session:
        of_studies = repo.get_study_subjects(session, list(spec.study_ids))
    return sorted({*spec.subject_ids, *of_studies.values()})


def release_refs(archive: Archive, spec: ReleaseSpec,
                 excluded_studies: set[str] | frozenset[str] = frozenset()) -> list[Ref]:
    """The objects released: every instance of the source project, or of its chosen studies
    (or of the chosen subjects' studies), but those of the studies of subjects the consent
    screen leaves out."""
    if spec.study_ids:
        _check_studies(archive, spec)
        rows = archive.instance_objects("study", list(spec.study_ids))
    elif spec.subject_ids:
        _check_subjects(archive, spec)
        rows = archive.instance_objects("study", _subjects_studies(archive, spec.subject_ids))
    else:
        rows = archive.project_instance_objects(spec.source)
    return [Ref(str(r["id"]), str(r["object_key"])) for r in rows
            if str(r["study_id"]) not in excluded_studies]


def run_release(archive: Archive, spec: ReleaseSpec, job_id: str, *,
                progress: Progress | None = None, workers: int = 2,
                scheduler: str | None = None, start_method: str | None = None
                ) -> dict[str, Any]:
    """Run a share or export (see the module's docstring); returns the job's result."""
    resolved = plan(archive, spec)
    screened = screen(archive, spec.source, spec.target if spec.kind == "share" else "",
                      resolved.policy)
    refs = release_refs(archive, spec, excluded_study_ids(archive, screened))
    if spec.kind == "share" and resolved.config is not None:
        # Before any object moves: a withdrawal must find what even a crashed share released.
        record_share(archive, spec.source, spec.target, resolved.config.pseudonyms.key,
                     job_id, screened.excluded)
    total = len(refs)
    summary = DeidSummary()
    manifest = Manifest(resolved, job_id, screened)
    settings = TaskSettings(archive.settings.effective_store, archive.settings.s3_endpoint_url,
                            resolved.config)
    tasks = [refs[i:i + TASK_OBJECTS] for i in range(0, total, TASK_OBJECTS)]
    if progress is not None:
        progress(0, total, summary)
    sink = open_sink(archive, spec, job_id)
    try:
        for results in runner_for(scheduler, workers, start_method)(settings, tasks):
            released = [r for r in results if r.outcome is None]
            delivered = iter(sink.put(released) if released else [])
            for result in results:
                outcome = result.outcome if result.outcome is not None else next(delivered)
                summary.add(outcome)
                if outcome.status is Status.WRITTEN:
                    manifest.add(result.relative)
            if progress is not None:
                progress(summary.files, total, summary)
        if spec.clinical:
            manifest.clinical = _release_tables(archive, resolved, sink, set(screened.excluded))
        name = f"manifest-{job_id}.json"
        document = manifest.document(summary, sink.describe())
        data = json.dumps(document, indent=1, default=_json_default).encode()
        sink.finish(data, name)
    except BaseException:
        sink.abort()
        raise
    releases = archive.settings.data / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    _write_whole(releases / f"{job_id}.json", data)
    tables_ok = manifest.clinical is None or all(
        t["outcome"] != "conflict" for t in manifest.clinical["tables"])
    return {**summary.as_dict(), "manifest": name, "patients": len(manifest.released),
            "to": document["to"], "ok": summary.ok and tables_ok,
            **({} if manifest.clinical is None else {"clinical": {
                "patients": manifest.clinical["patients"],
                "facts": manifest.clinical["facts"],
                "tables": {t["name"]: t["outcome"] for t in manifest.clinical["tables"]}}})}


def _release_tables(archive: Archive, resolved: Plan, sink: Sink, excluded: set[str]
                    ) -> dict[str, Any]:
    """The clinical tables of the subjects released (a research project's as stored),
    written to a scratch folder, delivered through the sink; the manifest's section."""
    spec = resolved.spec
    with tempfile.TemporaryDirectory(dir=archive.spool_dir(), prefix="clinical-") as scratch:
        if resolved.config is None:
            tables = stored_tables(archive, spec.source, Path(scratch), excluded)
        else:
            tables = write_tables(archive, spec.source, resolved.config, Path(scratch),
                                  subject_ids=released_subjects(archive, spec),
                                  excluded=excluded)
        delivered = {t.name: sink.attach(t) for t in tables.files}
    return tables.manifest(delivered)
