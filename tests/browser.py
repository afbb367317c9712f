"""Headless Chromium for the report's browser tests, started with no network at all.

Debian's `chromium` driven by Playwright. The browser gets a fresh profile (its own user-data
dir, deleted afterwards), a proxy that nothing listens on (`127.0.0.1:9`, the discard port: any
request that tries to leave fails at once), and its own background traffic switched off
(component updates, sync, first-run pings, background networking). Every request the page makes
is recorded from Playwright's request events, so a test can assert the page fetched nothing but
itself and `data:` URLs; any other request is also aborted.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

DEAD_PROXY = "127.0.0.1:9"
"""The discard port on the loopback: nothing listens, so every proxied request fails at once."""
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    f"--proxy-server={DEAD_PROXY}",
    "--proxy-bypass-list=<-loopback>",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--metrics-recording-only",
]
"""No network: the dead proxy for everything (loopback included), and none of Chromium's own
background requests."""
VIEWPORT = {"width": 1280, "height": 800}
NO_CHROMIUM = (
    "Chromium is not installed: `apt-get install chromium` (Debian's package, at "
    "/usr/bin/chromium) to run the browser tests of report.html"
)


def chromium_executable() -> str | None:
    """Debian's Chromium, if installed."""
    for candidate in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


@dataclass
class OfflinePage:
    """A page in an offline browser, and what it asked the network for."""

    page: Any
    """The Playwright page."""
    requests: list[str] = field(default_factory=list)
    """Every URL the page requested (Playwright's `request` events), in order."""
    errors: list[str] = field(default_factory=list)
    """Uncaught script errors on the page."""
    passthrough: list[str] = field(default_factory=list)
    """URL prefixes the request filter lets through to the browser's own network stack (for a
    test proving that stack reaches nothing); everything else but `file:` and `data:` is
    aborted."""

    def fetched_elsewhere(self, own: str) -> list[str]:
        """Requests other than the page `own` itself and `data:` URLs (should be none)."""
        return [url for url in self.requests if url != own and not url.startswith("data:")]


@contextmanager
def offline_page(
    sync_api: Any, executable: str, viewport: dict[str, int] | None = None
) -> Iterator[OfflinePage]:
    """A new page in Chromium started with `CHROMIUM_FLAGS` on a fresh profile, recording its
    requests; anything but `file:` and `data:` URLs is aborted as well."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with sync_api.sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                args=CHROMIUM_FLAGS,
                headless=True,
                viewport=viewport or VIEWPORT,
                device_scale_factor=1,
                service_workers="block",
            )
            try:
                opened = OfflinePage(context.pages[0] if context.pages else context.new_page())
                context.on("request", lambda request: opened.requests.append(request.url))

                def refuse_network(route: Any) -> None:
                    allowed = ("file:", "data:", *opened.passthrough)
                    if route.request.url.startswith(allowed):
                        route.continue_()
                    else:
                        route.abort()

                context.route("**/*", refuse_network)
                opened.page.on("pageerror", lambda error: opened.errors.append(str(error)))
                yield opened
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
