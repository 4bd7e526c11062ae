"""POST /projects/{project}/cohorts/search: exact counts and IDs for a site project's members,
owners and administrators; suppressed counts for its viewers and collaborators and for every
user of a research project; 422 with the position of a parse error; every search audited."""

from __future__ import annotations

import json
from typing import Any

from apiworld import World, problem
from fastapi.testclient import TestClient

from testkit import make_cohort_world

V1 = "/api/v1"
C34_CT = "condition[ICD10:C34*] within 90 days before imaging[modality = CT]"


def _search(client: TestClient, world: World, user: str, query: str, project: str = "alpha",
            **body: Any) -> Any:
    return client.post(f"{V1}/projects/{project}/cohorts/search", headers=world.headers(user),
                       json={"query": query, **body})


def test_who_sees_exact_counts_and_ids(world: World, client: TestClient) -> None:
    cohort = make_cohort_world(world.runtime.archive, "alpha")
    exact = {}
    for user in ("member", "owner", "admin"):
        response = _search(client, world, user, C34_CT)
        assert response.status_code == 200, response.text
        exact[user] = body = response.json()
        assert body["exact"] is True
        assert body["counts"]["people"] == {"count": 2, "shown": "2", "suppressed": False}
        assert sorted(body["subjects"]) == sorted([cohort.ids["alice"], cohort.ids["carol"]])
        assert {s["id"] for s in body["series"]} == {cohort.series_of["alice"][0],
                                                     cohort.series_of["carol"][0]}
        assert body["truncated"] is False and body["query"] == C34_CT
    for user in ("viewer", "collaborator"):
        body = _search(client, world, user, C34_CT).json()
        assert body["exact"] is False and body["subjects"] is None and body["series"] is None
        assert body["counts"]["people"] == {"count": None, "shown": "< 10", "suppressed": True}
        assert body["smallest_count"] == 10 and body["rounding"] == 1
        assert cohort.ids["alice"] not in json.dumps(body)
    # the two synthetic patients ingested into alpha are among the project's subjects too
    everyone = _search(client, world, "owner", "not report[]", limit=3).json()
    assert everyone["counts"]["people"]["count"] == 9 and len(everyone["subjects"]) == 3
    assert everyone["truncated"] is True


def test_a_research_project_is_never_exact(world: World, client: TestClient) -> None:
    make_cohort_world(world.runtime.archive, "lab")  # leeds.yaml: smallest count 10
    for user in ("owner", "admin"):
        body = _search(client, world, user, "condition[]", project="lab").json()
        assert body["exact"] is False and body["subjects"] is None
        assert body["counts"]["people"]["shown"] == "< 10"
    assert _search(client, world, "member", "condition[]", project="lab").status_code == 404


def test_a_parse_error_is_a_422_with_its_position(world: World, client: TestClient) -> None:
    response = _search(client, world, "viewer", "imaging[modalty = CT]")
    assert response.status_code == 422
    body = problem(response)
    assert body["position"] == 8 and body["code"] == "cohort_query"
    assert "Did you mean 'modality'?" in body["message"] and body["detail"] == body["message"]
    response = _search(client, world, "viewer", "")
    assert response.status_code == 422 and problem(response)["code"] == "invalid_request"
    response = _search(client, world, "viewer", "x" * 10_001)
    assert response.status_code == 422
    # an outsider learns nothing, not even whether the query parses
    response = _search(client, world, "outsider", "imaging[modalty = CT]")
    assert response.status_code == 404 and problem(response)["detail"] == "No project 'alpha'."


def test_every_search_is_audited(world: World, client: TestClient) -> None:
    make_cohort_world(world.runtime.archive, "alpha")
    _search(client, world, "viewer", C34_CT)
    _search(client, world, "member", C34_CT)
    _search(client, world, "member", "imaging[modality <]")
    events = [e for e in world.runtime.audit.events(project_id="alpha", limit=1000)
              if e["action"] == "cohort_search"]
    assert [(e["actor"], e["status"]) for e in events] == [
        ("viewer", 200), ("member", 200), ("member", 422)]
    details = [json.loads(e["detail"]) for e in events]
    assert details[0] == {"query": C34_CT, "exact": False, "people": "< 10",
                          "studies": "< 10", "series": "< 10"}
    assert details[1]["exact"] is True and details[1]["people"] == "2"
    assert details[2] == {"query": "imaging[modality <]", "position": 17}
