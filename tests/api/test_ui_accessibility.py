"""The web UI against WCAG 2.1 AA, as far as a machine can tell: axe-core (Deque's rules
engine, the one browser audits use) run in Debian's Chromium on every main page, and the
pages worked by keyboard alone. A violation fails with its rule and the elements at fault."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from apiworld import PASSWORD, World
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect
from uikit import sign_in

#: WCAG 2.0 and 2.1, levels A and AA (axe's tags).
WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
           "resultTypes": ["violations"]}
AXE = Axe()

#: (who, the page's path from the world); None signs in no one.
PAGES: list[tuple[str | None, Callable[[World], str]]] = [
    (None, lambda w: "/ui/sign-in"),
    ("owner", lambda w: "/ui/projects"),
    ("owner", lambda w: "/ui/projects/alpha"),
    ("outsider", lambda w: "/ui/projects/alpha"),  # the "not found" page
]


def _violations(page: Page) -> list[str]:
    results: Any = AXE.run(page, options=WCAG_AA)
    return [f"{v['id']} ({v['impact']}): {v['help']} at "
            + ", ".join(str(n["target"]) for n in v["nodes"][:5])
            for v in results.response["violations"]]


@pytest.mark.parametrize(("user", "path"), PAGES,
                         ids=[f"{u or 'anonymous'}-{i}" for i, (u, _p) in enumerate(PAGES)])
def test_the_page_has_no_wcag_aa_violation(served: tuple[World, str], page: Page,
                                           user: str | None, path: Callable[[World], str]
                                           ) -> None:
    world, base = served
    if user is not None:
        sign_in(page, base, user)
    page.goto(base + path(world))
    expect(page.locator("main")).to_be_visible()
    assert _violations(page) == []


def test_axe_finds_a_violation_when_there_is_one(served: tuple[World, str], page: Page
                                                 ) -> None:
    # The check above can fail: an unlabelled input and an image without alt are caught.
    _world, base = served
    page.goto(f"{base}/ui/sign-in")
    page.evaluate("""() => {
        const main = document.querySelector('main');
        main.insertAdjacentHTML('beforeend', '<input id="x"><img src="/ui/static/ui.css">');
    }""")
    found = " ".join(_violations(page))
    assert "label" in found and "image-alt" in found


def test_signing_in_and_browsing_by_keyboard_alone(served: tuple[World, str], page: Page
                                                   ) -> None:
    _world, base = served
    page.goto(f"{base}/ui/sign-in")
    # The username field has the focus from the start, then the password.
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type("viewer")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/ui/projects")
    # The skip link is the first stop of every page.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    # Tab to the project's link and follow it with Enter.
    link = page.get_by_role("link", name="Alpha study")
    for _ in range(30):
        page.keyboard.press("Tab")
        if link.evaluate("e => e === document.activeElement"):
            break
    expect(link).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/ui/projects/alpha")


def test_no_page_breaks_the_content_security_policy_or_throws(served: tuple[World, str],
                                                              page: Page) -> None:
    # The pages run under a strict policy (no inline script or style): a page that needed
    # one would be broken in every browser. Chromium reports each refusal on the console.
    world, base = served
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    sign_in(page, base, "owner")
    ids = world.ids
    alpha = f"{base}/ui/projects/alpha"
    for url in (f"{base}/ui/projects", alpha, f"{alpha}/subjects",
                f"{alpha}/subjects/{ids['subject']}", f"{alpha}/studies/{ids['study']}",
                f"{alpha}/series/{ids['series']}/view", f"{alpha}/search", f"{alpha}/cohort",
                f"{alpha}/upload", f"{alpha}/quarantine", f"{alpha}/members",
                f"{alpha}/policy", f"{alpha}/audit", f"{base}/ui/jobs", f"{base}/ui/account"):
        response = page.goto(url)
        assert response is not None and response.status == 200, url
        page.wait_for_load_state("networkidle")
    assert problems == []
    # The check sees a refusal when there is one.
    page.evaluate("() => { const s = document.createElement('script');"
                  " s.textContent = 'window.inlineRan = 1'; document.body.append(s); }")
    page.wait_for_timeout(200)
    assert page.evaluate("() => window.inlineRan") is None
    assert any("Content Security Policy" in p for p in problems)
