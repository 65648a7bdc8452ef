"""The service over HTTP: a real uvicorn server on 127.0.0.1, real jobs on Dask, DuckDB SQL, auth and roots."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from .conftest import ANALYST, READER, Server, tree_bytes, wait_for_job, write_jsonl_corpus

#: The tokenize workflow writes Megatron documents only; these tests inspect packed Parquet shards too.
PACKED = ["stages.1.mode=concat", "output.shard_formats=[megatron,parquet]"]


def test_job_lifecycle_inspection_and_sql(server: Server) -> None:
    write_jsonl_corpus(server.root / "raw", files=2, docs_per_file=40)
    admin = server.client()
    body = {
        "workflow": "tokenize",
        "input": "raw",
        "output": "out/one",
        "set": ["stages.1.seq_len=256", "input.partition_bytes=1024", *PACKED],
    }
    response = admin.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job = wait_for_job(admin, response.json()["id"])
    assert job["state"] == "succeeded" and job["funnel"]["kept"] == 80
    progress = job["progress"]
    assert progress["steps"]["write"] == progress["total"] > 0 and progress["unit"] == "bytes"
    assert any("succeeded" in line for line in admin.get(f"/jobs/{job['id']}/logs").json()["lines"])
    assert admin.get("/jobs").json()["count"] == 1

    reader = server.client(READER)
    assert [d["id"] for d in reader.get("/datasets").json()["data"]] == [job["id"]]
    assert reader.get(f"/datasets/{job['id']}").json()["funnel"]["kept"] == 80
    shards = reader.get(f"/datasets/{job['id']}/shards").json()["data"]
    sample = reader.get(f"/shards/{shards[0]['id']}/sample", params={"n": 2}).json()["sequences"]
    assert len(sample) == 2 and sample[0]["documents"][0]["text"].endswith("<｜end▁of▁sentence｜>")

    analyst = server.client(ANALYST)
    query = f"SELECT status, count(*) AS n FROM ds_{job['id']}_docs GROUP BY status"
    result = analyst.post("/sql", json={"query": query})
    assert result.status_code == 200 and result.json()["rows"] == [["kept", 80]]


@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT 1) TO '/tmp/refinery-escape.csv'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "ATTACH '/tmp/refinery-escape.db'",
        "INSTALL httpfs",
        "PRAGMA database_list",
        "CREATE TABLE t AS SELECT 1",
        "SELECT 1; SELECT 2",
        "SET enable_external_access = true",
    ],
)
def test_sql_escapes_are_refused(server: Server, query: str) -> None:
    response = server.client(ANALYST).post("/sql", json={"query": query})
    assert response.status_code == 403 and response.json()["detail"]
    assert not Path("/tmp/refinery-escape.csv").exists()


def test_auth_scopes_and_roots(server: Server) -> None:
    assert server.client(None).get("/jobs").status_code == 401
    assert server.client("wrong").get("/jobs").status_code == 401
    body = {"workflow": "tokenize", "input": "raw", "output": "out/x"}
    assert server.client(READER).post("/jobs", json=body).status_code == 403
    assert server.client(READER).post("/sql", json={"query": "SELECT 1"}).status_code == 403
    for bad in ({"output": "../outside"}, {"input": "/etc"}, {"output": "/tmp/elsewhere"}, {"input": "s3://b/x"}):
        response = server.client().post("/jobs", json={**body, **bad})
        assert response.status_code == 403, (bad, response.text)
    invalid = server.client().post("/jobs", json={**body, "set": ["stages.1.seq_len=0"]})
    assert invalid.status_code == 422 and "stages[1].seq_len: must be > 0" in invalid.json()["detail"]
    missing = server.client().post("/jobs", json={"output": "out/x"})
    assert missing.status_code == 422 and "exactly one of 'workflow' and 'spec'" in missing.json()["detail"]
    assert server.client().get("/jobs/nope").status_code == 404


def test_restart_marks_interrupted_and_resume_finishes_identically(server: Server) -> None:
    write_jsonl_corpus(server.root / "raw", files=16, docs_per_file=400, seed=4)
    admin = server.client()
    body = {
        "workflow": "tokenize",
        "input": "raw",
        "output": "out/resumed",
        "set": ["stages.1.seq_len=512", "input.partition_bytes=1024", *PACKED],
    }
    job_id = admin.post("/jobs", json=body).json()["id"]
    markers = server.root / "out" / "resumed" / "_markers"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (markers.exists() and len(list(markers.iterdir())) >= 2):
        time.sleep(0.05)
    server.kill()
    assert len(list(markers.iterdir())) < 16, "the service died part-way through the job"
    server.start()
    admin = server.client()
    assert admin.get(f"/jobs/{job_id}").json()["state"] == "interrupted"
    assert admin.post(f"/jobs/{job_id}/resume").status_code == 200
    assert wait_for_job(admin, job_id)["state"] == "succeeded"
    reference = admin.post("/jobs", json={**body, "output": "out/reference"}).json()["id"]
    assert wait_for_job(admin, reference)["state"] == "succeeded"
    resumed, expected = tree_bytes(server.root / "out" / "resumed"), tree_bytes(server.root / "out" / "reference")
    assert resumed.keys() == expected.keys()
    assert all(resumed[k] == expected[k] for k in expected)


def test_load_none_lost_none_duplicated(tmp_path: Path) -> None:
    """50 submissions from 10 clients and 200 SQL queries from 20 clients against one real server."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from bench_service import run_load, start_server

    proc, url = start_server(tmp_path)
    try:
        report = run_load(url, tmp_path)
    finally:
        proc.kill()
    print("\n" + ", ".join(f"{k}={v}" for k, v in report.items()))
    assert report["jobs_submitted"] == report["jobs_distinct"] == report["jobs_listed"] == 50
    assert report["jobs_succeeded"] == 50 and report["sql_queries"] == 200


