"""Request and response models: they make the OpenAPI document complete and exact."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from imagebank.services.accounts import aware


def _utc(value: datetime | None) -> datetime | None:
    return aware(value)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]


class Out(BaseModel):
    model_config = ConfigDict(extra="ignore", from_attributes=True)


class Health(Out):
    status: str


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(Out):
    username: str
    is_admin: bool
    csrf_token: str = Field(description="Send it as X-CSRF-Token with every request that "
                            "changes something.")
    expires_at: UtcDateTime


class Me(Out):
    id: str
    username: str
    is_admin: bool
    via: str = Field(description="session or token")
    scopes: list[str] | None = None
    roles: dict[str, str]


class UserIn(BaseModel):
    username: str = Field(min_length=2, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    is_admin: bool = False


class UserOut(Out):
    id: str
    username: str
    is_admin: bool
    is_active: bool
    created_at: UtcDateTime
    last_login_at: UtcDateTime | None = None
    roles: dict[str, str] = {}


class TokenIn(BaseModel):
    name: str = Field(default="", max_length=100)
    scopes: list[str] = Field(default=["read"], max_length=3,
                              description="read, write and/or admin")
    expires_days: float | None = Field(default=90, gt=0, le=3650,
                                       description="null: never expires")


class TokenOut(Out):
    id: str
    name: str
    scopes: list[str]
    created_at: UtcDateTime | None = None
    expires_at: UtcDateTime | None = None
    last_used_at: UtcDateTime | None = None
    revoked_at: UtcDateTime | None = None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown once; only its hash is kept.")
    username: str


class ProjectIn(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", max_length=63)
    name: str | None = Field(default=None, max_length=200)
    description: str = Field(default="", max_length=10_000)
    zone: str = Field(default="identifiable", pattern="^(identifiable|research)$",
                      description="research: receives data only through shares, under "
                      "its policy")
    policies: list[Annotated[str, Field(max_length=200_000)]] = Field(
        default_factory=list, max_length=32,
        description="A research project's sites' policies (YAML), merged strictest")
    options: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list,
                                                                max_length=16)


class ProjectOut(Out):
    id: str
    name: str
    description: str
    created_at: UtcDateTime
    zone: str = "identifiable"
    role: str | None = Field(default=None, description="Your role on it (None: admin)")
    counts: dict[str, int] | None = None


class MemberIn(BaseModel):
    role: str = Field(description="owner, member, collaborator or viewer")


class MemberOut(Out):
    username: str
    role: str
    granted_at: UtcDateTime | None = None
    granted_by: str | None = None


class SubjectOut(Out):
    id: str
    project_id: str
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    num_studies: int
    created_at: UtcDateTime


class StudyOut(Out):
    id: str
    project_id: str
    subject_id: str
    study_instance_uid: str
    study_date: str | None = None
    study_time: str | None = None
    accession_number: str | None = None
    referring_physician_name: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    institution_name: str | None = None
    modalities_in_study: str | None = None
    num_series: int
    num_instances: int
    size_bytes: int
    created_at: UtcDateTime
    updated_at: UtcDateTime
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None


class SeriesOut(Out):
    id: str
    project_id: str
    study_id: str
    series_instance_uid: str
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    series_date: str | None = None
    series_time: str | None = None
    body_part_examined: str | None = None
    protocol_name: str | None = None
    manufacturer: str | None = None
    manufacturer_model_name: str | None = None
    station_name: str | None = None
    device_serial_number: str | None = None
    software_versions: str | None = None
    magnetic_field_strength: float | None = None
    frame_of_reference_uid: str | None = None
    performed_procedure_step_start_date: str | None = None
    performed_procedure_step_start_time: str | None = None
    num_instances: int
    size_bytes: int
    created_at: UtcDateTime


class InstanceOut(Out):
    id: str
    project_id: str
    study_id: str
    series_id: str
    sop_instance_uid: str
    sop_class_uid: str | None = None
    instance_number: int | None = None
    acquisition_number: int | None = None
    content_date: str | None = None
    content_time: str | None = None
    image_type: str | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None
    bits_allocated: int | None = None
    photometric_interpretation: str | None = None
    pixel_spacing: str | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    image_position_patient: str | None = None
    image_orientation_patient: str | None = None
    kvp: float | None = None
    x_ray_tube_current: float | None = None
    convolution_kernel: str | None = None
    repetition_time: float | None = None
    echo_time: float | None = None
    inversion_time: float | None = None
    flip_angle: float | None = None
    sequence_name: str | None = None
    burned_in_annotation: str | None = None
    transfer_syntax_uid: str
    size_bytes: int
    sha256: str
    oddities: str = ""
    created_at: UtcDateTime


class ResourceOut(Out):
    id: str
    project_id: str
    level: str
    parent_id: str
    name: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: UtcDateTime | None = None


class QuarantineOut(Out):
    id: str
    reason: str
    message: str
    source: str = Field("", description="Where it came from, as its sender named it.")
    size_bytes: int | None = None
    sha256: str | None = None
    instance_id: str | None = None
    kept: bool = Field(True, description="Are its bytes kept (so that it can be retried)?")
    created_at: UtcDateTime


class QuarantineRetryOut(Out):
    """What a retry did: the item's bytes ingested again as a new upload would be."""

    item_id: str
    outcome: str = Field(description="stored, duplicate (both: archived, the item is gone), "
                         "quarantined or conflict (refused again: the item stays)")
    archived: bool
    reason: str | None = Field(None, description="Why it was refused again.")
    message: str
    instance_id: str | None = None
    study_id: str | None = Field(None, description="The study it was archived in.")


