"""report.html in a real browser: Debian's headless chromium, driven by Playwright's client (no browser is
downloaded), loads the page of a real `stockscale compare` over real results of a tiny search and scale test.

It takes a screenshot and checks what a reader would notice: no console error (a Content-Security-Policy
violation is one), every image decoded, no request leaving the file, and a table that sorts when a header
is clicked. Without chromium or Playwright the test skips and says why; CI (STOCKSCALE_REQUIRE_BROWSER=1, set
by .ci/run) turns that into a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stockscale.cli import main

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("STOCKSCALE_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("STOCKSCALE_REQUIRE_BROWSER") == "1"
# No network is reachable here and none is needed: everything chromium would fetch on its own is off.
QUIET_FLAGS = ["--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
               "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
               "--disable-client-side-phishing-detection", "--no-default-browser-check", "--metrics-recording-only",
               "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
               "--disable-gpu", "--disable-dev-shm-usage", "--no-sandbox"]
TINY = ["--epochs", "1", "--max-steps", "3", "--hidden-size", "8", "--num-layers", "1", "--threads", "1"]


def _browser_or_reason() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or STOCKSCALE_CHROMIUM=PATH)"
    return ""


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> Path:
    """report.html of `stockscale compare` over a real 4-trial search and a real 2-probe scale test."""
    reason = _browser_or_reason()
    if reason:
        if REQUIRED:
            pytest.fail(f"STOCKSCALE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("browser")
    results = base / "results"
    space = base / "space.yaml"
    space.write_text("lr: [0.001, 0.01]\nhidden_size: [8, 16]\n")
    assert main(["search", "--space", str(space), *TINY, "--out", str(results / "hp_search_local")]) == 0
    assert main(["scale-test", "--mode", "local", "--multipliers", "1,2", "--max-steps", "2", "--hidden-size", "8",
                 "--num-layers", "1", "--threads", "1", "--memory-limit", "2GiB",
                 "--out", str(results / "scale_test_local")]) == 0
    assert main(["compare", "--results", str(results)]) == 0
    return results / "report" / "report.html"


def test_the_report_page_reads_well_in_headless_chromium(report_page: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url = report_page.resolve().as_uri()
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url, wait_until="load")
            screenshot = tmp_path / "report.png"
            page.screenshot(path=str(screenshot), full_page=True)
            if os.environ.get("STOCKSCALE_SCREENSHOT_DIR"):  # to look at it
                shutil.copy(screenshot, Path(os.environ["STOCKSCALE_SCREENSHOT_DIR"]) / "report.png")

            images = page.eval_on_selector_all(
                "img", "images => images.map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 22)])")
            trials = page.locator("table").nth(1)
            header = trials.locator("th", has_text="val loss")
            position = trials.locator("th").all_inner_texts().index("val loss")

            def values() -> list[float]:
                cells = f"rows => rows.map(row => row.cells[{position}].textContent)"
                return [float(text) for text in trials.locator("tbody tr").evaluate_all(cells)]

            before = values()
            header.click()
            ascending, ascending_state = values(), header.get_attribute("aria-sort")
            header.click()
            descending, descending_state = values(), header.get_attribute("aria-sort")
        finally:
            browser.close()

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    assert errors == []
    assert requests and all(request == url or request.startswith("data:") for request in requests), requests
    assert len(images) == 5, images  # memory, timeline, grid, best so far, predictions
    for alt, complete, width, src in images:
        assert alt and complete and width > 0 and src.startswith("data:image/png;base64"), (alt, width, src)
    assert len(before) == 4
    assert ascending == sorted(before) and ascending_state == "ascending"
    assert descending == sorted(before, reverse=True) and descending_state == "descending"
