"""The audit trail's hash chain (pure: the store of events is elsewhere).

Each event is a flat mapping of short values (IDs, codes, no patient data). Its ``hash`` is an
HMAC-SHA-256, under a key derived from the server's secret key, of the previous event's hash
and the event's canonical JSON. Editing, inserting or deleting an event therefore breaks the
chain at that point, and recomputing the chain needs the secret key, which is not in the
database. ``key_id`` names the key an event was written under, so a rotated key is reported
as such rather than as tampering. See docs/decisions/0008-audit-trail.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64

#: The fields an event's hash covers, in this order (``hash`` itself is excluded).
HASHED_FIELDS = (
    "seq",
    "at",
    "actor_id",
    "actor",
    "via",
    "token_id",
    "client",
    "method",
    "route",
    "action",
    "project_id",
    "level",
    "object_id",
    "status",
    "outcome",
    "detail",
    "key_id",
    "prev_hash",
)


def audit_key(secret: str) -> bytes:
    """The chain key derived from the server's secret key."""
    return hmac.new(secret.encode("utf-8"), b"imagebank audit chain v1", hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    """A short public name of a chain key (it reveals nothing of the key)."""
    return hmac.new(key, b"imagebank audit key id", hashlib.sha256).hexdigest()[:12]


def canonical(event: Mapping[str, Any]) -> bytes:
    values = [event.get(name) for name in HASHED_FIELDS]
    return json.dumps(values, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def event_hash(key: bytes, event: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical(event), hashlib.sha256).hexdigest()


def seal(
    key: bytes, events: Iterable[dict[str, Any]], prev_seq: int, prev_hash: str
) -> tuple[int, str]:
    """Number and hash ``events`` in place after (prev_seq, prev_hash); returns the new head."""
    kid = key_id(key)
    for event in events:
        prev_seq += 1
        event["seq"] = prev_seq
        event["key_id"] = kid
        event["prev_hash"] = prev_hash
        event["hash"] = prev_hash = event_hash(key, event)
    return prev_seq, prev_hash


@dataclass(slots=True)
class ChainReport:
    """What verifying the chain found."""

    events: int = 0
    problems: list[str] = field(default_factory=list)
    unknown_key_events: int = 0
    head_seq: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class ChainVerifier:
    """Checks events in ``seq`` order, one at a time (the trail may be large)."""

    MAX_PROBLEMS = 100

    def __init__(self, keys: Iterable[bytes]) -> None:
        self.keys = {key_id(k): k for k in keys}
        self.report = ChainReport()
        self._seq = 0
        self._hash = GENESIS

    def _problem(self, text: str) -> None:
        if len(self.report.problems) < self.MAX_PROBLEMS:
            self.report.problems.append(text)

    def feed(self, event: Mapping[str, Any]) -> None:
        self.report.events += 1
        seq = int(event["seq"])
        if seq != self._seq + 1:
            if seq <= self._seq:
                self._problem(f"event {seq} is out of order or repeated (after {self._seq})")
            else:
                self._problem(f"events {self._seq + 1}-{seq - 1} are missing (deleted)")
        if event.get("prev_hash") != self._hash:
            self._problem(
                f"event {seq} does not follow the event before it (inserted or "
                "the one before was edited)"
            )
        key = self.keys.get(str(event.get("key_id")))
        if key is None:
            self.report.unknown_key_events += 1
            self._problem(
                f"event {seq} was written under key {event.get('key_id')!r}, which "
                "is not configured (IMAGEBANK_PREVIOUS_SECRET_KEYS)"
            )
        elif not hmac.compare_digest(event_hash(key, event), str(event.get("hash"))):
            self._problem(f"event {seq} was edited: its hash does not match its content")
        self._seq = seq
        self._hash = str(event.get("hash"))

    def finish(self, head_seq: int, head_hash: str) -> ChainReport:
        """Compare the last event with the recorded head of the chain."""
        self.report.head_seq = head_seq
        if head_seq != self._seq or (head_seq and head_hash != self._hash):
            self._problem(
                f"the chain ends at event {self._seq} but its recorded head is "
                f"event {head_seq} (events at the end were deleted or edited)"
            )
        return self.report
