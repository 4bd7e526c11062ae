"""The governance pages of the web UI (decision 0031): the audit trail, a project's policy
and members, users and tokens, and your account. In Debian's Chromium (Playwright) against
the application on loopback, and through TestClient for access and escaping; the REST
routes they added (a project's policy, the audit trail's filters and verification) on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiworld import DOCS_POLICIES, PASSWORD, World, problem
from axe_playwright_python.sync_playwright import Axe
from fastapi.testclient import TestClient
from playwright.sync_api import Dialog, Page, Route, expect
from sqlalchemy import text
from uikit import served_world, sign_in

from imagebank.services.policies import load_policy, policy_document

HOSTILE = "<img src=x onerror=alert(1)>"
V1 = "/api/v1"
HTML = {"Accept": "text/html"}


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, str]]:
    """A world of this module's own, served: the tests that change roles, users and tokens
    change it, not the shared one."""
    with served_world(tmp_path_factory.mktemp("ui-admin")) as served:
        yield served


def _accept_dialogs(page: Page, said: list[str]) -> None:
    def accept(dialog: Dialog) -> None:
        said.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)


def _column(page: Page, selector: str) -> list[str]:
    texts: list[str] = page.locator(selector).all_inner_texts()
    return texts


# -- the audit trail ----------------------------------------------------------------------------
def test_an_owner_sees_their_own_requests_in_the_projects_trail_and_filters_them(
        served: tuple[World, str], page: Page) -> None:
    _world, base = served
    sign_in(page, base, "owner")
    # Requests of the owner's own, through the API with the browser's session.
    assert page.request.get(f"{base}{V1}/projects/alpha/studies").status == 200
    assert page.request.get(f"{base}{V1}/projects/alpha/members").status == 200
    page.goto(f"{base}/ui/projects/alpha/audit")
    expect(page.get_by_role("heading", name="Audit trail of Alpha study")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("shown, newest first")
    rows = page.locator("#audit-events tbody tr")
    studies = rows.filter(has_text="GET /api/v1/projects/{project}/studies")
    expect(studies.first).to_contain_text("owner · session")
    expect(rows.filter(has_text="GET /api/v1/projects/{project}/members").first
           ).to_contain_text("manage")
    seqs = [int(s) for s in rows.evaluate_all("rows => rows.map(r => r.dataset.seq)")]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) >= 2  # newest first

    page.get_by_label("Action").fill("manage")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("status")).to_contain_text("That is all of them")
    expect(page.locator("#audit-events tbody tr:not([data-action=manage])")).to_have_count(0)
    actions = rows.evaluate_all("rows => rows.map(r => r.dataset.action)")
    assert actions and set(actions) == {"manage"}
    # The filters went to the API, not into the page's address.
    assert page.url == f"{base}/ui/projects/alpha/audit"

    page.get_by_label("Action").fill("")
    page.get_by_label("Outcome").select_option("denied")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("status")).to_have_text("No events match.")
    expect(rows).to_have_count(0)


def test_a_member_is_refused_the_projects_audit_trail(served: tuple[World, str],
                                                     page: Page) -> None:
    _world, base = served
    sign_in(page, base, "member")
    response = page.goto(f"{base}/ui/projects/alpha/audit")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator("#audit-events")).to_have_count(0)
    # ... and the project's menu does not offer it
    page.goto(f"{base}/ui/projects/alpha")
    expect(page.get_by_role("navigation", name="Project")).to_be_visible()
    expect(page.get_by_role("link", name="Audit trail")).to_have_count(0)


def test_the_administrator_reads_the_whole_trail_and_verifies_the_chain(
        served: tuple[World, str], page: Page) -> None:
    world, base = served
    world.runtime.audit.admin_event(HOSTILE, "user_add", level="user", object_id="x",
                                    detail={"note": HOSTILE})
    sign_in(page, base, "admin")
    for project in ("alpha", "beta"):
        assert page.request.get(f"{base}{V1}/projects/{project}").status == 200
    page.goto(f"{base}/ui/audit")
    expect(page.get_by_role("heading", name="Audit trail", exact=True)).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text("shown, newest first")
    projects = set(page.locator("#audit-events tbody tr td:nth-child(6)").all_inner_texts())
    assert {"alpha", "beta"} <= projects
    # A hostile actor and detail are shown as text: no element is made of them.
    hostile = page.locator("#audit-events tbody tr", has_text=HOSTILE)
    expect(hostile).to_have_count(1)
    assert page.locator("#audit-events img").count() == 0

    page.get_by_role("button", name="Verify the chain").click()
    expect(page.locator("#chain-status")).to_contain_text("The chain is intact")
    events = int(page.locator("#chain-status").inner_text().split(": ")[1].split()[0]
                 .replace(",", ""))
    assert events == world.runtime.audit.verify().events - 1  # (reading it added one)


def test_the_older_button_pages_through_the_trail(served: tuple[World, str],
                                                 page: Page) -> None:
    world, base = served
    for n in range(55):
        world.runtime.audit.admin_event("pager", "token_create", object_id=str(n))
    sign_in(page, base, "admin")
    page.goto(f"{base}/ui/audit")
    page.get_by_label("User").fill("pager")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("status").first).to_have_text("50 events shown, newest first.")
    page.get_by_role("button", name="Older events").click()
    expect(page.get_by_role("status").first).to_contain_text("55 events shown")
    objects = page.locator("#audit-events tbody tr td:nth-child(7)").all_inner_texts()
    assert objects == [str(n) for n in range(54, -1, -1)]
    expect(page.get_by_role("button", name="Older events")).to_be_hidden()


def test_older_events_of_a_previous_filter_never_join_a_new_ones(served: tuple[World, str],
                                                                 page: Page) -> None:
    world, base = served
    for n in range(55):
        world.runtime.audit.admin_event("racer", "token_create", object_id=f"r{n}")
    for n in range(3):
        world.runtime.audit.admin_event("latecomer", "token_create", object_id=f"l{n}")
    seen: list[str] = []
    page.on("pageerror", lambda error: seen.append(str(error)))
    sign_in(page, base, "admin")
    page.goto(f"{base}/ui/audit")
    status = page.get_by_role("status").first
    page.get_by_label("User").fill("racer")
    page.get_by_role("button", name="Filter").click()
    expect(status).to_have_text("50 events shown, newest first.")
    # "Older events" is slow to answer; meanwhile another filter is asked for, and answered.
    held: list[Route] = []
    page.route("**/api/v1/audit?*", lambda route: held.append(route)
               if "before=" in route.request.url else route.continue_())
    page.get_by_role("button", name="Older events").click()
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(20)
    assert len(held) == 1
    page.get_by_label("User").fill("latecomer")
    page.get_by_role("button", name="Filter").click()
    expect(status).to_have_text("3 events shown, newest first. That is all of them.")
    with page.expect_response(lambda response: "before=" in response.url):
        held[0].continue_()
    page.wait_for_timeout(300)  # the late answer has been read by now
    objects = _column(page, "#audit-events tbody tr td:nth-child(7)")
    assert objects == ["l2", "l1", "l0"]
    expect(status).to_have_text("3 events shown, newest first. That is all of them.")
    expect(page.get_by_role("button", name="Older events")).to_be_hidden()
    assert seen == []


# -- the policy ---------------------------------------------------------------------------------
def test_the_research_projects_policy_page_shows_its_rules(served: tuple[World, str],
                                                           page: Page) -> None:
    _world, base = served
    sign_in(page, base, "owner")
    page.goto(f"{base}/ui/projects/lab/policy")
    main = page.locator("main")
    expect(page.get_by_role("heading", name="Governance policy of Research lab")
           ).to_be_visible()
    expect(page.get_by_role("link", name="Policy")).to_have_attribute("aria-current", "page")
    expect(main).to_contain_text("Counts from 1 to 9 are never shown")
    expect(main).to_contain_text("3650 days after release")
    expect(page.locator("#policy-site")).to_contain_text("Leeds Teaching Hospitals NHS Trust, RR8")
    uids = page.locator("tr[data-option=retain_uids]")
    expect(uids).to_contain_text("not allowed")
    expect(uids).to_contain_text("Every UID is replaced")
    expect(page.locator("tr[data-option=retain_long_modified_dates] td").first
           ).to_have_text("allowed")
    expect(page.locator("#safe-private")).to_contain_text("SIEMENS MR HEADER")
    expect(page.locator("#masking")).to_contain_text("LOGIQ E9")
    expect(page.locator("#masking")).to_contain_text("1024 × 768")
    yaml = page.locator("pre.yaml")
    expect(yaml).to_contain_text("smallest_count: 10")
    expect(yaml).to_contain_text("national_data_opt_out: true")


def test_an_identifiable_projects_policy_page_says_what_applies(served: tuple[World, str],
                                                                page: Page) -> None:
    _world, base = served
    sign_in(page, base, "viewer")
    page.goto(f"{base}/ui/projects/alpha")
    page.get_by_role("link", name="Policy").click()
    expect(page).to_have_url(f"{base}/ui/projects/alpha/policy")
    expect(page.locator("main")).to_contain_text("has no policy of its own")
    expect(page.locator("main")).to_contain_text("shared into a research project")
    expect(page.locator("pre.yaml")).to_have_count(0)


# -- members ------------------------------------------------------------------------------------
def test_an_owner_changes_adds_and_removes_members(own: tuple[World, str], page: Page) -> None:
    world, base = own
    accounts = world.runtime.accounts
    said: list[str] = []
    _accept_dialogs(page, said)
    sign_in(page, base, "owner")
    page.goto(f"{base}/ui/projects/alpha")
    page.get_by_role("link", name="Members").click()
    expect(page).to_have_url(f"{base}/ui/projects/alpha/members")
    status = page.get_by_role("status")

    page.get_by_label("Role of viewer", exact=True).select_option("collaborator")
    page.get_by_role("button", name="Save the role of viewer").click()
    expect(status).to_have_text("viewer is now collaborator.")
    roles = {m["username"]: m["role"] for m in accounts.members("alpha")}
    assert roles["viewer"] == "collaborator"
    page.reload()
    expect(page.get_by_label("Role of viewer", exact=True)).to_have_value("collaborator")
    expect(page.locator("tr[data-member=viewer] .granted-by")).to_have_text("owner")

    # the only owner cannot step down: the API's words, in the live region
    page.get_by_label("Role of owner", exact=True).select_option("member")
    page.get_by_role("button", name="Save the role of owner").click()
    expect(status).to_contain_text("only owner")
    expect(status).to_have_class("status error")

    page.get_by_label("Username").fill("outsider")
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Add").click()
    expect(status).to_have_text("outsider was given the role viewer.")
    expect(page.get_by_label("Role of outsider", exact=True)).to_have_value("viewer")
    page.get_by_role("button", name="Remove outsider").click()
    expect(status).to_have_text("outsider was removed from the project.")
    assert said[-1].startswith("Remove outsider from this project?")
    expect(page.locator("tr[data-member=outsider]")).to_have_count(0)
    assert "outsider" not in {m["username"] for m in accounts.members("alpha")}

    page.get_by_label("Username").fill("nobody-here")
    page.get_by_role("button", name="Add").click()
    expect(status).to_have_text("No user 'nobody-here'.")

    # restore the viewer's role through the page
    page.get_by_label("Role of viewer", exact=True).select_option("viewer")
    page.get_by_role("button", name="Save the role of viewer").click()
    expect(status).to_have_text("viewer is now viewer.")
    assert {m["username"]: m["role"] for m in accounts.members("alpha")}["viewer"] == "viewer"


# -- users and tokens ---------------------------------------------------------------------------
def test_the_administrator_creates_a_user_and_a_token_that_works(own: tuple[World, str],
                                                                  page: Page) -> None:
    world, base = own
    said: list[str] = []
    _accept_dialogs(page, said)
    sign_in(page, base, "admin")
    page.get_by_role("link", name="Users").click()
    expect(page).to_have_url(f"{base}/ui/users")
    status = page.locator("#users-status")
    expect(page.locator("tr[data-user=owner]")).to_contain_text("alpha: owner")

    form = page.locator("#new-user")
    form.get_by_label("Username").fill("newcomer")
    form.get_by_label("Password").fill("short")
    form.get_by_role("button", name="Create the user").click()
    expect(status).to_contain_text("12")  # the password rule, in the API's words
    expect(page.locator("tr[data-user=newcomer]")).to_have_count(0)
    form.get_by_label("Username").fill("newcomer")
    form.get_by_label("Password").fill("granite harbour lily sunrise")
    form.get_by_role("button", name="Create the user").click()
    expect(status).to_have_text("The user newcomer was created.")
    expect(page.locator("tr[data-user=newcomer] .active")).to_have_text("yes")
    assert world.runtime.accounts.get_user("newcomer")["is_admin"] is False

    tokens = page.locator("#user-token")
    tokens.get_by_label("User", exact=True).select_option("newcomer")
    tokens.get_by_label("Name").fill("service")
    tokens.get_by_role("button", name="Create the token").click()
    expect(status).to_contain_text("A token for newcomer was created")
    value = page.get_by_label("New token").input_value()
    assert value.startswith("ibt_")
    expect(page.get_by_label("New token")).to_be_focused()
    me = httpx.get(f"{base}{V1}/me", headers={"Authorization": f"Bearer {value}"})
    assert me.status_code == 200 and me.json()["username"] == "newcomer"
    assert me.json()["scopes"] == ["read"]

    page.get_by_role("button", name="Deactivate newcomer").click()
    expect(status).to_have_text("newcomer is deactivated.")
    assert said[-1].startswith("Deactivate newcomer?")
    expect(page.get_by_role("button", name="Activate newcomer")).to_be_focused()
    refused = httpx.get(f"{base}{V1}/me", headers={"Authorization": f"Bearer {value}"})
    assert refused.status_code == 401
    page.get_by_role("button", name="Activate newcomer").click()
    expect(status).to_have_text("newcomer is active.")
    assert world.runtime.accounts.get_user("newcomer")["is_active"] is True
    # the token is not on the page once it is left
    page.reload()
    assert value not in page.content()


def test_a_user_creates_and_revokes_their_own_token(own: tuple[World, str], page: Page
                                                   ) -> None:
    world, base = own
    said: list[str] = []
    _accept_dialogs(page, said)
    sign_in(page, base, "member")
    page.get_by_role("link", name="Your account: member").click()
    expect(page).to_have_url(f"{base}/ui/account")
    expect(page.locator("#my-roles")).to_contain_text("Alpha study")
    expect(page.locator("#my-roles")).to_contain_text("member")
    status = page.locator("#tokens-status")

    form = page.locator("#new-token")
    form.get_by_label("Name").fill("laptop")
    form.get_by_label("write: upload, import, delete").check()
    form.get_by_label("Expires after").select_option(label="30 days")
    form.get_by_role("button", name="Create the token").click()
    expect(status).to_have_text("The token was created: copy it now, it is not shown again.")
    value = page.get_by_label("New token").input_value()
    token_id = value.split("_")[1]
    row = page.locator(f"tr[data-token='{token_id}']")
    expect(row).to_contain_text(f"ibt_{token_id}_…")
    expect(row).to_contain_text("read, write")
    expect(row.locator(".state")).to_have_text("active")
    headers = {"Authorization": f"Bearer {value}"}
    assert httpx.get(f"{base}{V1}/me", headers=headers).json()["scopes"] == ["read", "write"]
    made = {t["id"]: t for t in world.runtime.accounts.tokens("member")}[token_id]
    assert 29 < (made["expires_at"] - made["created_at"]).total_seconds() / 86400 <= 30

    page.reload()
    assert value not in page.content()
    expect(row).to_contain_text(f"ibt_{token_id}_…")
    row.get_by_role("button", name="Revoke the token laptop").click()
    expect(status).to_have_text("The token laptop was revoked.")
    assert said[-1].startswith("Revoke the token laptop?")
    expect(row.locator(".state")).to_have_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    assert httpx.get(f"{base}{V1}/me", headers=headers).status_code == 401

    form.get_by_label("read: list, search, download, read audit trails").uncheck()
    form.get_by_role("button", name="Create the token").click()
    expect(status).to_have_text("Choose at least one scope for the token.")


# -- accessibility ------------------------------------------------------------------------------
WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
           "resultTypes": ["violations"]}


@pytest.mark.parametrize(("user", "path"), [
    ("owner", "/ui/projects/alpha/audit"), ("admin", "/ui/audit"),
    ("owner", "/ui/projects/lab/policy"), ("owner", "/ui/projects/alpha/members"),
    ("admin", "/ui/users"), ("member", "/ui/account")])
def test_the_pages_have_no_wcag_aa_violation(served: tuple[World, str], page: Page, user: str,
                                             path: str) -> None:
    _world, base = served
    sign_in(page, base, user)
    page.goto(base + path)
    expect(page.locator("main h1")).to_be_visible()
    if "audit" in path:
        expect(page.locator("#audit-status")).not_to_be_empty()
    results: Any = Axe().run(page, options=WCAG_AA)
    violations = [f"{v['id']}: {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
                  for v in results.response["violations"]]
    assert violations == []


# -- access and escaping (TestClient) -----------------------------------------------------------
PAGES = ("/ui/projects/alpha/audit", "/ui/projects/alpha/policy", "/ui/projects/alpha/members")


def test_an_outsider_finds_no_governance_page_of_a_project(sqlite_world: World,
                                                           sqlite_client: TestClient) -> None:
    client = sqlite_client
    for path in PAGES:
        page = client.get(path, headers={**sqlite_world.headers("outsider"), **HTML})
        ghost = client.get(path.replace("alpha", "nosuchproject"),
                           headers={**sqlite_world.headers("outsider"), **HTML})
        assert page.status_code == ghost.status_code == 404, path
        assert "No project &#39;alpha&#39;." in page.text
        assert "Alpha study" not in page.text
    api = client.get(f"{V1}/projects/alpha/policy", headers=sqlite_world.headers("outsider"))
    assert problem(api)["detail"] == "No project 'alpha'."


def test_pages_refuse_roles_without_the_permission(sqlite_world: World,
                                                   sqlite_client: TestClient) -> None:
    client = sqlite_client
    refused = [("member", "/ui/projects/alpha/audit"), ("viewer", "/ui/projects/alpha/members"),
               ("member", "/ui/projects/alpha/members"), ("owner", "/ui/users"),
               ("owner", "/ui/audit"), ("viewer", "/ui/users")]
    for user, path in refused:
        page = client.get(path, headers={**sqlite_world.headers(user), **HTML})
        assert page.status_code == 403, (user, path)
        assert "<h1>Not allowed</h1>" in page.text
    allowed = [("viewer", "/ui/projects/alpha/policy"), ("owner", "/ui/projects/alpha/audit"),
               ("admin", "/ui/projects/alpha/members"), ("outsider", "/ui/account")]
    for user, path in allowed:
        assert client.get(path, headers={**sqlite_world.headers(user), **HTML}
                          ).status_code == 200, (user, path)
    # without a session, a browser is sent to sign in
    assert client.get("/ui/users", headers=HTML, follow_redirects=False
                      ).headers["location"] == "/ui/sign-in"


def test_hostile_names_are_escaped(sqlite_world: World, sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    world.runtime.accounts.create_token("viewer", name=HOSTILE)
    account = client.get("/ui/account", headers={**world.headers("viewer"), **HTML})
    assert account.status_code == 200
    assert HOSTILE not in account.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in account.text

    policy = (DOCS_POLICIES / "leeds.yaml").read_text().replace(
        "Information Governance team (example)", "<script>alert(1)</script>").replace(
        "Diffusion b-value; a number", HOSTILE)
    world.runtime.archive.create_project("hostile", "<b>Bold</b> lab", zone="research",
                                         policy=policy)
    world.runtime.accounts.grant("hostile", "viewer", "viewer")
    shown = client.get("/ui/projects/hostile/policy", headers={**world.headers("viewer"), **HTML})
    assert shown.status_code == 200
    for raw in ("<script>alert(1)</script>", HOSTILE, "<b>Bold</b>"):
        assert raw not in shown.text
    assert shown.text.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2  # site and YAML
    assert "&lt;b&gt;Bold&lt;/b&gt; lab" in shown.text


def test_the_account_page_shows_a_tokens_prefix_never_the_token(
        sqlite_world: World, sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    token, row = world.runtime.accounts.create_token("viewer", name="script")
    world.runtime.accounts.revoke_token(
        world.runtime.accounts.create_token("viewer", name="old")[1]["id"])
    page = client.get("/ui/account", headers={**world.headers("viewer"), **HTML}).text
    assert f"ibt_{row['id']}_…" in page
    assert token.split("_", 2)[2] not in page
    assert page.count('class="state">revoked<') == 1
    assert page.count("Revoke the token") == 2  # the world's own token and "script"


# -- the REST routes ----------------------------------------------------------------------------
def test_the_policy_route_gives_a_research_projects_policy(world: World, client: TestClient
                                                           ) -> None:
    answer = client.get(f"{V1}/projects/lab/policy", headers=world.headers("owner"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    leeds = DOCS_POLICIES / "leeds.yaml"
    assert body["zone"] == "research"
    assert body["text"] == leeds.read_text()
    expected = policy_document(load_policy(leeds))
    assert body["policy"] == expected  # exactly what `imagebank policy show --json` prints
    assert body["sites"] == ["Leeds Teaching Hospitals NHS Trust"]
    assert body["options"] == []
    assert "strictest merge" in body["applies"]

    identifiable = client.get(f"{V1}/projects/alpha/policy", headers=world.headers("viewer"))
    assert identifiable.status_code == 200
    assert identifiable.json()["text"] is None and identifiable.json()["policy"] is None
    assert "no policy of its own" in identifiable.json()["applies"]
    assert client.get(f"{V1}/projects/lab/policy", headers=world.headers("viewer")
                      ).status_code == 404  # no role on lab


def test_the_policy_route_names_the_sites_a_project_merges(world: World, client: TestClient
                                                          ) -> None:
    texts = [(DOCS_POLICIES / f"{site}.yaml").read_text() for site in ("leeds", "oxford")]
    made = client.post(f"{V1}/projects", headers=world.headers("admin"), json={
        "id": "merged", "zone": "research", "policies": texts,
        "options": ["retain_long_modified_dates"]})
    assert made.status_code == 201, made.text
    body = client.get(f"{V1}/projects/merged/policy", headers=world.headers("admin")).json()
    assert body["sites"] == ["site 1", "site 2"]
    assert body["options"] == ["retain_long_modified_dates"]
    assert body["policy"]["smallest_count"] == 10  # leeds's, the larger
    assert body["policy"]["retention"] == {"days": 1825, "project_end": True}  # oxford's
    assert "site" not in body["policy"]  # two sites: no one site names it


def _events(client: TestClient, world: World, path: str, **params: Any) -> list[dict[str, Any]]:
    answer = client.get(path, headers=world.headers("admin"), params=params)
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()
    return events


def test_the_audit_routes_filter_and_page_newest_first(world: World, client: TestClient
                                                       ) -> None:
    owner, viewer = world.headers("owner"), world.headers("viewer")
    for _ in range(4):
        assert client.get(f"{V1}/projects/alpha/studies", headers=owner).status_code == 200
    assert client.get(f"{V1}/projects/alpha/members", headers=viewer).status_code == 403
    assert client.get(f"{V1}/projects/beta", headers=owner).status_code == 404
    whole = f"{V1}/audit"
    every = _events(client, world, whole, limit=1000)
    top = every[-1]["seq"]
    assert [e["seq"] for e in every] == sorted(e["seq"] for e in every)  # oldest first
    newest = _events(client, world, whole, order="desc", limit=3)
    # newest first, the first of them the read of `every` (audited before it was answered)
    assert [e["seq"] for e in newest] == [top + 1, top, top - 1]
    assert newest[0]["route"] == whole
    older = _events(client, world, whole, order="desc", limit=3, before=newest[-1]["seq"])
    assert [e["seq"] for e in older] == [newest[-1]["seq"] - n for n in (1, 2, 3)]

    denied = _events(client, world, whole, outcome="denied", actor="viewer", limit=1000)
    assert [e["route"] for e in denied] == ["/api/v1/projects/{project}/members"]
    mine = _events(client, world, f"{V1}/projects/alpha/audit", actor="owner",
                   action="search", limit=1000)
    assert len(mine) == 4 and {(e["actor"], e["action"], e["project_id"], e["route"])
                               for e in mine} == {
        ("owner", "search", "alpha", "/api/v1/projects/{project}/studies")}
    assert not any(e["project_id"] == "beta" for e in _events(
        client, world, f"{V1}/projects/alpha/audit", limit=1000))

    last = every[-1]["at"]
    assert _events(client, world, whole, to=every[0]["at"]) == []
    after = _events(client, world, whole, **{"from": last})
    assert after and all(e["at"] >= last for e in after)
    naive = _events(client, world, whole, **{"from": last[:26]})  # no zone: UTC
    # the same events, and the read of `after` since
    assert [e["seq"] for e in naive] == [e["seq"] for e in after] + [after[-1]["seq"] + 1]
    bad = client.get(whole, headers=world.headers("admin"), params={"action": "<script>"})
    assert bad.status_code == 422 and "<script>" not in bad.text
    far = client.get(whole, headers=world.headers("admin"),
                     params={"from": "0001-01-01T00:00:00+05:00"})
    assert far.status_code == 400
    assert problem(far)["detail"] == "A time filter is out of range."
    # A number is not a time (it would be read as seconds since 1970), nor a 13th month.
    number = client.get(whole, headers=world.headers("admin"), params={"from": "-1.5e-281"})
    assert number.status_code == 422
    month = client.get(whole, headers=world.headers("admin"), params={"to": "2026-13-01"})
    assert month.status_code == 400 and "ISO 8601" in problem(month)["detail"]
    day = _events(client, world, whole, to="2000-01-01")  # a date alone is midnight UTC
    assert day == []


def test_the_verification_route_finds_an_edited_event(tmp_path: Path, world: World,
                                                     client: TestClient) -> None:
    admin = world.headers("admin")
    intact = client.get(f"{V1}/audit/verification", headers=admin).json()
    assert intact["ok"] is True and intact["problems"] == []
    assert intact["events"] == intact["head_seq"] >= 1
    with world.runtime.archive.engine.begin() as connection:
        connection.execute(text("UPDATE audit_events SET actor = 'someone' WHERE seq = 1"))
    broken = client.get(f"{V1}/audit/verification", headers=admin).json()
    assert broken["ok"] is False
    assert any("event 1" in p for p in broken["problems"])
    assert client.get(f"{V1}/audit/verification", headers=world.headers("owner")
                      ).status_code == 403


def test_a_signed_in_browser_reads_the_account_page_as_themselves(
        sqlite_world: World, sqlite_client: TestClient) -> None:
    client = sqlite_client
    signed = client.post(f"{V1}/session", json={"username": "collaborator",
                                                "password": PASSWORD})
    assert signed.status_code == 200
    page = client.get("/ui/account", headers=HTML)
    assert page.status_code == 200
    assert '<dd id="me-username">collaborator</dd>' in page.text
    assert "a session (this browser)" in page.text
    assert f'content="{signed.json()["csrf_token"]}"' in page.text
