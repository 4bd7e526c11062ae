"""Consent and the opt-out list over the API (site administrators): lists are taken whole or
refused (400) with every problem by line, never a value; a withdrawal flags what was
shared; the audit trail names the administrator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from apiworld import World, problem, sqlite_world_and_client
from fastapi.testclient import TestClient

V1 = "/api/v1"
NHS = "9434765919"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, TestClient]]:
    with sqlite_world_and_client(tmp_path_factory.mktemp("governance")) as pair:
        yield pair


def _post(api: tuple[World, TestClient], path: str, body: bytes, user: str = "admin",
          **params: Any) -> Any:
    world, client = api
    return client.post(f"{V1}{path}", content=body, params=params,
                       headers={**world.headers(user), "Content-Type": "text/plain"})


def test_an_opt_out_list_is_imported_as_a_dated_version(api: tuple[World, TestClient]
                                                        ) -> None:
    world, client = api
    made = _post(api, "/optout-lists", f"# list\n{NHS}\n943 476 5870\n".encode(),
                 list_date="2026-10-01")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["list_date"] == "2026-10-01" and body["entries"] == 2
    listed = client.get(f"{V1}/optout-lists", headers=world.headers("admin")).json()
    assert body["id"] in [v["id"] for v in listed]
    assert listed[0]["list_date"] >= "2026-10-01"  # the newest applies
    refused = _post(api, "/optout-lists", b"1234567890\n", list_date="2026-10-02")
    assert refused.status_code == 400
    detail = problem(refused)["detail"]
    assert "line 1: not a valid NHS number" in detail and "1234567890" not in detail
    assert _post(api, "/optout-lists", b"x", list_date="yesterday").status_code == 422
    assert _post(api, "/optout-lists", b"\xff\xfe\x00", list_date="2026-10-03"
                 ).status_code == 400
    assert _post(api, "/optout-lists", NHS.encode(), user="owner").status_code == 403


def test_consents_are_imported_and_audited(api: tuple[World, TestClient]) -> None:
    world = api[0]
    done = _post(api, "/consents", f"nhs_number,project,status,date\n{NHS},lab,withdrawn,"
                 "2026-11-01\n".encode())
    assert done.status_code == 200, done.text
    assert done.json()["records"] == 1 and done.json()["by_status"] == {"withdrawn": 1}
    bad = _post(api, "/consents", b"nhs_number,status,date\n9434765919,maybe,2026-01-01\n")
    assert bad.status_code == 400
    assert "line 2: status must be one of" in problem(bad)["detail"]
    events = world.runtime.audit.events(limit=1000)
    mine = [e for e in events if e["action"] == "consent_import"]
    assert mine and mine[-1]["actor"] == "admin" and mine[-1]["via"] == "api"
    assert all(NHS not in str(e) for e in events)
