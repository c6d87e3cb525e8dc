"""The web review queue in a real headless Chromium: log in, open the analyst queue, claim,
correct the label, and find the CorrectionEvent on the corrections topic.

Skips (with the reason) when ``/usr/bin/chromium`` or Playwright for Python is missing.
The full working day with keys only (and the screenshots in docs/) is tests/integration/test_review_shift.py.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.test_review_api import corrections, make_task, publish_tasks, start_server, wait_for  # noqa: F401 (fixture)

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install playwright)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def test_analyst_corrects_a_label_in_the_browser(browser, start_server, loopline_settings):  # noqa: F811 (pytest fixture)
    publish_tasks(loopline_settings, [make_task(0, priority=3), make_task(1, priority=8, label="legit"),
                                      make_task(2, priority=1, label="fraud"), make_task(3, tier="escalate")])
    srv, client = start_server()
    wait_for(client, "ana", "analyst", 3)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(srv.url + "/login")
    page.fill("input[name=name]", "ana")
    page.fill("input[name=password]", "ana-pw")
    page.click("button:has-text('Log in')")
    page.wait_for_selector("#stats-analyst")
    assert page.locator("#stats-escalation").count() == 0  # analysts do not see the escalation queue
    page.click("#stats-analyst a")
    page.wait_for_selector("table")
    rows = page.locator("#tasks tr")
    assert rows.count() == 4  # header + 3 tasks, most urgent first
    assert "ev-1" in rows.nth(1).inner_text()
    rows.nth(1).locator("button.open").click()
    page.wait_for_selector("#answer")
    assert page.locator("#predicted").inner_text() == "legit"
    assert "•••" in page.content()  # ana has no pii clearance
    page.fill("#note", "velocity pattern")
    assert page.locator("#label").input_value() == ""  # nothing pre-selected
    page.select_option("#label", "fraud")
    page.click("#btn-correct")  # the mouse way; the next task opens with the confirmation
    page.wait_for_selector(".flash")
    assert "Answered ev-1: override fraud" in page.locator(".flash").inner_text()
    got = corrections(loopline_settings, 1)
    assert len(got) == 1
    _, rec = got[0]
    assert (rec["event_id"], rec["action"], rec["corrected_label"], rec["reviewer_id"], rec["note"], rec["source"]) == (
        "ev-1", "override", "fraud", "ana", "velocity pattern", "web")
