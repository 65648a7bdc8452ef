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
        expect(page.locator("#funnel-chart [data-label='kept'] rect")).to_be_visible()
        expect(page.locator("#funnel-chart")).to_contain_text("60")
        expect(row.locator(".track").first).to_be_visible()
        page.fill("#query", f"SELECT status, count(*) AS n FROM ds_{job_id}_docs GROUP BY status")
        page.click("#run-sql")
        expect(page.locator("#sql-result tbody tr td").nth(1)).to_have_text("60")
        page.fill("#query", "COPY (SELECT 1) TO '/tmp/web-escape.csv'")
        page.click("#run-sql")
        expect(page.locator("#error")).to_contain_text("only one read-only SELECT")
        page.wait_for_timeout(1500)  # the jobs table refreshes every second; it clears only its own errors
        expect(page.locator("#error")).to_contain_text("only one read-only SELECT")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000


def _texts_fit(page, selector: str) -> bool:
    """Every text of the SVG lies inside it (a label cut at the left edge starts at a negative x)."""
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel + " text")].every(t => {
             const box = t.getBBox(), svg = t.ownerSVGElement.getBBox ? t.ownerSVGElement : null;
             return box.x >= 0 && box.x + box.width <= Number(t.ownerSVGElement.getAttribute("width")) + 1; })""",
        selector,
    )


def test_explorer_views_in_the_page(server: Server, tmp_path: Path) -> None:
    """From a finished job: the funnel (labels whole), a drop reason's documents and one's text, a histogram bin's
    documents, a duplicate cluster side by side, a packed sequence's documents, a SQL result downloaded; the
    numbers shown are checked against the funnel and SQL, and each view is saved as a screenshot."""
    from playwright.sync_api import expect, sync_playwright

    from .test_explorer import finished_job

    job_id, texts = finished_job(server)
    with server.client() as client:
        funnel = client.get(f"/datasets/{job_id}").json()["funnel"]
        overview = client.get(f"/datasets/{job_id}/overview").json()
    shots = tmp_path / "screens"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000}, accept_downloads=True)
        page.goto(server.url + "/")
        page.fill("#token", ADMIN)
        page.click("#save-token")
        page.locator(f"#jobs tbody tr[data-id='{job_id}']").click()
        funnel_chart = page.locator("#funnel-chart")
        expect(funnel_chart).to_be_visible()
        reason = max(funnel["dropped"], key=len)  # the longest label
        assert _texts_fit(page, "#funnel-chart"), "a funnel label is cut"
        expect(funnel_chart).to_contain_text(f"dropped: {reason}")
        page.screenshot(path=str(shots / "dataset.png"), full_page=True)

        # a funnel bar lists its documents; a row shows the text, reason and signals
        near = funnel["dropped"]["near_duplicate"]
        funnel_chart.locator("[data-label='dropped: near_duplicate']").click()
        expect(page.locator("#page-info")).to_contain_text(f"of {near}")
        page.locator("#docs tbody tr").first.click()
        expect(page.locator("#doc-meta")).to_contain_text("near_duplicate")
        doc_id = page.locator("#docs tbody tr").first.locator("td").first.inner_text()
        expect(page.locator("#doc-text")).to_have_text(texts[doc_id])
        page.screenshot(path=str(shots / "document.png"), full_page=True)

        # its duplicate cluster: the kept copy and the near copies with their texts
        page.click("#show-cluster")
        members = page.locator("#cluster-members .member")
        expect(members.first).to_contain_text("kept: ")
        kept_id = members.first.locator("h4").inner_text().removeprefix("kept: ")
        expect(members.first.locator("pre")).to_have_text(texts[kept_id])
        expect(page.locator("#cluster-members")).to_contain_text(doc_id)
        page.screenshot(path=str(shots / "cluster.png"), full_page=True)

        # a histogram bin lists as many documents as it counts, the threshold is drawn
        figure = page.locator("figure[data-column='q_non_symbol_words']")
        expect(figure.locator(".threshold[data-rule='gopher_quality:min_doc_words']")).to_have_count(1)
        hist = next(h for h in overview["histograms"] if h["column"] == "q_non_symbol_words")
        b = max(range(len(hist["counts"])), key=lambda i: hist["counts"][i])
        figure.locator(f".pick[data-count='{hist['counts'][b]}']").first.click()
        expect(page.locator("#page-info")).to_contain_text(f"of {hist['counts'][b]}")
        expect(page.locator("#docs thead")).to_contain_text("q_non_symbol_words")
        page.screenshot(path=str(shots / "histogram.png"), full_page=True)

        # the shard view: a packed sequence's documents with their token counts and text
        expect(page.locator("#sequence .seq-doc").first).to_be_visible()
        first = page.locator("#sequence .seq-doc").first.locator("strong").inner_text()
        assert first.endswith(" tokens") and int(first.rsplit(": ", 1)[1].split()[0]) > 0
        page.click("#next-seq")
        expect(page.locator("#seq-info")).to_contain_text("sequence 2 of")
        count = int(page.locator("#seq-info").inner_text().rsplit(" ", 1)[1])
        for _ in range(count + 2):  # past the end it stays on the last sequence
            page.click("#next-seq")
        expect(page.locator("#seq-info")).to_have_text(f"sequence {count} of {count}")
        page.screenshot(path=str(shots / "shard.png"), full_page=True)

        # the SQL console keeps its table and downloads the result as CSV
        page.fill("#query", f"SELECT status, count(*) AS n FROM ds_{job_id}_docs GROUP BY 1 ORDER BY 1")
        page.click("#run-sql")
        expect(page.locator("#sql-result tbody tr")).to_have_count(len(overview["mix"]["status"]))
        with page.expect_download() as download:
            page.click("#csv")
        saved = tmp_path / "result.csv"
        download.value.save_as(saved)
        lines = saved.read_text().splitlines()
        assert lines[0] == "status,n" and len(lines) == 1 + len(overview["mix"]["status"])
        page.screenshot(path=str(shots / "sql.png"), full_page=True)
        browser.close()
    assert all((shots / f"{name}.png").stat().st_size > 10_000 for name in
               ("dataset", "document", "cluster", "histogram", "shard", "sql"))  # fmt: skip
