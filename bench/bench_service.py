"""Load on a real uvicorn server on 127.0.0.1: 50 job submissions from 10 concurrent clients, then 200 SQL
queries from 20 concurrent clients. Checks that no job is lost or duplicated and prints p50/p99 latencies.

    python bench/bench_service.py
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

TOKEN = "bench-token"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "REFINERY_API_TOKENS": TOKEN, "REFINERY_DATA_ROOTS": str(root),
           "REFINERY_STATE_DB": str(root / "state.sqlite"), "REFINERY_WORKERS": "2"}  # fmt: skip
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen([bin_dir / "refinery", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/openapi.json", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("server did not start")


def run_load(url: str, root: Path, jobs: int = 50, job_clients: int = 10, queries: int = 200,
             sql_clients: int = 20) -> dict[str, float]:  # fmt: skip
    (root / "raw").mkdir(exist_ok=True)
    (root / "raw" / "a.jsonl").write_text(
        "".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(20))
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def submit(i: int) -> tuple[str, float]:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            start = time.perf_counter()
            response = client.post("/jobs", json={"workflow": "tokenize", "input": "raw", "output": f"out/job-{i}"})
            response.raise_for_status()
            return response.json()["id"], time.perf_counter() - start

    with ThreadPoolExecutor(job_clients) as pool:
        submitted = list(pool.map(submit, range(jobs)))
    ids = [job_id for job_id, _ in submitted]
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states = [j["state"] for j in client.get("/jobs").json()["data"]]
            if all(s in ("succeeded", "failed") for s in states):
                break
            time.sleep(0.5)
        listed = client.get("/jobs").json()["data"]
        dataset = next(j["id"] for j in listed if j["state"] == "succeeded")

    def query(_: int) -> float:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            start = time.perf_counter()
            response = client.post("/sql", json={"query": f"SELECT count(*) FROM ds_{dataset}_docs"})
            response.raise_for_status()
            assert response.json()["rows"] == [[20]]
            return time.perf_counter() - start

    with ThreadPoolExecutor(sql_clients) as pool:
        sql_latency = list(pool.map(query, range(queries)))
    submit_latency = [t for _, t in submitted]
    return {
        "jobs_submitted": len(ids),
        "jobs_distinct": len(set(ids)),
        "jobs_listed": len(listed),
        "jobs_succeeded": sum(j["state"] == "succeeded" for j in listed),
        "submit_p50_ms": round(1000 * statistics.median(submit_latency), 1),
        "submit_p99_ms": round(1000 * percentile(submit_latency, 0.99), 1),
        "sql_queries": len(sql_latency),
        "sql_p50_ms": round(1000 * statistics.median(sql_latency), 1),
        "sql_p99_ms": round(1000 * percentile(sql_latency, 0.99), 1),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, url = start_server(root)
        try:
            report = run_load(url, root)
        finally:
            proc.kill()
    for key, value in report.items():
        print(f"{key:>16}: {value}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "service.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
