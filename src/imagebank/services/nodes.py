"""DICOM nodes: which project a called AE title stands for, and who may call it.

A project gets a called AE title (``imagebank project ae PROJECT --ae-title LUNG``); a
C-STORE to that title lands in that project. Each project lists the calling AE titles it
accepts, optionally with the address they must come from. Everything else is rejected at
association (decision 0010).

Remote AEs are the nodes imagebank sends to (``imagebank ae add PACS 10.1.2.3 104``): a C-MOVE
names its destination by AE title, and only a configured remote AE is ever sent to. They are
configured once per imagebank node, as PACS and workstations usually are.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imagebank.domain.errors import ConflictError, InvalidInputError, NotFoundError
from imagebank.index import nodes as sql
from imagebank.index.repo import get_project

#: PS3.5 AE VR: 1-16 characters of the default repertoire, no backslash or control
#: characters, not all spaces (leading and trailing spaces are not significant).
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def check_ae_title(value: str) -> str:
    title = value.strip()
    if not title or not _AE_RE.fullmatch(title):
        raise InvalidInputError(
            "An AE title is 1-16 printable ASCII characters without a backslash, e.g. "
            "IMAGEBANK or LUNG_STUDY.")
    return title


#: A remote AE's name: an AE title's characters, up to 64 of them.
_NAME_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,64}$")
#: RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def check_remote_name(value: str) -> str:
    name = value.strip()
    if not name or not _NAME_RE.fullmatch(name):
        raise InvalidInputError(
            "A remote AE's name is 1-64 printable ASCII characters without a backslash, e.g. "
            "PACS or RESEARCH_PACS.")
    return name


def check_host(value: str) -> str:
    """An IP address (written canonically) or a host name (lowercase; resolved only when
    an association is made)."""
    text = value.strip()
    try:
        return _peer(text)
    except ValueError:
        pass
    labels = text.lower().split(".")
    if (not text or len(text) > 253 or not all(_LABEL_RE.fullmatch(x) for x in labels)
            or labels[-1].isdigit()):
        raise InvalidInputError(
            "A remote AE's host is an IP address such as 10.1.2.3 or fd00::5, or a host name "
            "such as pacs.example.org.")
    return text.lower()


def check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise InvalidInputError("A remote AE's port is a TCP port number from 1 to 65535.")
    return value


def _address(value: str) -> str:
    """A calling node's address as written canonically (names are not resolved: an
    address list must not depend on DNS at association time)."""
    try:
        return _peer(value.strip())
    except ValueError:
        raise InvalidInputError(
            "A calling node's host is an IP address such as 10.1.2.3 or fd00::5 (names are "
            "not resolved).") from None


def _peer(value: str) -> str:
    ip = ipaddress.ip_address(value)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to an association request: the project, or why not."""

    project_id: str | None
    reason: str  # "ok", "called_unknown", "calling_not_allowed"

    @property
    def ok(self) -> bool:
        return self.project_id is not None and self.reason == "ok"


class Nodes:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def set_ae_title(self, project_id: str, ae_title: str | None) -> None:
        title = check_ae_title(ae_title) if ae_title else None
        try:
            with self.sessions.begin() as session:
                if get_project(session, project_id) is None:
                    raise NotFoundError(f"No project {project_id!r}.")
                sql.set_ae_title(session, project_id, title)
        except SQLIntegrityError:
            raise ConflictError(f"Another project already has the AE title {title!r}.") from None

    def project_of(self, ae_title: str) -> str | None:
        """The project whose called AE title this is, if any."""
        with self.sessions.begin() as session:
            return sql.project_of_ae(session, ae_title.strip())

    def ae_title(self, project_id: str) -> str | None:
        with self.sessions.begin() as session:
            return sql.ae_title_of(session, project_id)

    def allow(self, project_id: str, ae_title: str, host: str = "") -> None:
        title = check_ae_title(ae_title)
        host = _address(host) if host.strip() else ""
        with self.sessions.begin() as session:
            if get_project(session, project_id) is None:
                raise NotFoundError(f"No project {project_id!r}.")
            sql.allow(session, project_id, title, host)

    def disallow(self, project_id: str, ae_title: str) -> None:
        with self.sessions.begin() as session:
            if not sql.disallow(session, project_id, check_ae_title(ae_title)):
                raise NotFoundError(f"{ae_title!r} is not allowed on project {project_id!r}.")

    def callers(self, project_id: str | None = None) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            return sql.calling_aes(session, project_id)

    def admit(self, called: str, calling: str, address: str) -> Admission:
        """May ``calling`` at ``address`` send to the project called ``called``?"""
        called, calling = called.strip(), calling.strip()
        try:
            address = _peer(address)
        except ValueError:
            address = ""
        with self.sessions.begin() as session:
            project = sql.project_of_ae(session, called)
            if project is None:
                return Admission(None, "called_unknown")
            for row in sql.calling_aes(session, project):
                if row["ae_title"] == calling and row["host"] in ("", address):
                    return Admission(project, "ok")
        return Admission(project, "calling_not_allowed")

    # -- remote AEs: where imagebank sends -----------------------------------------------------
    def add_remote(self, name: str, host: str, port: int, ae_title: str | None = None
                   ) -> dict[str, Any]:
        """Configure a remote AE; ``ae_title`` defaults to ``name``."""
        title = check_ae_title(name if ae_title is None else ae_title)
        name = check_remote_name(name)
        host, port = check_host(host), check_port(port)
        try:
            with self.sessions.begin() as session:
                if sql.get_remote_ae(session, name) is not None:
                    raise ConflictError(f"A remote AE named {name!r} already exists: remove it "
                                        "first to change it.")
                taken = sql.remote_ae_titled(session, title)
                if taken is not None:
                    raise ConflictError(f"The remote AE {taken['name']!r} already has the AE "
                                        f"title {title!r}.")
                sql.add_remote_ae(session, name, title, host, port)
        except SQLIntegrityError:  # added by someone else meanwhile
            raise ConflictError(f"A remote AE named {name!r} or titled {title!r} already "
                                "exists.") from None
        return self.remote(name)

    def remove_remote(self, name: str) -> None:
        with self.sessions.begin() as session:
            if not sql.remove_remote_ae(session, name.strip()):
                raise NotFoundError(f"No remote AE named {name.strip()!r}.")

    def remote(self, name: str) -> dict[str, Any]:
        with self.sessions.begin() as session:
            found = sql.get_remote_ae(session, name.strip())
        if found is None:
            raise NotFoundError(f"No remote AE named {name.strip()!r} (see `imagebank ae "
                                "list`).")
        return found

    def remotes(self) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            return sql.list_remote_aes(session)

    def destination(self, ae_title: str) -> dict[str, Any] | None:
        """The remote AE with this AE title (a C-MOVE's MoveDestination), if configured."""
        with self.sessions.begin() as session:
            return sql.remote_ae_titled(session, ae_title.strip())
