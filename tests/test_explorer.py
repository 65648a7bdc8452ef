"""The dataset explorer's endpoints over HTTP on a real service: every figure checked against the funnel and SQL,
the text of kept and dropped documents, a duplicate cluster, pages, downloads; and paging a 1M-row docs table."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.catalog import connect
from storage.explore import BINS, DocFilter, ExploreError, Explorer, NotFound

from .conftest import READER, Server, wait_for_job
from .test_dropped_text import STAGES, _corpus


def finished_job(server: Server, sample: int = 3) -> tuple[str, dict[str, str]]:
    """A job over real paragraphs, short ones, exact and near copies and two broken lines; the dropped text is
    a sample of ``sample`` per reason, so some dropped documents' text must come from the input."""
    corpus, texts = _corpus(server.root / "raw")
    with (corpus / "part-0.jsonl").open("a") as handle:
        handle.write('{"id": "broken", "text": \n{"id": "no-text"}\n')
    spec = {"name": "explore", "input": {"partition_bytes": 16384},
            "output": {"dropped_text": "sample", "dropped_sample": sample, "shard_formats": ["parquet"]},
            "stages": STAGES}  # fmt: skip
    with server.client() as client:
        job = client.post("/jobs", json={"spec": spec, "input": "raw", "output": "out/explore"}).json()
        assert wait_for_job(client, job["id"])["state"] == "succeeded"
    return job["id"], texts


