"""The OpenAPI document: pinned by a committed snapshot, and complete.

A change to the API changes ``openapi.snapshot.json`` in the same commit (regenerate it with
``.venv/bin/python scripts/update_openapi_snapshot.py``), so that reviewers see it. The
completeness tests hold every operation to the same standard: it says what it does, its
errors are documented as problem details, and its path parameters are constrained.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagebank.api.app import create_app
from imagebank.services.archive import Archive
from imagebank.services.runtime import Runtime

HERE = Path(__file__).resolve().parent
SNAPSHOT = HERE / "openapi.snapshot.json"
SCRIPT = HERE.parent.parent / "scripts" / "update_openapi_snapshot.py"
UPDATE = "Run `.venv/bin/python scripts/update_openapi_snapshot.py` and commit the snapshot."
PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
#: The only operations anyone may call without credentials.
PUBLIC = {("get", "/api/v1/health"), ("post", "/api/v1/session")}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("update_openapi_snapshot", SCRIPT)
    assert spec is not None and spec.loader is not None, SCRIPT
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The document as the application serves it at /api/v1/openapi.json."""
    archive = Archive.open(tmp_path_factory.mktemp("openapi") / "data", workers=1)
    try:
        app = create_app(Runtime.for_archive(archive), background=False)
        with TestClient(app, base_url="https://testserver") as client:
            response = client.get("/api/v1/openapi.json")
        assert response.status_code == 200, response.text[:300]
        yield response.json()
    finally:
        archive.close()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def test_document_matches_the_committed_snapshot(served: dict[str, Any]) -> None:
    script = _script()
    expected = SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""
    actual = script.render(served)
    if actual != expected:
        diff = list(difflib.unified_diff(expected.splitlines(), actual.splitlines(),
                                         "openapi.snapshot.json", "served", n=2, lineterm=""))
        pytest.fail(f"The OpenAPI document differs from the snapshot. {UPDATE}\n"
                    + "\n".join(diff[:60]) + ("\n..." if len(diff) > 60 else ""),
                    pytrace=False)


def test_the_update_script_writes_what_is_served(served: dict[str, Any]) -> None:
    script = _script()
    assert script.SNAPSHOT == SNAPSHOT
    assert script.render(script.openapi_document()) == script.render(served)
    text = script.render({"b": 1, "a": {"d": [2, 1], "c": "é"}})
    assert text.splitlines() == ['{', '  "a": {', '    "c": "é",', '    "d": [', '      2,',
                                 '      1', '    ]', '  },', '  "b": 1', '}']
    assert text.endswith("}\n")


def test_every_operation_says_what_it_does(served: dict[str, Any]) -> None:
    # FastAPI makes a summary from the function's name: only a description (the route's
    # docstring) tells a reader more than the path does.
    missing = [f"{method.upper()} {path}" for method, path, operation in _operations(served)
               if not operation.get("description", "").strip()]
    assert not missing, f"Give these routes a docstring: {missing}"


def test_every_error_is_a_documented_problem(served: dict[str, Any]) -> None:
    problems = []
    for method, path, operation in _operations(served):
        label = f"{method.upper()} {path}"
        responses = operation.get("responses", {})
        for status, response in responses.items():
            if (method, status) == ("post", "409") and "dicomweb" in path and set(
                    response.get("content", {})) == {"application/dicom+json"}:
                continue  # STOW-RS: PS3.18 10.5.3 prescribes a DICOM JSON body
            if status[0] in "45" and response.get("content") != PROBLEM:
                problems.append(f"{label}: {status} is not documented as a Problem")
        expected = set()
        if (method, path) not in PUBLIC:
            expected.add("401")
        if "{project}" in path:
            expected.add("404")
        if "requestBody" in operation:
            expected.add("400")
        if operation.get("parameters") or "requestBody" in operation:
            expected.add("422")
        problems += [f"{label}: {status} is not listed" for status in sorted(expected)
                     if status not in responses]
    assert not problems, "\n".join(problems)
    schema = served["components"]["schemas"]["Problem"]
    assert set(schema["required"]) >= {"title", "status", "detail", "code"}


def test_health_needs_no_credentials(served: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in _operations(served)}
    assert documented >= PUBLIC
    assert "401" not in served["paths"]["/api/v1/health"]["get"]["responses"]


def test_every_path_parameter_has_a_pattern(served: dict[str, Any]) -> None:
    loose = []
    for method, path, operation in _operations(served):
        names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        templated = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert names == templated, (method, path, names)
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and not parameter["schema"].get("pattern"):
                loose.append(f"{method.upper()} {path}: {parameter['name']}")
    assert not loose, f"Path parameters without a pattern: {loose}"