class ChangeOut(Out):
    seq: int
    change_type: str
    level: str
    resource_id: str
    created_at: UtcDateTime


class ChangesPage(Out):
    changes: list[ChangeOut]
    last: int = Field(description="Pass as ?since= to get what arrives next.")
    done: bool = Field(description="True when there is nothing after these changes (yet).")


class Page(Out):
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")


class SubjectPage(Page):
    items: list[SubjectOut]


class StudyPage(Page):
    items: list[StudyOut]


class StudySearchIn(BaseModel):
    """A study search whose criteria travel in the body, never in a URL (they are patient
    data). Values are in DICOM's matching syntax (PS3.4 C.2.2.2): exact, or with ``*`` and
    ``?`` wildcards (case-sensitive, except PatientName); StudyDate a date or a range."""

    model_config = ConfigDict(extra="forbid")

    PatientID: str | None = Field(default=None, max_length=64)
    PatientName: str | None = Field(default=None, max_length=320, description="Matched "
                                    "case-insensitively, e.g. 'SMITH^J*'.")
    AccessionNumber: str | None = Field(default=None, max_length=64)
    ModalitiesInStudy: str | None = Field(default=None, max_length=16, description="A "
                                          "modality one of the study's series has, e.g. MR.")
    StudyDate: str | None = Field(default=None, max_length=17, description="YYYYMMDD, or a "
                                  "range YYYYMMDD-YYYYMMDD (either end may be left open).")
    StudyDescription: str | None = Field(default=None, max_length=64, description="e.g. "
                                         "'*CHEST*'.")
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class IngestProblem(Out):
    reason: str
    message: str


class IngestResult(Out):
    stored: int
    duplicates: int
    conflicts: int
    quarantined: int
    bytes_stored: int
    reasons: dict[str, int]
    problems: list[IngestProblem] = []
    instance_ids: list[str] = []
    study_ids: list[str] = Field([], description="The studies holding the instance sent "
                                 "(stored now or already there); one file's upload only.")


class JobOut(Out):
    id: str
    kind: str
    project_id: str | None = None
    state: str = Field(description="queued, running, succeeded, failed or cancelled")
    progress_done: int
    progress_total: int | None = None
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int
    created_by: str | None = None
    created_at: UtcDateTime
    started_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None
    updated_at: UtcDateTime


class ExportIn(BaseModel):
    level: str = Field(default="study", pattern="^(study|series)$")
    ids: list[Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]] = Field(
        min_length=1, max_length=10_000)


StudyIds = list[Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]]


class ShareIn(BaseModel):
    """Share a project's images (or some studies or subjects) into a research project, with
    their clinical tables if asked."""

    to: str = Field(min_length=1, max_length=63, description="The research project.")
    study_ids: StudyIds = Field(default_factory=list, max_length=10_000,
                                description="Only these studies (default: all).")
    subject_ids: StudyIds = Field(default_factory=list, max_length=100_000,
                                  description="Only these subjects: their studies (unless "
                                  "study_ids names them) and clinical data (default: all).")
    clinical: bool = Field(default=False, description="Also the clinical tables of the "
                           "subjects released (CSV and Parquet, pseudonyms, shifted dates), "
                           "stored as the research project's resources.")


class ReleaseIn(BaseModel):
    """Export a project through the de-identification pipeline (an identifiable project, under
    ``policy``) or as stored (a research project): to a zip to download from the job, or to a
    remote DICOM node configured by an administrator (``ae:NAME``)."""

    destination: str = Field(default="download", pattern=r"^(download|ae:[A-Za-z0-9._-]{1,64})$")
    policy: str | None = Field(default=None, max_length=200_000,
                               description="The policy (YAML) of an identifiable project's "
                               "export.")
    options: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list,
                                                                max_length=16)
    study_ids: StudyIds = Field(default_factory=list, max_length=10_000)
    subject_ids: StudyIds = Field(default_factory=list, max_length=100_000,
                                  description="Only these subjects (their studies, unless "
                                  "study_ids names them, and clinical data).")
    clinical: bool = Field(default=False, description="Also the clinical tables (CSV and "
                           "Parquet) in the zip, under clinical/; not to a DICOM node.")


class AuditEventOut(Out):
    seq: int
    at: str
    actor_id: str | None = None
    actor: str | None = None
    via: str | None = None
    token_id: str | None = None
    client: str | None = None
    method: str
    route: str
    action: str
    project_id: str | None = None
    level: str | None = None
    object_id: str | None = None
    status: int
    outcome: str
    detail: str | None = None
    hash: str