def test_explorer_figures_pages_texts_and_clusters_agree_with_the_funnel_and_sql(server: Server) -> None:
    job_id, texts = finished_job(server)
    base = f"/datasets/{job_id}"
    with server.client() as client, server.client(READER) as reader:
        funnel = client.get(base).json()["funnel"]
        overview = reader.get(f"{base}/overview").json()

        def sql(query: str) -> list[list]:
            return client.post("/sql", json={"query": query.replace("DOCS", f"ds_{job_id}_docs")}).json()["rows"]

        # every funnel bar lists as many documents as it counts
        bars = {row["label"]: row for row in overview["funnel"]}
        assert bars["kept"]["value"] == funnel["kept"] and bars["input"]["value"] == funnel["input"]
        quarantined = {k for k in bars if k.startswith("quarantined: ")}
        assert quarantined == {f"quarantined: {r}" for r in funnel["quarantined"]}
        for row in overview["funnel"]:
            page = reader.get(f"{base}/documents", params={**row["filter"], "limit": 5}).json()
            documents = funnel["input"] - sum(funnel["quarantined"].values())  # quarantine rows are not docs rows
            expected = documents if row["label"] == "input" else row["value"]
            assert page["total"] == expected, row["label"]
        # histograms: counts add up to the documents with a value, a bin lists what it counts, thresholds drawn
        histograms = {h["column"]: h for h in overview["histograms"]}
        words = histograms["q_non_symbol_words"]
        assert {"rule": "gopher_quality:min_doc_words", "value": 50.0} in words["thresholds"]
        for column in ("n_chars", "q_non_symbol_words", "dedup_similarity"):
            h = histograms[column]
            assert sum(h["counts"]) == sql(f"SELECT count({column}) FROM DOCS WHERE isfinite({column})")[0][0]
            assert sum(h["kept"]) <= sum(h["counts"])
            for b in [i for i, n in enumerate(h["counts"]) if n][:4]:
                page = reader.get(f"{base}/documents", params={"column": column, "bin": b, "limit": 200}).json()
                assert page["total"] == h["counts"][b]
                lo, hi = h["edges"][b], h["edges"][b + 1]
                assert all(lo - 1e-6 <= r[column] <= hi + 1e-6 for r in page["rows"]), (column, b)
        # the mixes are the SQL's counts
        status = {r["label"]: r["value"] for r in overview["mix"]["status"]}
        assert status == dict(sql("SELECT status, count(*) FROM DOCS GROUP BY 1"))

        # pages: in file order, each document once
        pages, offset = [], 0
        while True:
            page = reader.get(f"{base}/documents", params={"status": "kept", "limit": 7, "offset": offset}).json()
            pages += [r["id"] for r in page["rows"]]
            offset += 7
            if offset >= page["total"]:
                break
        assert pages == [r[0] for r in sql("SELECT id FROM DOCS WHERE status = 'kept'")]
        assert len(set(pages)) == len(pages) == funnel["kept"]

        # text of a kept document (read again from the input) and of dropped ones (sample, or the input)
        origins = set()
        for status_value in ("kept", "gopher_quality:min_doc_words", "near_duplicate", "exact_duplicate"):
            rows = reader.get(f"{base}/documents", params={"status": status_value, "limit": 200}).json()["rows"]
            for row in rows[:6]:
                view = reader.get(f"{base}/document", params={"source": row["source"], "line": row["line"]}).json()
                assert view["text"] == texts[row["id"]], (status_value, row["id"], view["text_from"])
                assert view["document"]["status"] == status_value
                origins.add(view["text_from"])
        assert origins == {"input", "dropped"}

        # a near-duplicate's cluster: the kept copy first, each member with its text and similarity
        near = reader.get(f"{base}/documents", params={"status": "near_duplicate", "limit": 1}).json()["rows"][0]
        cluster = reader.get(f"{base}/clusters/{near['dedup_cluster']}").json()
        kept = cluster["members"][0]
        assert kept["kept"] and kept["id"] == near["dedup_kept_id"] and kept["text"] == texts[kept["id"]]
        member = next(m for m in cluster["members"] if m["id"] == near["id"])
        assert member["text"] == texts[near["id"]] and member["similarity"] >= 0.8
        size = sql(f"SELECT count(*) FROM ds_{job_id}_clusters WHERE cluster = {int(near['dedup_cluster'])}")
        assert cluster["size"] == size[0][0]
        by_cluster = reader.get(f"{base}/documents", params={"cluster": near["dedup_cluster"]}).json()
        assert by_cluster["total"] == cluster["size"]

        # quarantined rows are listed with their reason and raw bytes
        rows = reader.get(f"{base}/documents", params={"quarantined": "malformed_json"}).json()["rows"]
        assert rows[0]["reason"] == "malformed_json" and rows[0]["raw"].startswith('{"id": "broken"')

        # refusals: a column that is not one, a bin out of range, another dataset, no token
        for params in ({"column": "id; DROP TABLE x", "bin": 1}, {"column": "n_chars"}, {"column": "status", "bin": 0}):
            response = reader.get(f"{base}/documents", params=params)
            assert response.status_code == 422, (params, response.text)
        assert reader.get(f"{base}/documents", params={"bin": BINS, "column": "n_chars"}).status_code == 422
        assert reader.get("/datasets/nope/overview").status_code == 404
        assert reader.get(f"{base}/document", params={"source": "/etc/passwd", "line": 1}).status_code == 404
        assert reader.get(f"{base}/clusters/12345").status_code == 404
        with server.client(None) as anonymous:
            assert anonymous.get(f"{base}/overview").status_code == 401

        # SQL results as files
        query = {"query": f"SELECT status, count(*) AS n FROM ds_{job_id}_docs GROUP BY 1 ORDER BY 1"}
        rows = client.post("/sql", json=query).json()["rows"]
        as_csv = client.post("/sql", params={"format": "csv"}, json=query)
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert list(csv.reader(io.StringIO(as_csv.text)))[1:] == [[s, str(n)] for s, n in rows]
        as_parquet = client.post("/sql", params={"format": "parquet"}, json=query)
        as_rows = pq.read_table(pa.BufferReader(as_parquet.content)).to_pylist()
        assert as_rows == [{"status": s, "n": n} for s, n in rows]
        assert reader.post("/sql", params={"format": "csv"}, json=query).status_code == 403  # the sql scope
        # the shard view pages through packed sequences
        shard = client.get(f"{base}/shards").json()["data"][0]["id"]
        second = client.get(f"/shards/{shard}/sample", params={"n": 1, "offset": 1}).json()
        assert second["offset"] == 1 and second["total"] >= 2 and len(second["sequences"]) == 1
        # a job whose input does not exist is refused before it claims an output
        missing = client.post("/jobs", json={"workflow": "tokenize", "input": "nowhere", "output": "out/never"})
        assert missing.status_code == 422 and "does not exist" in missing.json()["detail"]
        assert not (server.root / "out" / "never").exists()
    openapi = json.loads(server.client().get("/openapi.json").text)
    for path in ("overview", "charts", "documents", "document", "clusters/{cluster}"):
        assert f"/datasets/{{dataset_id}}/{path}" in openapi["paths"], path


