"""The web UI in a real browser: Playwright driving Debian's /usr/bin/chromium (headless)
against the application served by uvicorn on loopback. Sign in, see one's projects, and see
nothing of a project without a role; a page without a session goes to the sign-in form."""

from __future__ import annotations

from typing import Any

from apiworld import World
from playwright.sync_api import Page, expect
from uikit import sign_in


def _project_ids(page: Page) -> list[Any]:
    return page.locator("tr[data-project]").evaluate_all(
        "rows => rows.map(r => r.dataset.project)")


def test_a_page_without_a_session_goes_to_sign_in(served: tuple[World, str], page: Page
                                                  ) -> None:
    _world, base = served
    page.goto(f"{base}/ui/projects")
    expect(page).to_have_url(f"{base}/ui/sign-in")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_an_owner_signs_in_and_sees_their_projects(served: tuple[World, str], page: Page
                                                   ) -> None:
    _world, base = served
    sign_in(page, base, "owner")
    expect(page).to_have_url(f"{base}/ui/projects")
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    assert sorted(_project_ids(page)) == ["alpha", "lab"]
    row = page.locator("tr[data-project=alpha]")
    expect(row).to_contain_text("owner")
    expect(row.locator("td.n").nth(1)).to_have_text("2")  # two studies
    assert page.locator("nav .who").inner_text() == "owner"


def test_a_wrong_password_is_said_and_nothing_is_shown(served: tuple[World, str], page: Page
                                                       ) -> None:
    _world, base = served
    sign_in(page, base, "owner", "not the password at all", expect_success=False)
    expect(page.get_by_role("alert")).not_to_be_empty()
    expect(page).to_have_url(f"{base}/ui/sign-in")


def test_a_user_without_a_role_sees_nothing_of_a_project(served: tuple[World, str],
                                                         page: Page) -> None:
    _world, base = served
    sign_in(page, base, "outsider")
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    assert _project_ids(page) == []
    expect(page.locator("main")).not_to_contain_text("alpha")
    expect(page.locator("main")).to_contain_text("no role on any project")


def test_a_viewer_browses_to_a_projects_studies(served: tuple[World, str], page: Page
                                                ) -> None:
    _world, base = served
    sign_in(page, base, "viewer")
    page.get_by_role("link", name="Alpha study").click()
    expect(page).to_have_url(f"{base}/ui/projects/alpha")
    expect(page.get_by_role("heading", name="Studies")).to_be_visible()
    assert page.locator("tr[data-study]").count() == 2
    expect(page.locator("main")).to_contain_text("MR")


def test_another_projects_page_is_not_found_for_an_outsider(served: tuple[World, str],
                                                           page: Page) -> None:
    _world, base = served
    sign_in(page, base, "outsider")
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    response = page.goto(f"{base}/ui/projects/alpha")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert page.locator("tr[data-study]").count() == 0
    ghost = page.goto(f"{base}/ui/projects/nosuchproject")
    assert ghost is not None and ghost.status == 404  # the same as a project that exists
