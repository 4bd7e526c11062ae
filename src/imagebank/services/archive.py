"""The archive: the use cases over one data folder (or database and store).

``Archive.open()`` builds the settings, the index engine (upgrading its schema) and the object
store; its methods are the use cases the CLI (and later the API) call. A method that writes
owns its transaction; reads return plain dicts.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from imagebank.domain.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)
from imagebank.domain.ids import IdDeriver, is_valid_project_id, resource_object_key
from imagebank.domain.model import IngestSummary, Level, Outcome
from imagebank.index import repo
from imagebank.index.engine import make_engine, upgrade
from imagebank.index.tables import Instance, Series, Study, Subject
from imagebank.ingest.group import GroupCommitter
from imagebank.ingest.pipeline import Committer, Progress, run_ingest
from imagebank.ingest.sources import Source, SourceProblem, iter_sources, named
from imagebank.ingest.worker import Parser, WorkerConfig
from imagebank.settings import Settings, load_settings
from imagebank.storage.base import ObjectStore
from imagebank.storage.factory import open_store

#: A site's archive, which holds identifiable data.
IDENTIFIABLE = "identifiable"
#: The de-identified zone: data arrives only through the de-identification pipeline.
RESEARCH = "research"
ZONES = (IDENTIFIABLE, RESEARCH)


class Archive:
    """An imagebank archive: index + object store."""

    def __init__(self, settings: Settings, engine: Engine, store: ObjectStore) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        self._group = GroupCommitter(lambda project: Committer(self.sessions, self.store,
                                                               project))
        with self.sessions.begin() as session:
            self._id_key = repo.get_or_create_id_key(session)
        self.ids = IdDeriver(self._id_key)
        self._known_projects: set[str] = set()
        self._zones: dict[str, str] = {}
        # Resolved once: every stored object (an upload, a C-STORE) needs it.
        self._store_location = settings.effective_store

    @classmethod
    def open(cls, data: str | os.PathLike[str] | None = None, *,
             settings: Settings | None = None, **overrides: Any) -> Archive:
        """Open (creating if needed) the archive in ``data`` or as ``settings`` say."""
        if settings is None:
            if data is not None:
                overrides["data"] = Path(data)
            settings = load_settings(**overrides)
        try:
            settings.data.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"The data folder {settings.data} cannot be used ({exc.strerror}); set --data "
                "or IMAGEBANK_DATA to a folder."
            ) from exc
        engine = make_engine(settings.effective_database_url)
        upgrade(engine)
        store = open_store(settings.effective_store, s3_endpoint_url=settings.s3_endpoint_url)
        return cls(settings, engine, store)

    def spool_dir(self) -> Path:
        """``DATA/spool``: uploads wait here (on local disk, whatever the store) until they
        are ingested."""
        folder = self.settings.data / "spool"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- projects -------------------------------------------------------------------------
    def create_project(self, project_id: str, name: str | None = None,
                       description: str = "", *, zone: str = IDENTIFIABLE,
                       policy: str | None = None, options: Sequence[str] = ()
                       ) -> dict[str, Any]:
        """Make a project. A ``research`` project (the de-identified zone) receives data only
        through ``imagebank share``, under its ``policy`` (YAML text) and ``options``."""
        if not is_valid_project_id(project_id):
            raise InvalidInputError(
                "A project ID is 1-63 characters of lowercase letters, digits, '-' and '_', "
                "starting with a letter or digit."
            )
        if zone not in ZONES:
            raise InvalidInputError(f"A project's zone is one of {', '.join(ZONES)}.")
        if zone == IDENTIFIABLE and (policy is not None or options):
            raise InvalidInputError("Only a research project has a de-identification policy "
                                    "and options.")
        with self.sessions.begin() as session:
            if not repo.add_project(session, project_id, name or project_id, description,
                                    zone=zone, policy=policy,
                                    deid_options=json.dumps(sorted(set(options)))):
                raise ConflictError(f"Project {project_id!r} already exists.")
            project = repo.get_project(session, project_id)
        assert project is not None
        return project

    def ensure_project(self, project_id: str) -> dict[str, Any]:
        """The project's row; NotFoundError with what to do if there is none."""
        with self.sessions.begin() as session:
            project = repo.get_project(session, project_id)
        if project is None:
            raise NotFoundError(
                f"No project {project_id!r}: create it with `imagebank project create "
                f"{project_id}`."
            )
        return project

    def zone_of(self, project_id: str) -> str:
        """``identifiable`` or ``research`` (fixed when the project was made, so cached)."""
        zone = self._zones.get(project_id)
        if zone is None:
            zone = self._zones[project_id] = str(self.ensure_project(project_id)["zone"])
        return zone

    def admit(self, project_id: str, released: bool = False) -> None:
        """Data may enter a research project only through the de-identification pipeline."""
        if not released and self.zone_of(project_id) == RESEARCH:
            raise PermissionDeniedError(
                f"Project {project_id!r} is a research project: it receives data only "
                "through the de-identification pipeline (imagebank share).")

    def has_project(self, project_id: str) -> bool:
        """Does the project exist? (Projects are never deleted, so a yes is remembered.)"""
        if project_id in self._known_projects:
            return True
        with self.sessions.begin() as session:
            found = repo.get_project(session, project_id) is not None
        if found:
            self._known_projects.add(project_id)
        return found

    def projects(self) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            return repo.list_projects(session)

    # -- ingest ---------------------------------------------------------------------------
    def _worker_config(self, project_id: str) -> WorkerConfig:
        return WorkerConfig(
            store_location=self._store_location,
            s3_endpoint_url=self.settings.s3_endpoint_url,
            id_key=self._id_key,
            project_id=project_id,
            max_size=self.settings.max_object_size,
            owner=os.getpid(),
        )

    def ingest(self, paths: Iterable[str | os.PathLike[str]], project: str, *,
               progress: Progress | None = None, workers: int | None = None,
               batch_size: int | None = None, start_method: str | None = None,
               name: str | None = None) -> IngestSummary:
        """Ingest files, folders and zip archives into ``project``. ``name``: how the sender
        knows the one file at ``paths`` (an upload spooled to a temporary file), the label
        of its objects instead of that file's path."""
        self.ensure_project(project)
        self.admit(project)
        path_list = list(paths)
        for path in path_list:
            if not Path(path).exists():
                raise InvalidInputError(f"Nothing to ingest at {path}: no such file or folder.")
        committer = Committer(self.sessions, self.store, project)
        sources = iter_sources(path_list)
        summary = run_ingest(
            named(sources, name) if name else sources, committer, self._worker_config(project),
            workers=workers or self.settings.workers,
            batch_size=batch_size or self.settings.batch_size, progress=progress,
            start_method=start_method,
        )
        if summary.stored:
            self.optimize()
        return summary

    def optimize(self) -> None:
        """Refresh the index's query statistics (done after every ingest that stored)."""
        with self.sessions.begin() as session:
            repo.optimize(session)

    def ingest_bytes(self, items: Sequence[tuple[bytes, str]], project: str) -> IngestSummary:
        """Ingest objects already in memory (uploads, C-STORE, STOW-RS): (bytes, label)."""
        return self.store_objects(items, project)[0]

    def store_objects(self, items: Sequence[tuple[bytes, str]], project: str
                      ) -> tuple[IngestSummary, list[str]]:
        """As ``ingest_bytes``, also returning the IDs of the instances stored."""
        if not self.has_project(project):
            self.ensure_project(project)  # raises with the message
        received = self.receive(items, project)
        return received.summary, received.stored_ids

    def receive(self, items: Sequence[tuple[bytes, str]], project: str, *,
                released: bool = False) -> Received:
        """Store objects received over the network, each (Part-10 bytes, label): parsed in
        the calling thread, committed in batches shared with concurrent callers
        (``ingest.group``); returns once they are durable and indexed, with each object's
        outcome in the order given. Only the de-identification pipeline passes ``released``
        (what a research project may receive)."""
        if not self.has_project(project):
            self.ensure_project(project)  # raises with the message
        self.admit(project, released)
        parser = Parser(self._worker_config(project), self.store)
        parsed = [parser.parse_bytes(data, label) for data, label in items]
        report = self._group.commit(project, parsed)
        objects = []
        for item in parsed:
            outcome, reason, _label, message, _size = report.outcomes[id(item)]
            objects.append(ObjectOutcome(item.instance_id or None, outcome, reason, message,
                                         item.study_id or None))
        return Received(report.summary, report.stored_ids, objects)

    def receive_kept(self, data: bytes, label: str, project: str, item_id: str
                     ) -> ObjectOutcome:
        """Quarantine item ``item_id``'s kept bytes, received again as a new upload is (the
        project's rules apply); refused again, the item is updated in place rather than a
        second one made; discarded meanwhile (claimed by the commit, ``ingest.pipeline``),
        nothing is archived and NotFoundError says so. What ``services.quarantine.retry``
        builds on."""
        self.admit(project)
        parsed = Parser(self._worker_config(project), self.store).parse_bytes(data, label)
        parsed.retry_of = item_id
        report = self._group.commit(project, [parsed])
        if item_id in report.vanished:
            raise NotFoundError(f"Quarantine item {item_id} was discarded while it was being "
                                "retried; nothing of it was archived.")
        outcome, reason, _label, message, _size = report.outcomes[id(parsed)]
        return ObjectOutcome(parsed.instance_id or None, outcome, reason, message,
                             parsed.study_id or None)

    # -- reads ----------------------------------------------------------------------------
    def studies(self, project: str | None = None, *, limit: int = 100, offset: int = 0,
                **filters: Any) -> list[dict[str, Any]]:
        """Studies (with patient attributes), newest first; filters as ``repo.study_query``."""
        with self.sessions.begin() as session:
            return repo.list_studies(session, [project] if project else None, limit=limit,
                                     offset=offset, **filters)

    def subjects(self, project: str, *, limit: int = 100, offset: int = 0
                 ) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            return repo.list_subjects(session, project, limit=limit, offset=offset)

    def series(self, study_id: str) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            return repo.list_series(session, study_id)

    def instances(self, series_id: str, *, with_metadata: bool = False
                  ) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            return repo.list_instances(session, series_id, with_metadata=with_metadata)

    def in_project(self, level: str, row_id: str, project: str) -> dict[str, Any]:
        """The object, if it is in ``project``; else not found, with the same words whether it
        is in another project or nowhere (decision 0007)."""
        try:
            row = self.get(level, row_id)
        except NotFoundError:
            row = None
        if row is None or row.get("project_id") != project:
            raise NotFoundError(f"No {level} {row_id} in project {project!r}.")
        return row

    def get(self, level: str, row_id: str) -> dict[str, Any]:
        models = {"subject": Subject, "study": Study, "series": Series, "instance": Instance}
        model = models.get(level)
        if model is None:
            raise InvalidInputError(f"Unknown level {level!r}.")
        with self.sessions.begin() as session:
            row = repo.get_level_row(session, model, row_id)
        if row is None:
            raise NotFoundError(f"No {level} {row_id}.")
        return row

    def find(self, uid: str) -> list[tuple[str, dict[str, Any]]]:
        with self.sessions.begin() as session:
            return repo.find_by_uid(session, uid)

    def instance_bytes(self, instance_id: str) -> bytes:
        row = self.get("instance", instance_id)
        return self.store.get(row["object_key"])

    def quarantine(self, project: str | None = None, *, limit: int = 100
                   ) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            return repo.list_quarantine(session, project, limit=limit)

    def stats(self) -> dict[str, Any]:
        with self.sessions.begin() as session:
            counts: dict[str, Any] = dict(repo.count_rows(session))
            counts["quarantine_reasons"] = repo.quarantine_reasons(session)
            by_kind = repo.clinical_fact_counts(session)
            counts["clinical_facts"] = sum(by_kind.values())
            counts["clinical_facts_by_kind"] = by_kind
        return counts

    # -- resources ------------------------------------------------------------------------
    def add_resource(self, project: str, level: str, parent_id: str, name: str, data: bytes,
                     content_type: str = "application/octet-stream") -> dict[str, Any]:
        """Attach a non-DICOM file (NIfTI, segmentation, report) to a project, subject,
        study or series."""
        self.ensure_project(project)
        if level == Level.PROJECT.value:
            if parent_id != project:
                raise InvalidInputError("A project-level resource's parent is the project.")
        else:
            try:
                parent: dict[str, Any] | None = self.get(level, parent_id)
            except NotFoundError:
                parent = None
            # the same words whether the parent is missing or in another project
            if parent is None or parent.get("project_id") != project:
                raise NotFoundError(f"No {level} {parent_id} in project {project!r}.")
        safe_name = os.path.basename(name).strip() or "resource"
        resource_id = uuid.uuid4().hex
        key = resource_object_key(project, resource_id)
        staged = self.store.put(key, data)
        row = {"id": resource_id, "project_id": project, "level": level,
               "parent_id": parent_id, "name": safe_name[:255], "content_type": content_type,
               "size_bytes": staged.size, "sha256": staged.sha256, "object_key": key}
        try:
            with self.sessions.begin() as session:
                repo.add_resource(session, row)
                repo.add_changes(session, project, "stored", "resource", [resource_id])
        except SQLAlchemyError as exc:
            self.store.delete(key)
            raise StorageError("The resource could not be indexed.") from exc
        return row

    def resources(self, project: str, level: str | None = None, parent_id: str | None = None
                  ) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            return repo.list_resources(session, project, level, parent_id)

    def resource(self, resource_id: str) -> dict[str, Any]:
        with self.sessions.begin() as session:
            row = repo.get_resource(session, resource_id)
        if row is None:
            raise NotFoundError(f"No resource {resource_id}.")
        return row

    # -- feeds and bulk reads ---------------------------------------------------------------
    def changes(self, project: str, *, since: int = 0, limit: int = 100
                ) -> tuple[list[dict[str, Any]], int]:
        """Changes after the cursor ``since``, and the project's latest cursor."""
        with self.sessions.begin() as session:
            return (repo.list_changes(session, project, since=since, limit=limit),
                    repo.last_change(session, project))

    def project_summary(self, project: str) -> dict[str, Any]:
        row = self.ensure_project(project)
        with self.sessions.begin() as session:
            row["counts"] = repo.project_counts(session, project)
        return row

    def projects_of(self, level: str, ids: Sequence[str]) -> dict[str, str]:
        """{ID: project} of the studies or series (or subjects, instances) among ``ids``."""
        models = {"subject": Subject, "study": Study, "series": Series, "instance": Instance}
        model = models.get(level)
        if model is None:
            raise InvalidInputError(f"Unknown level {level!r}.")
        with self.sessions.begin() as session:
            return repo.project_map(session, model, ids)

    def instance_objects(self, level: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Every instance of the given studies, series or instances, in archive order."""
        with self.sessions.begin() as session:
            return repo.instance_objects(session, level, ids)

    def project_instance_objects(self, project: str) -> list[dict[str, Any]]:
        """Every instance of ``project``, in archive order (what a share releases)."""
        with self.sessions.begin() as session:
            return repo.project_instance_objects(session, project)

    # -- consistency ----------------------------------------------------------------------
    def check(self, *, repair: bool = False, verify_checksums: bool = False,
              staging_age: float = 3600.0,
              progress: Callable[[str, int], None] | None = None) -> CheckReport:
        """Verify the index and the store against each other (see services.check)."""
        from imagebank.services.check import check_archive

        return check_archive(self, repair=repair, verify_checksums=verify_checksums,
                             staging_age=staging_age, progress=progress)


@dataclass(frozen=True, slots=True)
class ObjectOutcome:
    """What became of one received object: its instance ID and study ID (None if it could
    not be read), the outcome, and for anything not stored the reason code and a message."""

    instance_id: str | None
    outcome: Outcome
    reason: str | None = None
    message: str = ""
    study_id: str | None = None


@dataclass(frozen=True, slots=True)
class Received:
    """The outcome of ``Archive.receive``: counts, the instances stored, each object's."""

    summary: IngestSummary
    stored_ids: list[str]
    objects: list[ObjectOutcome]


@dataclass(slots=True)
class CheckReport:
    """How the index and the store agree."""

    instances_checked: int = 0
    objects_seen: int = 0
    missing_objects: list[str] = field(default_factory=list)
    size_mismatches: list[str] = field(default_factory=list)
    checksum_mismatches: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    stale_staging: int = 0
    repaired_orphans: int = 0
    removed_rows: int = 0
    removed_objects: int = 0
    repaired: bool = False

    @property
    def ok(self) -> bool:
        if self.repaired:
            return not (self.size_mismatches or self.checksum_mismatches)
        return not (self.missing_objects or self.size_mismatches or self.checksum_mismatches
                    or self.orphans)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "instances_checked": self.instances_checked,
            "objects_seen": self.objects_seen,
            "missing_objects": len(self.missing_objects),
            "size_mismatches": len(self.size_mismatches),
            "checksum_mismatches": len(self.checksum_mismatches),
            "orphans": len(self.orphans),
            "stale_staging_removed": self.stale_staging,
            "repaired_orphans": self.repaired_orphans,
            "removed_rows": self.removed_rows,
            "removed_objects": self.removed_objects,
        }


__all__ = ["Archive", "CheckReport", "Source", "SourceProblem"]
