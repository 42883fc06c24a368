"""The status page in a real browser: Debian's Chromium, driven headless by Playwright (its
package only; no browser download). tests/run.sh installs both."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ragdocs import CANARY, QUESTION

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).parent / "output" / "ui.png"

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (tests/run.sh installs it)"
)
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is not installed (tests/run.sh installs Debian's chromium)", allow_module_level=True
    )


def test_search_in_the_browser_shows_the_passage(rag_proxy: str) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(java_script_enabled=False)  # the page works without scripts
            page.goto(rag_proxy + "/ui/", timeout=60_000)
            assert page.locator("h2", has_text="Collections").is_visible()
            page.fill("input[name=q]", QUESTION)
            with page.expect_navigation(timeout=60_000):
                page.click("button[type=submit]")
            assert "q=" in page.url
            passage = page.locator("tr", has_text="manuals:valves/zephyr.md")
            assert passage.count() >= 1
            assert CANARY in passage.first.inner_text()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
