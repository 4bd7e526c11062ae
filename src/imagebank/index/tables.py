"""Index tables. Column names of DICOM attributes come from ``domain.model.INDEXED_ATTRIBUTES``.

Every change here needs an Alembic revision (``make migration``); ``tests/index/
test_migrations.py`` fails when the models and the migrations disagree.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


ID = String(32)


class ArchiveMeta(Base):
    """Key/value facts about the archive itself (its ID key, its creation)."""

    __tablename__ = "archive_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: The called AE title that routes C-STOREs to this project (unique when set).
    ae_title: Mapped[str | None] = mapped_column(String(16))
    #: "identifiable" (a site's archive) or "research" (receives data only through the
    #: de-identification pipeline: ``imagebank share``). Fixed when the project is made.
    zone: Mapped[str] = mapped_column(String(16), server_default="identifiable")
    #: A research project's governance policy (YAML, the strictest merge of its sites').
    policy: Mapped[str | None] = mapped_column(Text)
    #: The PS3.15 options a research project's releases use (a JSON list).
    deid_options: Mapped[str] = mapped_column(Text, server_default="[]")

    # A unique index, not a constraint: SQLite can add an index to a table in place, but a
    # constraint only by copying the table, which its foreign keys forbid once it has rows.
    __table_args__ = (Index(None, "ae_title", unique=True),)


class CallingAE(Base):
    """A DICOM node allowed to send to a project: its AE title and, optionally, address."""

    __tablename__ = "calling_aes"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: "" for any address.
    host: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RemoteAE(Base):
    """A DICOM node imagebank sends to (a C-MOVE destination, an echo target). Configured
    once per imagebank node, not per project: the calling AE's project decides what is sent,
    the MoveDestination (this AE title) only where to."""

    __tablename__ = "remote_aes"
    #: The name it is managed by (``imagebank ae echo NAME``); its AE title by default.
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16))
    #: An IP address or a host name (resolved when an association is made).
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "ae_title", unique=True),)


class Subject(Base):
    __tablename__ = "subjects"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    patient_id: Mapped[str | None] = mapped_column(String)
    issuer_of_patient_id: Mapped[str | None] = mapped_column(String)
    patient_name: Mapped[str | None] = mapped_column(String)
    patient_birth_date: Mapped[str | None] = mapped_column(String(32))
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    num_studies: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: When the patient withdrew from research (issue 6): the subject is kept out of every
    #: cohort and every later release. Set on a site's subject for a withdrawal from all
    #: research, and on the research project's subjects their data became.
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    project: Mapped[Project] = relationship(lazy="raise")

    __table_args__ = (
        Index(None, "project_id", "patient_id"),
        Index(None, "patient_id"),
    )


class ClinicalFact(Base):
    """One clinical statement about a subject (issue 6), as imported: codes as given (their
    system's short name, ``domain.clinical.code_system_name``), a value, a unit, its time."""

    __tablename__ = "clinical_facts"
    #: Derived from the project and the source's own ID of the statement: an import run
    #: again adds nothing.
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"))
    kind: Mapped[str] = mapped_column(String(16))
    system: Mapped[str] = mapped_column(String(255), default="")
    code: Mapped[str] = mapped_column(String(255), default="")
    display: Mapped[str] = mapped_column(Text, default="")
    value_number: Mapped[float | None] = mapped_column(Float)
    value_text: Mapped[str] = mapped_column(Text, default="")
    value_system: Mapped[str] = mapped_column(String(255), default="")
    unit: Mapped[str] = mapped_column(String(64), default="")
    start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(32), default="")
    #: Other codes of the same statement, study links (JSON).
    detail: Mapped[str] = mapped_column(Text, default="{}")
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # Covering for cohort criteria (decision 0022): a code, its value and the time are
        # read from the index alone. A code prefix is a LIKE on PostgreSQL, which a
        # pattern_ops column serves whatever the database's collation.
        Index("ix_clinical_facts_cohort", "project_id", "kind", "system", "code",
              "value_number", "start", "subject_id",
              postgresql_ops={"code": "text_pattern_ops"}),
        Index(None, "subject_id", "kind", "start"),
    )


class ClinicalStudyLink(Base):
    """A FHIR ImagingStudy fact's DICOM study (issue 6, decision 0021): by StudyInstanceUID
    (the study's ID derives from it, so the link holds before the images arrive) or by
    accession number (a study already there). Never across patients."""

    __tablename__ = "clinical_study_links"
    fact_id: Mapped[str] = mapped_column(ForeignKey("clinical_facts.id"), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(63))
    #: Not a foreign key: the study may not have arrived yet.
    study_id: Mapped[str] = mapped_column(ID)
    #: "uid" or "accession".
    matched_by: Mapped[str] = mapped_column(String(16))

    __table_args__ = (Index(None, "project_id", "study_id"),)


