"""API test helpers: a populated archive with one user per role, and HTTP clients.

``world`` holds three projects: "alpha" (two synthetic studies), "beta" (one study, on which
nobody but the administrator has a role) and "lab", a research project (policy leeds.yaml,
owned by ``owner``, empty until something is shared into it). Users, all with the same
password:

* ``admin`` - site administrator, no project role;
* ``owner``, ``member``, ``collaborator``, ``viewer`` - that role on "alpha";
* ``outsider`` - no role anywhere.

Each has an API token with every scope (``world.tokens[name]``); ``world.ids`` holds IDs of
alpha's objects (subject, study, series, instance, resource) and beta's (``beta_*``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from imagebank.api.app import create_app
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.services.runtime import Runtime
from testkit import import_optout_list

PASSWORD = "plum orchard velvet lantern"
ROLES = ("owner", "member", "collaborator", "viewer")
USERS = ("admin", *ROLES, "outsider")
DOCS_POLICIES = Path(__file__).resolve().parents[2] / "docs" / "policies"


@dataclass
class World:
    runtime: Runtime
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def headers(self, user: str | None) -> dict[str, str]:
        return {} if user is None else {"Authorization": f"Bearer {self.tokens[user]}"}


def write_study(folder: Path, patient: int, *, study_number: int = 0, slices: int = 2,
                modality: str = "CT") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    spec = SeriesSpec(modality=modality, slices=slices, rows=32, columns=32)
    for i, ds in enumerate(make_study(SyntheticPatient.make(patient), study_number=study_number,
                                      series=[spec])):
        (folder / f"p{patient}-s{study_number}-{i:04d}.dcm").write_bytes(to_bytes(ds))


def build_world(runtime: Runtime, tmp_path: Path) -> World:
    archive = runtime.archive
    world = World(runtime)
    archive.create_project("alpha", "Alpha study")
    archive.create_project("beta", "Beta study")
    # A research project (the de-identified zone) that alpha's owner shares into.
    archive.create_project("lab", "Research lab", zone="research",
                           policy=(DOCS_POLICIES / "leeds.yaml").read_text())
    import_optout_list(archive)
    write_study(tmp_path / "alpha", 0, study_number=0, slices=3)
    write_study(tmp_path / "alpha", 1, study_number=0, slices=2, modality="MR")
    write_study(tmp_path / "beta", 2, study_number=0, slices=2)
    archive.ingest([tmp_path / "alpha"], "alpha", workers=1)
    archive.ingest([tmp_path / "beta"], "beta", workers=1)
    for project, prefix in (("alpha", ""), ("beta", "beta_")):
        study = archive.studies(project)[0]
        series = archive.series(study["id"])[0]
        instance = archive.instances(series["id"])[0]
        resource = archive.add_resource(project, "study", study["id"], "notes.txt", b"notes",
                                        "text/plain")
        world.ids.update({f"{prefix}subject": study["subject_id"], f"{prefix}study": study["id"],
                          f"{prefix}series": series["id"], f"{prefix}instance": instance["id"],
                          f"{prefix}resource": resource["id"]})
    accounts = runtime.accounts
    for name in USERS:
        accounts.add_user(name, PASSWORD, admin=name == "admin")
        token, _ = accounts.create_token(name, scopes=["read", "write", "admin"])
        world.tokens[name] = token
    for role in ROLES:
        accounts.grant("alpha", role, role)
    accounts.grant("lab", "owner", "owner")
    return world


@contextmanager
def sqlite_world_and_client(folder: Path) -> Iterator[tuple[World, TestClient]]:
    """A world on SQLite in ``folder`` and its client, for a module-scoped fixture."""
    from imagebank.services.archive import Archive

    archive = Archive.open(folder / "data", workers=1)
    try:
        world = build_world(Runtime.for_archive(archive), folder)
        with make_client(world) as client:
            yield world, client
    finally:
        archive.close()


def make_client(world: World, *, background: bool = False) -> TestClient:
    """An in-process HTTPS client (so the Secure session cookie is kept)."""
    app = create_app(world.runtime, background=background)
    return TestClient(app, base_url="https://testserver", raise_server_exceptions=False)


def problem(response: Any) -> dict[str, Any]:
    """The problem+json body of an error response (asserting its form)."""
    assert response.headers["content-type"].startswith("application/problem+json"), (
        response.status_code, response.text[:200])
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["detail"] and body["code"]
    return body