def test_texts_outside_the_data_roots_are_not_read(tmp_path: Path) -> None:
    """The explorer reads an input file again only when the caller's policy admits it."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "secret words"}\n')
    out = tmp_path / "out"
    (out / "docs").mkdir(parents=True)
    docs = pa.table({"id": ["a"], "source": [str(source)], "line": [1], "status": ["kept"]})
    pq.write_table(docs, out / "docs" / "part-00000.parquet")
    funnel = {"input": 1, "kept": 1, "dropped": {}, "quarantined": {}}
    refusing = Explorer(connect({"o": str(out)}, prefix=False), "", funnel, None, lambda _: False)
    assert refusing.document(str(source), 1)["text"] is None
    admitting = Explorer(connect({"o": str(out)}, prefix=False), "", funnel, None, lambda _: True)
    assert admitting.document(str(source), 1) == {"document": docs.to_pylist()[0], "text": "secret words",
                                                  "text_from": "input", "text_truncated": False,
                                                  "text_note": None}  # fmt: skip
    # a job whose C4 rewrote the kept texts: the text read again is the input's, and the view says so
    rewriting = Explorer(connect({"o": str(out)}, prefix=False), "", funnel, {"stages": [{"stage": "quality"}]},
                         lambda _: True)  # fmt: skip
    assert "C4 kept only the lines it accepts" in rewriting.document(str(source), 1)["text_note"]
    source.write_text('{"id": "b", "text": "another"}\n')  # the input changed since the job
    assert admitting.document(str(source), 1)["text"] is None
    with pytest.raises(NotFound):
        admitting.document(str(source), 2)


def test_a_million_row_docs_table_pages_without_loading_it(tmp_path: Path) -> None:
    """Pages of a 1M-row docs table (eight files, as a job writes them) anywhere in it, by a funnel bar and by a
    histogram bin: each page is one DuckDB scan, at most 200 ms here."""
    n, files = 1_000_000, 8
    rng = np.random.default_rng(0)
    out = tmp_path / "out"
    (out / "docs").mkdir(parents=True)
    per = n // files
    statuses = np.array(["kept", "gopher_quality:min_doc_words", "near_duplicate"])
    for f in range(files):
        k = np.arange(f * per, (f + 1) * per)
        pq.write_table(pa.table({
            "id": pa.array([f"d{i}" for i in k]), "source": pa.array([f"/data/part-{f}.jsonl"] * per),
            "line": pa.array(k - f * per + 1), "n_chars": pa.array(rng.integers(50, 50_000, per)),
            "status": pa.array(statuses[rng.integers(0, 3, per)]), "q_alpha_words_ratio": pa.array(rng.random(per)),
        }), out / "docs" / f"part-{f:05d}.parquet", compression="zstd")  # fmt: skip
    funnel = {"input": n, "kept": 0, "dropped": {}, "quarantined": {}}
    explorer = Explorer(connect({"o": str(out)}, prefix=False), "", funnel, None, lambda _: True)
    histogram = explorer.histogram("q_alpha_words_ratio", [])
    assert sum(histogram["counts"]) == n
    timings = {}
    cases = [("first page", DocFilter(), 0), ("middle", DocFilter(), n // 2), ("last page", DocFilter(), n - 50),
             ("a drop reason, deep", DocFilter(status="near_duplicate"), 300_000),
             ("a histogram bin", DocFilter(column="q_alpha_words_ratio", bin=17), 20_000)]  # fmt: skip
    for name, f, offset in cases:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            page = explorer.documents(f, 50, offset)
            best = min(best, time.perf_counter() - start)
        timings[name] = round(best * 1000)
        assert len(page["rows"]) == 50 or offset + 50 > page["total"]
    page = explorer.documents(DocFilter(), 50, n // 2)
    assert [r["id"] for r in page["rows"]] == [f"d{i}" for i in range(n // 2, n // 2 + 50)]
    print("ms per page:", timings)
    assert max(timings.values()) <= 200, timings


def test_a_link_swapped_in_after_the_policy_check_is_not_followed(tmp_path: Path) -> None:
    """The explorer's policy check passes on a name; the read is confined to the roots on the descriptor it opened.
    Here the check says yes (as it would have just before a swap) and the name is a link to a file outside the
    roots (as it is just after): nothing outside is read, here nor through ``open_input`` in a job's task."""
    from storage.fs import StorageError, confined_to, open_input

    root, outside = tmp_path / "root", tmp_path / "secret.jsonl"
    root.mkdir()
    outside.write_text('{"text": "TOP SECRET"}\n')
    link = root / "in.jsonl"
    link.symlink_to(outside)
    with confined_to((str(root),)), pytest.raises(StorageError, match="outside the data roots"):
        open_input(str(link))
    with open_input(str(link)) as handle:  # unconfined (the CLI): the user's own files
        assert b"TOP SECRET" in handle.read()
    out = tmp_path / "out"
    (out / "docs").mkdir(parents=True)
    source = str(link)
    pq.write_table(pa.table({"id": [None], "source": [source], "line": [1], "status": ["kept"]}, schema=pa.schema(
        [("id", pa.string()), ("source", pa.string()), ("line", pa.int64()), ("status", pa.string())])),
        out / "docs" / "part-00000.parquet")  # fmt: skip
    funnel = {"input": 1, "kept": 1, "dropped": {}, "quarantined": {}}
    explorer = Explorer(connect({"o": str(out)}, prefix=False), "", funnel, None, lambda _: True, (str(root),))
    view = explorer.document(source, 1)
    assert view["text"] is None and "outside the data roots" in view["text_from"]