class CodeRelation(Base):
    """A direct is-a edge of a code system (issue 6, decision 0022): ``child`` is a
    ``parent``. A cohort query's ``SYSTEM:<<CODE`` is the code and everything below it.
    Loaded by ``imagebank codes import`` (SNOMED CT's RF2 relationships, or a CSV)."""

    __tablename__ = "code_relations"
    system: Mapped[str] = mapped_column(String(32))
    parent: Mapped[str] = mapped_column(String(255))
    child: Mapped[str] = mapped_column(String(255))

    # Keyed parent first: the descendants are found by walking down from a parent.
    __table_args__ = (PrimaryKeyConstraint("system", "parent", "child"),)


class Consent(Base):
    """A patient's consent decision (issue 6, decision 0023): for one research project or all
    research (``target_project`` ""), a scope, a status (granted, refused, withdrawn), its
    date and source. The patient is named by ``person_key``, a keyed hash of their identifier
    (``IdDeriver.person_key``): no identifier is stored."""

    __tablename__ = "consents"
    #: Derived from the whole record: an import run again adds nothing.
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    person_key: Mapped[str] = mapped_column(ID)
    target_project: Mapped[str] = mapped_column(String(63), default="")
    scope: Mapped[str] = mapped_column(String(64), default="research")
    status: Mapped[str] = mapped_column(String(16))
    #: The date of the decision (ISO, YYYY-MM-DD).
    decided_on: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(200), default="")
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "person_key"),)


class OptOutList(Base):
    """One dated version of the National Data Opt-out list (NHS numbers, kept as keyed
    hashes in ``optout_entries``). The newest by ``list_date`` (then import) applies."""

    __tablename__ = "optout_lists"
    #: The SHA-256 of the list's sorted NHS numbers, shortened: the same list is one version.
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    list_date: Mapped[str] = mapped_column(String(10))
    entries: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OptOutEntry(Base):
    __tablename__ = "optout_entries"
    list_id: Mapped[str] = mapped_column(ForeignKey("optout_lists.id"), primary_key=True)
    person_key: Mapped[str] = mapped_column(ID, primary_key=True)


class ReleaseSubject(Base):
    """Lineage of a share: which site subject a research project's subject came from, so a
    later withdrawal can find the data already released. Never leaves the site's index."""

    __tablename__ = "release_subjects"
    target_project: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    source_subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), primary_key=True)
    #: The research subject's PatientID (its pseudonym).
    pseudonym: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "source_subject_id"),)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    study_date: Mapped[str | None] = mapped_column(String(32))
    study_time: Mapped[str | None] = mapped_column(String(32))
    accession_number: Mapped[str | None] = mapped_column(String)
    referring_physician_name: Mapped[str | None] = mapped_column(String)
    study_id: Mapped[str | None] = mapped_column(String)
    study_description: Mapped[str | None] = mapped_column(String)
    institution_name: Mapped[str | None] = mapped_column(String)
    modalities_in_study: Mapped[str | None] = mapped_column(String)
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    subject: Mapped[Subject] = relationship(lazy="raise")

    __table_args__ = (
        Index(None, "project_id", "study_date"),
        # A subject's studies with their dates, from the index alone (cohort time relations)
        Index(None, "subject_id", "study_date", "id"),
        Index(None, "study_instance_uid"),
        Index(None, "study_date"),
        Index(None, "accession_number"),
    )


