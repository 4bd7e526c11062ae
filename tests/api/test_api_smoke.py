"""A first walk through the API on both databases (the detailed suites are beside it)."""

from __future__ import annotations

from apiworld import World, problem


def test_admin_lists_projects_and_outsider_sees_none(world: World, client) -> None:
    response = client.get("/api/v1/projects", headers=world.headers("admin"))
    assert response.status_code == 200
    assert sorted(p["id"] for p in response.json()) == ["alpha", "beta", "lab"]
    response = client.get("/api/v1/projects", headers=world.headers("outsider"))
    assert response.status_code == 200 and response.json() == []
    response = client.get("/api/v1/projects/alpha/studies", headers=world.headers("outsider"))
    assert response.status_code == 404
    assert problem(response)["detail"] == "No project 'alpha'."


def test_a_project_keeps_an_owner(world: World, client) -> None:
    owner = world.headers("owner")
    response = client.put("/api/v1/projects/alpha/members/owner", headers=owner,
                          json={"role": "member"})
    assert response.status_code == 409
    assert "only owner" in problem(response)["detail"]
    response = client.delete("/api/v1/projects/alpha/members/owner", headers=owner)
    assert response.status_code == 409
    roles = {m["username"]: m["role"] for m in world.runtime.accounts.members("alpha")}
    assert roles["owner"] == "owner"
    # With a second owner, the first may step down.
    assert client.put("/api/v1/projects/alpha/members/member", headers=owner,
                      json={"role": "owner"}).status_code == 200
    assert client.delete("/api/v1/projects/alpha/members/owner",
                         headers=owner).status_code == 204
    roles = {m["username"]: m["role"] for m in world.runtime.accounts.members("alpha")}
    assert "owner" not in roles and roles["member"] == "owner"
