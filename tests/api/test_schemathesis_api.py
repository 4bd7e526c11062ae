"""Property-based contract tests: every operation of the OpenAPI document, driven by
schemathesis against the application in this process, answers as the document says.

The schema is loaded from the running application (``from_asgi``) over a populated world on
SQLite, authenticated as the administrator with a full-scope token. Each operation gets
positive cases (valid by the document) and negative ones (invalid by it). Positive cases aim
half the time at real objects of project "alpha", so that the 200 answers and their schemas
are checked too, not only the 404s of random IDs.

schemathesis' own pytest integration (``@schema.parametrize()`` over a lazily loaded schema)
does not run under pytest 9.2 (it writes ``Node._nodeid``, which is gone), so each operation
is a plain parametrised test that runs Hypothesis over the operation's case strategies; the
operations are listed from the committed OpenAPI snapshot, and a test checks that this list
is exactly the application's.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from apiworld import World, build_world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from imagebank.api.app import create_app
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.services.archive import Archive
from imagebank.services.runtime import Runtime

SNAPSHOT = Path(__file__).with_name("openapi.snapshot.json")
OPENAPI_URL = "/api/v1/openapi.json"
MAX_EXAMPLES = 20
#: Every check of schemathesis that judges an answer against the document, and
#: ``negative_data_rejection`` (a request the document forbids is refused with a 4xx).
#: ``positive_data_acceptance`` is left out on purpose: the document does not (yet) state
#: every rule the server applies - the upload bodies are opaque bytes (application/dicom,
#: application/zip) of which most are not DICOM, a role or a scope is a string checked by
#: the domain (400 with the list of valid values), a password must pass the password rules,
#: StudyDate must be a date or a range - so a request valid by the document may rightly be
#: refused with 400.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, negative_data_rejection]
SETTINGS = settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


# The upload bodies are opaque bytes: send them as schemathesis sends application/octet-stream.
schemathesis.serializer.alias(["application/dicom", "application/zip", "multipart/related"],
                              "application/octet-stream")


def _documented_operations() -> list[tuple[str, str]]:
    document = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    return [(method.upper(), path) for path, operations in document["paths"].items()
            for method in operations]


OPERATIONS = _documented_operations()


@dataclass
class Contract:
    world: World
    schema: Any
    real: dict[str, str]
    bodies: dict[str, bytes]


def _real_bodies() -> dict[str, bytes]:
    """A DICOM file and a zip of one, so that uploads are sometimes accepted."""
    spec = SeriesSpec(slices=1, rows=16, columns=16)
    dicom = to_bytes(next(make_study(SyntheticPatient.make(7), series=[spec])))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("one.dcm", to_bytes(next(make_study(SyntheticPatient.make(8),
                                                             series=[spec]))))
    return {"application/dicom": dicom, "application/zip": buffer.getvalue()}


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Contract]:
    """One world and one loaded schema for the whole module (building the world hashes
    passwords and ingests studies)."""
    tmp_path = tmp_path_factory.mktemp("contract")
    archive = Archive.open(tmp_path / "data", workers=1)
    try:
        world = build_world(Runtime.for_archive(archive), tmp_path)
        app = create_app(world.runtime, background=False)
        schema = schemathesis.openapi.from_asgi(OPENAPI_URL, app)
        ids = world.ids
        real = {"project": "alpha", "subject": ids["subject"], "study": ids["study"],
                "series": ids["series"], "instance": ids["instance"],
                "resource": ids["resource"], "username": "viewer"}
        yield Contract(world, schema, real, _real_bodies())
    finally:
        # schemathesis keeps the application's lifespan (its audit writer) running for the
        # rest of the process; end it before the archive closes.
        asgi.shutdown_lifespans()
        archive.close()


def _strategy(contract: Contract, operation: Any, mode: GenerationMode) -> Any:
    generated = operation.as_strategy(mode)
    names = {p.name for p in operation.path_parameters}
    real = {name: contract.real[name] for name in names if name in contract.real}
    if mode is GenerationMode.NEGATIVE or not real:
        return generated
    strategies = [generated, operation.as_strategy(mode, path_parameters=real)]
    for media_type in operation.get_request_payload_content_types():
        if media_type in contract.bodies:
            strategies.append(operation.as_strategy(
                mode, path_parameters=real, media_type=media_type,
                body=contract.bodies[media_type]))
    return st.one_of(strategies)


def test_the_fuzzed_operations_are_the_applications(contract: Contract) -> None:
    live = {(op.method.upper(), op.path) for op in
            (result.ok() for result in contract.schema.get_all_operations())}
    assert live == set(OPERATIONS), (
        "The OpenAPI snapshot is out of date: run "
        "`.venv/bin/python scripts/update_openapi_snapshot.py`.")


@pytest.mark.parametrize(("method", "path"), OPERATIONS,
                         ids=[f"{method} {path}" for method, path in OPERATIONS])
def test_operation_answers_as_documented(contract: Contract, method: str, path: str) -> None:
    operation = contract.schema[path][method]
    headers = contract.world.headers("admin")
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @SETTINGS
        @given(case=_strategy(contract, operation, mode))
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # Nothing of the operation can be made invalid (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE, "no valid request could be generated"
        except Exception as exc:  # both modes are reported together
            failures.append(f"{mode.value}: {exc}")
    assert not failures, "\n\n".join(failures)
