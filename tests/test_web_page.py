"""The web page in a real headless Chromium (Debian's, driven by playwright): submit, watch, funnel, SQL."""

from __future__ import annotations

import shutil
from pathlib import Path

from .conftest import ADMIN, Server, write_jsonl_corpus

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def test_page_submits_a_job_shows_progress_funnel_and_sql(server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    write_jsonl_corpus(server.root / "raw", files=2, docs_per_file=30)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.goto(server.url + "/")
        page.fill("#token", ADMIN)
        page.click("#save-token")
        page.fill("#input", "raw")
        page.fill("#output", "out/web")
        page.fill("#set", "stages.1.seq_len=256")
        page.click("#submit button")
        row = page.locator("#jobs tbody tr").first
        expect(row.locator(".state")).to_have_text("succeeded", timeout=120_000)
        job_id = row.get_attribute("data-id")
        row.click()
        expect(page.locator("#funnel-chart rect[data-label='kept']")).to_be_visible()
        expect(page.locator("#funnel-chart")).to_contain_text("60")
        expect(row.locator(".track").first).to_be_visible()
        page.fill("#query", f"SELECT status, count(*) AS n FROM ds_{job_id}_docs GROUP BY status")
        page.click("#run-sql")
        expect(page.locator("#sql-result tbody tr td").nth(1)).to_have_text("60")
        page.fill("#query", "COPY (SELECT 1) TO '/tmp/web-escape.csv'")
        page.click("#run-sql")
        expect(page.locator("#error")).to_contain_text("only one read-only SELECT")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000
