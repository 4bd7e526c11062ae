"""Admission rules of DICOM nodes (the listener's tests drive them with DCMTK)."""

from __future__ import annotations

import pytest

from imagebank.domain.errors import ConflictError, InvalidInputError
from imagebank.services.archive import Archive
from imagebank.services.nodes import Nodes


def test_admission_by_called_and_calling_ae_and_address(sqlite_archive: Archive) -> None:
    sqlite_archive.create_project("p")
    sqlite_archive.create_project("q")
    nodes = Nodes(sqlite_archive.sessions)
    nodes.set_ae_title("p", " LUNG ")
    nodes.allow("p", "CT1")
    nodes.allow("p", "MR1", "10.1.2.3")
    assert nodes.admit("LUNG", "CT1", "192.0.2.7").project_id == "p"
    assert nodes.admit("LUNG", "CT1", "192.0.2.7").ok
    assert nodes.admit("LUNG", "MR1", "10.1.2.3").ok
    assert nodes.admit("LUNG", "MR1", "::ffff:10.1.2.3").ok  # IPv4-mapped IPv6 peer
    assert nodes.admit("LUNG", "MR1", "10.1.2.4").reason == "calling_not_allowed"
    assert nodes.admit("LUNG", "XX", "10.1.2.3").reason == "calling_not_allowed"
    assert nodes.admit("NOPE", "CT1", "10.1.2.3").reason == "called_unknown"
    assert not nodes.admit("NOPE", "CT1", "10.1.2.3").ok
    with pytest.raises(ConflictError):
        nodes.set_ae_title("q", "LUNG")
    for bad in ("localhost", "10.1.2", "not an address"):
        with pytest.raises(InvalidInputError, match="IP address"):
            nodes.allow("p", "CT2", bad)
    for bad in ("", "A" * 17, "BACK\\SLASH", "TAB\tX"):
        with pytest.raises(InvalidInputError):
            nodes.set_ae_title("p", bad or " ")
    assert [c["ae_title"] for c in nodes.callers("p")] == ["CT1", "MR1"]
