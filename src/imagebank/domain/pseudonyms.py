"""Keyed pseudonyms for de-identification (pure; no I/O).

Everything here is an HMAC-SHA-256 under the *project's* de-identification key, with a label
per use, so that:

* the same identifier gives the same pseudonym at every site sharing the project's key, and
  different projects (different keys) give unrelated pseudonyms;
* a short identifier (a 10-digit NHS number) cannot be recovered by hashing candidates
  without the key (PS3.15 E.3.10 advises keyed hashing for exactly this reason);
* UIDs map one-to-one (a 128-bit keyed hash in the ``2.25`` root of PS3.5 B.2: a collision
  is as likely as for random UUIDs), so every reference still resolves after remapping;
* dates shift by a per-patient keyed offset, so intervals within a patient are kept, and
  the same offset can be applied to the patient's clinical data later.

PatientID becomes ``IB`` and 16 base-32 characters (80 bits); PatientName becomes
``PSEUDONYM^`` with the same text, so a name never carries anything but the pseudonym.
IssuerOfPatientID takes part in the PatientID's pseudonym (PatientID is only unique with its
issuer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import date, timedelta

#: Smallest key accepted (bytes): a project key is 32 random bytes.
MIN_KEY_BYTES = 16
#: Dates move by 1 to MAX_SHIFT_DAYS days into the past (never 0: a shift is always visible).
MAX_SHIFT_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Pseudonymiser:
    """Pseudonyms under one project's key."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"a de-identification key has at least {MIN_KEY_BYTES} bytes")

    def _mac(self, label: str, *parts: str) -> bytes:
        message = "\x1f".join((label, *parts)).encode("utf-8")
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def patient_id(self, patient_id: str, issuer: str = "") -> str:
        """The pseudonym of a PatientID (with its issuer): ``IB`` + 16 base-32 characters."""
        digest = self._mac("patient-id", issuer.strip(), patient_id.strip())
        return "IB" + base64.b32encode(digest[:10]).decode("ascii")

    def patient_name(self, patient_id: str, issuer: str = "") -> str:
        """The PatientName to write: derived from the patient's ID, never from the name (two
        spellings of one patient's name give one pseudonym)."""
        return "PSEUDONYM^" + self.patient_id(patient_id, issuer)

    def uid(self, uid: str) -> str:
        """The remapped UID: ``2.25.`` + a 128-bit keyed hash (at most 44 characters)."""
        digest = self._mac("uid", uid.strip().rstrip("\x00"))
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def date_shift_days(self, patient_id: str, issuer: str = "") -> int:
        """The patient's date offset: 1 to MAX_SHIFT_DAYS days back, the same for every
        object (and clinical record) of that patient in the project."""
        digest = self._mac("date-shift", issuer.strip(), patient_id.strip())
        return -(1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS)


def shift_date(value: str, days: int) -> str:
    """A DA value (YYYYMMDD, or a range A-B of them) moved by ``days``; ValueError if it is
    not one (the caller then empties it: a malformed date is not kept)."""
    text = value.strip(" \x00")
    if "-" in text:
        low, _, high = text.partition("-")
        return "-".join(shift_date(part, days) if part else "" for part in (low, high))
    if len(text) != 8 or not text.isdigit():
        raise ValueError("not a DA value")
    moved = date(int(text[:4]), int(text[4:6]), int(text[6:])) + timedelta(days=days)
    return moved.strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str:
    """A DT value moved by ``days``: its date part moved, its time and offset kept. A DT of
    a year or a year and month only cannot be shifted by days: ValueError (emptied)."""
    text = value.strip(" \x00")
    if len(text) < 8 or not text[:8].isdigit():
        raise ValueError("not a DT value with a full date")
    return shift_date(text[:8], days) + text[8:]
