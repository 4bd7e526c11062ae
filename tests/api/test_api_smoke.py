"""A first walk through the API on both databases (the detailed suites are beside it)."""

from __future__ import annotations

from apiworld import World, problem


def test_admin_lists_projects_and_outsider_sees_none(world: World, client) -> None:
    response = client.get("/api/v1/projects", headers=world.headers("admin"))
    assert response.status_code == 200
    assert sorted(p["id"] for p in response.json()) == ["alpha", "beta"]
    response = client.get("/api/v1/projects", headers=world.headers("outsider"))
    assert response.status_code == 200 and response.json() == []
    response = client.get("/api/v1/projects/alpha/studies", headers=world.headers("outsider"))
    assert response.status_code == 404
    assert problem(response)["detail"] == "No project 'alpha'."