def test_cancel_keeps_finished_partitions_and_resume_completes(server: Server) -> None:
    write_jsonl_corpus(server.root / "raw", files=16, docs_per_file=400, seed=6)
    admin = server.client()
    body = {
        "workflow": "tokenize",
        "input": "raw",
        "output": "out/cancelled",
        "set": ["stages.1.seq_len=512", "input.partition_bytes=1024", *PACKED],
    }
    job_id = admin.post("/jobs", json=body).json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and admin.get(f"/jobs/{job_id}").json()["state"] != "running":
        time.sleep(0.05)
    assert admin.post(f"/jobs/{job_id}/cancel").status_code == 200
    job = wait_for_job(admin, job_id, states=("cancelled", "succeeded"))
    assert job["state"] == "cancelled", "16 partitions take longer than the cancel"
    assert admin.post(f"/jobs/{job_id}/cancel").status_code == 409
    assert admin.post(f"/jobs/{job_id}/resume").status_code == 200
    assert wait_for_job(admin, job_id)["state"] == "succeeded"
    assert (server.root / "out" / "cancelled" / "_SUCCESS").exists()


def test_the_service_starts_its_workers_as_refinery_run_does(server: Server) -> None:
    """The service's local workers keep freed memory (glibc settings of ``pipeline/cluster.py``): without them a
    third of a tokenize job's worker CPU went to faulting pages in again."""
    import psutil

    from pipeline.cluster import WORKER_MALLOC

    wanted = {key.rsplit(".", 1)[1]: value for key, value in WORKER_MALLOC.items()}
    children = psutil.Process(server.proc.pid).children(recursive=True)
    workers = [p for p in children if "resource_tracker" not in " ".join(p.cmdline())]
    assert len(workers) == 1  # REFINERY_WORKERS=1
    environ = workers[0].environ()
    assert {key: environ.get(key) for key in wanted} == wanted