class Series(Base):
    __tablename__ = "series"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(String)
    series_date: Mapped[str | None] = mapped_column(String(32))
    series_time: Mapped[str | None] = mapped_column(String(32))
    performed_procedure_step_start_date: Mapped[str | None] = mapped_column(String(32))
    performed_procedure_step_start_time: Mapped[str | None] = mapped_column(String(32))
    body_part_examined: Mapped[str | None] = mapped_column(String)
    protocol_name: Mapped[str | None] = mapped_column(String)
    manufacturer: Mapped[str | None] = mapped_column(String)
    manufacturer_model_name: Mapped[str | None] = mapped_column(String)
    station_name: Mapped[str | None] = mapped_column(String)
    device_serial_number: Mapped[str | None] = mapped_column(String)
    software_versions: Mapped[str | None] = mapped_column(String)
    magnetic_field_strength: Mapped[float | None] = mapped_column(Float)
    frame_of_reference_uid: Mapped[str | None] = mapped_column(String(64))
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    study: Mapped[Study] = relationship(lazy="raise")

    __table_args__ = (
        # A study's series with their modality, from the index alone (cohort imaging events)
        Index(None, "study_id", "modality", "project_id", "id"),
        Index(None, "series_instance_uid"),
        Index(None, "project_id", "modality"),
    )


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"))
    series_id: Mapped[str] = mapped_column(ForeignKey("series.id"))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    acquisition_number: Mapped[int | None] = mapped_column(Integer)
    content_date: Mapped[str | None] = mapped_column(String(32))
    content_time: Mapped[str | None] = mapped_column(String(32))
    image_type: Mapped[str | None] = mapped_column(String)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    bits_allocated: Mapped[int | None] = mapped_column(Integer)
    photometric_interpretation: Mapped[str | None] = mapped_column(String(32))
    pixel_spacing: Mapped[str | None] = mapped_column(String)
    slice_thickness: Mapped[float | None] = mapped_column(Float)
    spacing_between_slices: Mapped[float | None] = mapped_column(Float)
    image_position_patient: Mapped[str | None] = mapped_column(String)
    image_orientation_patient: Mapped[str | None] = mapped_column(String)
    kvp: Mapped[float | None] = mapped_column(Float)
    x_ray_tube_current: Mapped[float | None] = mapped_column(Float)
    convolution_kernel: Mapped[str | None] = mapped_column(String)
    repetition_time: Mapped[float | None] = mapped_column(Float)
    echo_time: Mapped[float | None] = mapped_column(Float)
    inversion_time: Mapped[float | None] = mapped_column(Float)
    flip_angle: Mapped[float | None] = mapped_column(Float)
    sequence_name: Mapped[str | None] = mapped_column(String)
    burned_in_annotation: Mapped[str | None] = mapped_column(String(16))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(255))
    metadata_json: Mapped[str] = mapped_column(Text)
    oddities: Mapped[str] = mapped_column(String, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    series: Mapped[Series] = relationship(lazy="raise")

    __table_args__ = (
        Index(None, "series_id"),
        Index(None, "study_id"),
        Index(None, "sop_instance_uid"),
        Index(None, "object_key"),
    )


class Resource(Base):
    """A non-DICOM file (NIfTI, segmentation, report) attached to any level."""

    __tablename__ = "resources"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    level: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(127))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "project_id", "level", "parent_id"),)


class QuarantineItem(Base):
    """What was received and not archived, with the reason; its bytes are kept when possible."""

    __tablename__ = "quarantine"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    reason: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text, default="")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    object_key: Mapped[str | None] = mapped_column(String(255))
    instance_id: Mapped[str | None] = mapped_column(ID)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "project_id", "reason"),)


class Change(Base):
    """An append-only feed of what changed, for ``/changes`` (cursor = ``seq``)."""

    __tablename__ = "changes"
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    project_id: Mapped[str] = mapped_column(String(63))
    change_type: Mapped[str] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "project_id", "seq"),)


# -- people and access (the server issue) --------------------------------------------------
class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Membership(Base):
    """A user's role on a project."""

    __tablename__ = "memberships"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    granted_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index(None, "user_id"),)


class ApiToken(Base):
    """A bearer token: only the SHA-256 of its secret part is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(100), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "user_id"),)


class WebSession(Base):
    """A browser session: keyed by the SHA-256 of the cookie's value."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "user_id"),)


class LoginThrottle(Base):
    """Failed sign-ins per username and per client address, for throttling."""

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """One audited request; append-only and hash-chained (domain.audit)."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(64))
    via: Mapped[str | None] = mapped_column(String(16))
    token_id: Mapped[str | None] = mapped_column(String(16))
    client: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    route: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    project_id: Mapped[str | None] = mapped_column(String(63))
    level: Mapped[str | None] = mapped_column(String(16))
    object_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(16))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index(None, "project_id", "seq"),
        Index(None, "actor_id", "seq"),
    )


class AuditHead(Base):
    """The last event of the chain (one row), also the lock that orders writers."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))


class Job(Base):
    """Long work (imports, exports) with its state and progress; durable across restarts."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    project_id: Mapped[str | None] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(16))
    progress_done: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_total: Mapped[int | None] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[str] = mapped_column(Text, default="{}")
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(None, "state", "created_at"),
        Index(None, "created_by"),
        Index(None, "project_id"),
    )
