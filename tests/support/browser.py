"""Headless Chromium for browser tests: Debian's /usr/bin/chromium driven by Playwright's sync API.

Playwright's own browser download does not work offline, so tests use the system Chromium that
`make test-deps` installs (Debian package `chromium`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from re import Pattern
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps dialling Google's hosts, which a closed network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / ".test-artifacts"
"""Screenshots and other files worth a look after a run (gitignored)."""


def chromium_executable() -> Path:
    """The system Chromium; a missing one skips the test locally and fails it on CI."""
    if CHROMIUM.is_file():
        return CHROMIUM
    reason = f"Chromium not found at {CHROMIUM}: run `make test-deps` (installs Debian's chromium package)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """A headless Chromium for the duration of the block."""
    executable = chromium_executable()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_FLAGS))
        try:
            yield browser
        finally:
            browser.close()


ServerEvent = dict[str, Any]


class WebSocketLink:
    """Carries a page's WebSockets through Playwright so a test can cut the connection and restore it.

    While the link is cut, open sockets are closed and new ones are closed as soon as they are made,
    as a dropped network would; restoring it lets the page's next attempt through to the server.
    """

    def __init__(self, page: Page, url: str | Pattern[str]) -> None:
        self._up = True
        self._open: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        self._cut_at: Callable[[ServerEvent], bool] | None = None
        self.connections = 0
        """How many sockets reached the server through this link."""
        page.route_web_socket(url, self._route)

    def cut(self) -> None:
        self._up = False
        for page_side, server_side in self._open:
            page_side.close(code=1011, reason="link cut by the test")
            server_side.close()
        self._open.clear()

    def restore(self) -> None:
        self._up = True

    def cut_at(self, matches: Callable[[ServerEvent], bool]) -> None:
        """Cuts the link at the first server event that `matches`; the page never receives that event."""
        self._cut_at = matches

    def _route(self, page_side: WebSocketRoute) -> None:
        if not self._up:
            page_side.close(code=1011, reason="link is down")
            return
        server_side = page_side.connect_to_server()
        self._open.append((page_side, server_side))
        self.connections += 1
        page_side.on_message(server_side.send)

        def forward_to_page(message: str | bytes) -> None:
            matches = self._cut_at
            if matches is not None and isinstance(message, str) and matches(json.loads(message)):
                self._cut_at = None
                self.cut()
            else:
                page_side.send(message)

        server_side.on_message(forward_to_page)
