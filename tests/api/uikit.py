"""Helpers for the web UI's browser tests: the application served by uvicorn on loopback (in
a thread of the test process), and signing in through the page as a user would. The
fixtures `browser`, `page` and `served` (tests/api/conftest.py) use them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from apiworld import PASSWORD, World, build_world
from playwright.sync_api import ConsoleMessage, Page, expect

from imagebank.api.app import create_app
from imagebank.services.archive import Archive
from imagebank.services.runtime import Runtime
from testkit import free_port

#: Debian's Chromium (package chromium); Playwright's own browser downloads are never used.
CHROMIUM = "/usr/bin/chromium"


@contextmanager
def serve(runtime: Runtime, *, background: bool = False) -> Iterator[str]:
    """The application over ``runtime`` served on a free loopback port; yields its base URL.
    ``background`` runs the job runner too (for pages whose work is a job)."""
    config = uvicorn.Config(create_app(runtime, background=background), host="127.0.0.1",
                            port=free_port(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def served_world(folder: Path, *, background: bool = False) -> Iterator[tuple[World, str]]:
    """The standard world (apiworld) in a new SQLite archive under ``folder``, served:
    (world, base URL)."""
    archive = Archive.open(folder / "data", workers=1)
    try:
        world = build_world(Runtime.for_archive(archive), folder)
        with serve(world.runtime, background=background) as base:
            yield world, base
    finally:
        archive.close()


def page_errors(page: Page) -> list[str]:
    """The page's uncaught errors (unhandled rejections too) and console errors, collected
    as they come. The browser's own log of each HTTP error answer is left out: tests make
    those on purpose."""
    seen: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            seen.append(message.text)

    page.on("pageerror", lambda error: seen.append(str(error)))
    page.on("console", console)
    return seen


def sign_in(page: Page, base: str, user: str, password: str = PASSWORD, *,
            expect_success: bool = True) -> None:
    """Sign in on the sign-in page (and wait for the projects page, unless told not to)."""
    page.goto(f"{base}/ui/sign-in")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    if expect_success:
        expect(page).to_have_url(f"{base}/ui/projects")
