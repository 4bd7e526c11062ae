"""Internal identifiers.

Internal IDs are stable and derived from DICOM UIDs (and, for subjects, from PatientID *with*
IssuerOfPatientID), but carry no patient data: they are a keyed hash (HMAC-SHA-256, PS3.15's
advice for pseudonyms applies equally here) under the archive's own secret, so that a short
identifier such as a 10-digit NHS number cannot be recovered by hashing every candidate.
See docs/decisions/0002-internal-ids.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field

#: Length in hex characters of an internal ID (128 bits).
ID_HEX_LENGTH = 32

_PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def is_valid_project_id(value: str) -> bool:
    """A project ID is a short lowercase slug chosen by its creator."""
    return bool(_PROJECT_RE.fullmatch(value))


def is_internal_id(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))


@dataclass(frozen=True, slots=True)
class IdDeriver:
    """Derives internal IDs from identifiers under the archive's secret key."""

    key: bytes
    #: The HMAC keyed once; each ID copies it (half the cost of keying a new one, which
    #: counts at 100,000 clinical facts a second).
    _keyed: hmac.HMAC = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("the archive ID key must be at least 16 bytes")
        object.__setattr__(self, "_keyed", hmac.new(self.key, digestmod=hashlib.sha256))

    def _derive(self, *parts: str) -> str:
        mac = self._keyed.copy()
        mac.update("\x1f".join(parts).encode("utf-8"))
        return mac.hexdigest()[:ID_HEX_LENGTH]

    def subject_id(self, project_id: str, patient_id: str, issuer_of_patient_id: str) -> str:
        """PatientID is only unique with its issuer (STYLE.md trap 5)."""
        return self._derive("subject", project_id, issuer_of_patient_id, patient_id)

    def study_id(self, project_id: str, study_instance_uid: str) -> str:
        return self._derive("study", project_id, study_instance_uid)

    def series_id(self, project_id: str, series_instance_uid: str) -> str:
        return self._derive("series", project_id, series_instance_uid)

    def fact_id(self, project_id: str, source_id: str) -> str:
        """A clinical fact, by the source's own ID of the statement (issue 6)."""
        return self._derive("fact", project_id, source_id)

    def person_key(self, issuer: str, value: str) -> str:
        """A patient across projects, for consent and the opt-out (issue 6): a keyed hash of
        their identifier, so the index never holds the identifiers of those lists."""
        return self._derive("person", issuer, value)

    def consent_id(self, person_key: str, *fields: str) -> str:
        """A consent record, by all it says: the same record imported again is one."""
        return self._derive("consent", person_key, *fields)

    def instance_id(self, project_id: str, sop_instance_uid: str) -> str:
        return self._derive("instance", project_id, sop_instance_uid)


def instance_object_key(project_id: str, instance_id: str, sha256: str) -> str:
    """Object key of a stored DICOM instance.

    Built from internal IDs and the content checksum only, never from DICOM values or file
    names. The checksum suffix makes publishing idempotent and never destructive: the same
    bytes land on the same key, different bytes for the same instance on another key.
    """
    fanout = f"{instance_id[:2]}/{instance_id[2:4]}"
    return f"{project_id}/dicom/{fanout}/{instance_id}-{sha256[:16]}.dcm"


def quarantine_object_key(project_id: str, quarantine_id: str) -> str:
    return f"{project_id}/quarantine/{quarantine_id[:2]}/{quarantine_id}.bin"


def resource_object_key(project_id: str, resource_id: str) -> str:
    return f"{project_id}/resources/{resource_id[:2]}/{resource_id}"


_INSTANCE_KEY_RE = re.compile(
    r"^(?P<project>[a-z0-9][a-z0-9_-]{0,62})/dicom/[0-9a-f]{2}/[0-9a-f]{2}/"
    r"(?P<instance>[0-9a-f]{32})-(?P<sha>[0-9a-f]{16})\.dcm$"
)


def parse_instance_object_key(key: str) -> tuple[str, str, str] | None:
    """(project_id, instance_id, sha256 prefix) of an instance object key, or None."""
    match = _INSTANCE_KEY_RE.fullmatch(key)
    if match is None:
        return None
    return match["project"], match["instance"], match["sha"]