class AuditVerificationOut(Out):
    ok: bool = Field(description="True when no event was edited, inserted or deleted.")
    events: int = Field(description="Events checked.")
    head_seq: int = Field(description="The chain's last sequence number.")
    unknown_key_events: int = Field(description="Events under a key the server no longer "
                                    "has (IMAGEBANK_PREVIOUS_SECRET_KEYS), so unchecked.")
    problems: list[str] = Field(description="What is wrong, one line each (at most 100).")


# -- governance: consent and the National Data Opt-out (decision 0023) -------------------------
class OptOutListOut(Out):
    id: str = Field(description="The version: the same numbers and date are one version.")
    list_date: str
    entries: int = Field(description="NHS numbers on the list (stored as keyed hashes).")
    sha256: str = Field(description="SHA-256 of the list's sorted NHS numbers.")
    imported_at: UtcDateTime


class ConsentImportOut(Out):
    records: int
    added: int = Field(description="Records new to the archive.")
    people: int
    by_status: dict[str, int]
    flagged_research_subjects: int
    flagged_site_subjects: int
    cleared: int = Field(description="Withdrawal flags a later grant cleared.")


# -- a project's governance policy (decisions 0016, 0019, 0031) -------------------------------
class PolicySiteOut(Out):
    name: str | None = None
    ods_code: str | None = None
    contact: str | None = None


class SafePrivateOut(Out):
    creator: str = Field(description="The Private Creator value.")
    element: str = Field(description="The element's low byte, e.g. 0x0C.")
    justification: str | list[str]


class RectangleOut(Out):
    x: int
    y: int
    width: int
    height: int


class MaskingRuleOut(Out):
    manufacturer: str
    model: str
    rows: int | None = None
    columns: int | None = None
    rectangles: list[RectangleOut]


class RetentionOut(Out):
    days: int | None = None
    project_end: bool


class PolicyDocumentOut(Out):
    """A policy in its normalised form (as `imagebank policy show --json` prints it)."""

    version: int
    site: PolicySiteOut | None = None
    allowed_options: list[str] = Field(description="Profile options (PS3.15 E.3) a release "
                                       "may use; any other is not allowed.")
    safe_private: list[SafePrivateOut] = Field(description="Private elements kept under "
                                               "retain_safe_private; all others are removed.")
    masking: list[MaskingRuleOut] = Field(description="Rectangles blanked in burned-in text.")
    smallest_count: int = Field(description="Counts from 1 to one below it are not shown.")
    count_rounding: int = Field(default=1, description="Counts shown are rounded to a "
                                "multiple of it (1: exact).")
    national_data_opt_out: bool
    retention: RetentionOut
    review_date: str | None = None


class ProjectPolicyOut(Out):
    project: str
    zone: str
    text: str | None = Field(description="The policy's YAML, as stored with the project "
                             "(None: an identifiable project has none).")
    policy: PolicyDocumentOut | None = None
    sites: list[str] = Field(default=[], description="The sites whose policies it merges.")
    options: list[str] = Field(default=[], description="The options the project's releases "
                               "use (each allowed by the policy).")
    applies: str = Field(description="What governs the project's releases, in words.")


# -- cohort search (decision 0022) ------------------------------------------------------------
class CohortSearchIn(BaseModel):
    query: str = Field(min_length=1, max_length=10_000, description="A cohort query, e.g. "
                       "condition[ICD10:C34*] within 90 days before imaging[modality = CT].")
    limit: int = Field(default=100, ge=0, le=10_000, description="IDs listed at most per "
                       "level, when the result is exact.")


class ShownCountOut(Out):
    count: int | None = Field(description="The count shown (rounded under the policy when "
                              "not exact); null when suppressed.")
    shown: str = Field(description="The count as text: '120', or '< 10' when suppressed.")
    suppressed: bool


class CohortCountsOut(Out):
    people: ShownCountOut = Field(description="Distinct subjects (people), never rows.")
    studies: ShownCountOut
    series: ShownCountOut


class CohortStudyOut(Out):
    id: str
    subject_id: str
    study_instance_uid: str
    study_date: str | None = None
    modalities_in_study: str | None = None


class CohortSeriesOut(Out):
    id: str
    study_id: str
    series_instance_uid: str
    modality: str | None = None


class CohortOut(Out):
    """Counts of a cohort; exact with IDs for a site project's members, owners and site
    administrators, else suppressed and rounded under the policy, without IDs."""

    project: str
    query: str = Field(description="The query as normalised text.")
    exact: bool
    counts: CohortCountsOut
    smallest_count: int | None = Field(default=None, description="Counts from 1 to this "
                                       "minus 1 are suppressed (when not exact).")
    rounding: int | None = Field(default=None, description="Counts are rounded to a multiple "
                                 "of this (when not exact).")
    subjects: list[str] | None = Field(default=None, description="Subject IDs (exact only).")
    studies: list[CohortStudyOut] | None = None
    series: list[CohortSeriesOut] | None = None
    truncated: bool | None = Field(default=None, description="A list stops at the limit.")
