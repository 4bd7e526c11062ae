"""Remote AEs (C-MOVE destinations): validation, uniqueness, lookup by AE title."""

from __future__ import annotations

import pytest

from imagebank.domain.errors import ConflictError, InvalidInputError, NotFoundError
from imagebank.services.archive import Archive
from imagebank.services.nodes import Nodes


def test_add_list_lookup_and_remove(archive: Archive) -> None:
    """On SQLite and PostgreSQL."""
    nodes = Nodes(archive.sessions)
    added = nodes.add_remote(" PACS ", "10.1.2.3", 104)
    assert {k: added[k] for k in ("name", "ae_title", "host", "port")} == {
        "name": "PACS", "ae_title": "PACS", "host": "10.1.2.3", "port": 104}
    assert added["created_at"] is not None
    nodes.add_remote("workstation", "WS-7.Radiology.example.org", 11112, ae_title="WS7_AE")
    nodes.add_remote("v6", "FD00:0:0::5", 4242, ae_title="V6")
    assert [(r["name"], r["ae_title"], r["host"], r["port"]) for r in nodes.remotes()] == [
        ("PACS", "PACS", "10.1.2.3", 104),
        ("v6", "V6", "fd00::5", 4242),
        ("workstation", "WS7_AE", "ws-7.radiology.example.org", 11112),
    ]
    # A C-MOVE names its destination by AE title (case-sensitive, surrounding spaces not
    # significant); the name is only for managing it.
    assert nodes.destination("WS7_AE")["name"] == "workstation"  # type: ignore[index]
    assert nodes.destination(" PACS ")["port"] == 104  # type: ignore[index]
    assert nodes.destination("workstation") is None
    assert nodes.destination("pacs") is None
    assert nodes.remote("workstation")["ae_title"] == "WS7_AE"

    with pytest.raises(ConflictError, match="named 'PACS' already exists"):
        nodes.add_remote("PACS", "10.9.9.9", 104)
    with pytest.raises(ConflictError, match="'workstation' already has the AE title 'WS7_AE'"):
        nodes.add_remote("other", "10.9.9.9", 104, ae_title="WS7_AE")
    assert nodes.remote("PACS")["host"] == "10.1.2.3"  # unchanged

    nodes.remove_remote("PACS")
    assert nodes.destination("PACS") is None
    with pytest.raises(NotFoundError, match="No remote AE named 'PACS'"):
        nodes.remove_remote("PACS")
    with pytest.raises(NotFoundError, match="ae list"):
        nodes.remote("PACS")
    # Its AE title is free again.
    nodes.add_remote("again", "10.1.2.3", 104, ae_title="PACS")
    assert nodes.destination("PACS")["name"] == "again"  # type: ignore[index]


@pytest.mark.parametrize(("name", "host", "port", "title", "words"), [
    ("SEVENTEEN_CHARS_X", "10.1.2.3", 104, None, "AE title"),
    ("PACS", "10.1.2.3", 104, "A\\B", "backslash"),
    ("PACS", "10.1.2.3", 104, "   ", "AE title"),
    ("x" * 65, "10.1.2.3", 104, "PACS", "name"),
    ("TAB\tNAME", "10.1.2.3", 104, "PACS", "name"),
    ("PACS", "10.1.2", 104, None, "host"),
    ("PACS", "pacs_1.example.org", 104, None, "host"),
    ("PACS", "-pacs.example.org", 104, None, "host"),
    ("PACS", "pacs..example.org", 104, None, "host"),
    ("PACS", "", 104, None, "host"),
    ("PACS", "a" * 64 + ".org", 104, None, "host"),
    ("PACS", "10.1.2.3", 0, None, "1 to 65535"),
    ("PACS", "10.1.2.3", 65536, None, "1 to 65535"),
])
def test_invalid_remote_aes_are_refused(sqlite_archive: Archive, name: str, host: str,
                                        port: int, title: str | None, words: str) -> None:
    nodes = Nodes(sqlite_archive.sessions)
    with pytest.raises(InvalidInputError, match=words):
        nodes.add_remote(name, host, port, ae_title=title)
    assert nodes.remotes() == []


def test_names_that_are_not_ae_titles_need_one(sqlite_archive: Archive) -> None:
    nodes = Nodes(sqlite_archive.sessions)
    long_name = "research-pacs-at-site-two"
    with pytest.raises(InvalidInputError, match="AE title"):
        nodes.add_remote(long_name, "localhost", 104)
    nodes.add_remote(long_name, "localhost", 104, ae_title="SITE2_PACS")
    assert nodes.remote(long_name)["ae_title"] == "SITE2_PACS"
