"""Data mixing through a whole job, and the HTML report of a job."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.runner import run_workflow
from schemas.spec import parse_spec

CODE = "def f{i}(x):\n    return x + {i}\nimport os\nclass C{i}:\n    pass\n"
PROSE = "A short note number {i} about the river, the city and the people who live near the water."


def _corpus(root: Path) -> Path:
    root.mkdir()
    lines = [json.dumps({"id": f"code-{i}", "text": CODE.format(i=i)}) for i in range(200)]
    lines += [json.dumps({"id": f"prose-{i}", "text": PROSE.format(i=i)}) for i in range(200)]
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _spec(corpus: Path, out: Path) -> object:
    return parse_spec(
        {
            "input": {"url": str(corpus)},
            "output": {"url": str(out)},
            "stages": [
                {"stage": "tags", "tokenizer": None},
                {"stage": "mix", "weights": {"code": 2.0, "prose": 0.5}, "seed": 3},
                {"stage": "tokenize"},
                {"stage": "pack", "seq_len": 512},
            ],
        }
    )


def test_mix_weights_shape_the_token_shares(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "in")
    manifest = run_workflow(_spec(corpus, tmp_path / "out"), workers=1, show_progress=False).manifest
    funnel = manifest.funnel
    kept_prose = 200 - funnel.dropped["mix:downsampled"]
    assert funnel.balanced and 70 <= kept_prose <= 130, "about half the prose is sampled out"
    docs = pq.read_table(tmp_path / "out" / "docs").to_pandas().set_index("id")
    code_tokens = docs.loc[[f"code-{i}" for i in range(200)], "n_tokens"].sum()
    assert manifest.mix["code"].tokens == 2 * code_tokens, "every code document is packed twice"
    assert abs(sum(s.share for s in manifest.mix.values()) - 1) < 1e-6
    files = sorted((tmp_path / "out" / "shards").glob("*.parquet"))
    shards = [seq for f in files for seq in pq.read_table(f).column("doc_ids").to_pylist()]
    packed = [d for seq in shards for d in seq]
    assert packed.count("code-7") == 2 and all(packed.count(f"prose-{i}") <= 1 for i in range(200))
    again = run_workflow(_spec(corpus, tmp_path / "again"), workers=1, show_progress=False).manifest
    assert again.mix == manifest.mix, "sampling is deterministic"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_draws_funnel_histograms_and_mix(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "in")
    run_workflow(_spec(corpus, tmp_path / "out"), workers=1, show_progress=False)
    assert main(["report", str(tmp_path / "out")]) == 0
    page = _Collect()
    page.feed((tmp_path / "out" / "report.html").read_text())
    text = " ".join(page.text)
    assert page.tags.count("svg") >= 5 and page.tags.count("rect") > 20
    for heading in ("Funnel", "Lengths and quality signals", "Domains", "Mix: effective tokens per bucket"):
        assert heading in text
    assert "dropped: mix:downsampled" in text and "characters per document" in text
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_sql_cli_and_its_sandbox(tmp_path: Path, capsys) -> None:
    from storage.catalog import SqlTimeout, connect, run_sql

    corpus = _corpus(tmp_path / "in")
    run_workflow(_spec(corpus, tmp_path / "out"), workers=1, show_progress=False)
    assert (
        main(["sql", str(tmp_path / "out"), "SELECT domain, count(*) AS n FROM docs GROUP BY domain ORDER BY 1"]) == 0
    )
    printed = capsys.readouterr().out
    assert "code" in printed and "prose" in printed
    assert main(["sql", str(tmp_path / "out"), "SELECT * FROM read_csv('/etc/passwd')"]) == 2
    conn = connect({"job": str(tmp_path / "out")}, prefix=False)
    with pytest.raises(SqlTimeout):
        run_sql(conn, "SELECT count(*) FROM range(100000000000) a", timeout=0.5)
    limited = run_sql(conn, "SELECT * FROM range(50)", limit=10)
    assert len(limited.rows) == 10 and limited.truncated