def test_downloads_keep_formulas_inert_and_every_column(tmp_path: Path) -> None:
    from api.downloads import result_csv, result_parquet

    result = {"columns": ["a", "a", "a_1", "big"],
              "rows": [["=HYPERLINK(\"http://x\")", "+1", "@SUM(1)", 2**70], ["plain", "-2", "ok", 1]]}  # fmt: skip
    rows = list(csv.reader(io.StringIO(result_csv(result).decode())))
    assert rows[1][:3] == ['\'=HYPERLINK("http://x")', "'+1", "'@SUM(1)"] and rows[2][:3] == ["plain", "'-2", "ok"]
    table = pq.read_table(pa.BufferReader(result_parquet(result)))
    assert table.column_names == ["a", "a_1", "a_1_1", "big"]
    assert table.column("big").to_pylist() == [str(2**70), "1"]


def test_a_cluster_filter_uses_only_the_dedup_steps_own_columns(tmp_path: Path) -> None:
    """A kept field that merely looks like a cluster column (``dedupx_cluster``, text) is not one."""
    out = tmp_path / "out"
    (out / "docs").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"], "source": ["s"], "line": [1], "status": ["kept"],
                             "dedupx_cluster": ["not a number"]}), out / "docs" / "part-00000.parquet")  # fmt: skip
    funnel = {"input": 1, "kept": 1, "dropped": {}, "quarantined": {}}
    explorer = Explorer(connect({"o": str(out)}, prefix=False), "", funnel, None, lambda _: True)
    with pytest.raises(ExploreError, match="no dedup clusters"):
        explorer.documents(DocFilter(cluster=1))
