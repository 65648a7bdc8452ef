"""The service attacked as a token holder would, over HTTP against a real uvicorn server on 127.0.0.1.

Each test is one class of attack from the review that found them (SQL through paths, paths and URLs in specs,
symlinks and special files, output placement, racing state changes, SQL load and size, oversized or malformed
requests), plus a fuzz of spec bodies. Nothing outside the data root may be read, written or requested.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.runner import JobHooks, run_workflow
from pipeline.waiting import JobCancelled
from schemas.stages import ExactDedupConfig, QualityConfig

from .conftest import ANALYST, BIN, READER, WORDS, Server, make_spec, wait_for_job, write_jsonl_corpus

#: The tokenize workflow writes Megatron documents only; these tests inspect packed Parquet shards too.
PACKED = ["stages.1.mode=concat", "output.shard_formats=[megatron,parquet]"]


def _snapshot(directory: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in directory.rglob("*")} if directory.exists() else {}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A service whose data root is tmp_path/root, beside an 'outside' directory it must never touch."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP-SECRET password line\n")
    (outside / "tokenizer.json").write_text("{}")
    write_jsonl_corpus(root / "raw", files=2, docs_per_file=20)
    server = Server(root, env={"REFINERY_SQL_TIMEOUT": "2", "REFINERY_SQL_MAX_BYTES": "200000"})
    server.start()
    before = _snapshot(outside)
    try:
        yield server, outside
    finally:
        server.kill()
    assert _snapshot(outside) == before, "a file outside the data root was created or changed"


def _submit(client: httpx.Client, output: str, **extra: Any) -> httpx.Response:
    return client.post("/jobs", json={"workflow": "tokenize", "input": "raw", "output": output,
                                      "set": ["stages.1.seq_len=256", *PACKED], **extra})  # fmt: skip


def test_sql_through_an_output_path_neither_escapes_nor_breaks_anyone(site: tuple[Server, Path]) -> None:
    server, outside = site
    admin, analyst = server.client(), server.client(ANALYST)
    exfil = server.root / "exfil.jsonl"
    evil = (
        "out/t1/manifest.parquet',union_by_name=true); COPY (SELECT content AS text FROM read_text("
        f"'{outside}/secret.txt')) TO '{exfil}' (FORMAT json); --"
    )
    jobs = [_submit(admin, evil), _submit(admin, "out/a'b"), _submit(admin, "out/plain")]
    assert [r.status_code for r in jobs] == [202, 202, 202], [r.text for r in jobs]
    ids = [wait_for_job(admin, r.json()["id"])["id"] for r in jobs]
    for job_id in ids:
        result = analyst.post("/sql", json={"query": f"SELECT count(*) FROM ds_{job_id}_docs"})
        assert result.status_code == 200 and result.json()["rows"] == [[40]], result.text
    assert not exfil.exists()


def test_tiny_partitions_or_batches_are_refused_by_the_service(site: tuple[Server, Path]) -> None:
    """Thousands of 1 KiB splits cost the service minutes and gigabytes; its floors refuse them, naming the field."""
    server, _ = site
    with server.client() as client:
        for name in ("partition_bytes", "batch_bytes"):
            response = _submit(client, f"out/tiny-{name}", set=["stages.1.seq_len=256", f"input.{name}=1024"])
            assert response.status_code == 422 and f"input.{name}: must be >=" in response.json()["detail"]


def test_every_path_field_of_a_spec_is_held_to_the_data_root(site: tuple[Server, Path]) -> None:
    server, outside = site
    admin = server.client()
    hits: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    (server.root / "raw" / "sneaky").symlink_to(outside)
    cases = {
        "stages[0].tokenizer": ({"workflow": "tokenize", "set": [f"stages.0.tokenizer={outside}/tokenizer.json"]}),
        "stages[0].tokenizer=/dev/zero": ({"workflow": "tokenize", "set": ["stages.0.tokenizer=/dev/zero"]}),
        "stages[2].tokenizer": ({"workflow": "quality", "set": ["stages.2.tokenizer=raw/sneaky/tokenizer.json"]}),
        "stages[2].benchmarks[0]": (
            {"workflow": "quality", "set": [f"stages.2.benchmarks=[http://127.0.0.1:{port}/b]"]}
        ),
        "stages[2].benchmarks[1]": (
            {"workflow": "quality", "set": [f"stages.2.benchmarks=[raw, {outside}/secret.txt]"]}
        ),
        "stages[1].index": ({"workflow": "dedup", "set": ["stages.1.index=../outside"]}),
        "input.url[0]": ({"workflow": "tokenize", "input": "raw/sneaky"}),
        "input.url[0]=file": ({"workflow": "tokenize", "input": f"file://{outside}"}),
        "input.url[0]=s3": ({"workflow": "tokenize", "input": "s3://bucket/raw"}),
        "output.url": ({"workflow": "tokenize", "output": "../outside/out"}),
        "output.url=root": ({"workflow": "tokenize", "output": "."}),
    }
    for name, body in cases.items():
        body = {"input": "raw", "output": f"out/{len(hits)}-{abs(hash(name))}", **body}
        response = admin.post("/jobs", json=body)
        field = name.split("=")[0]
        assert response.status_code == 403, (name, response.status_code, response.text)
        assert response.json()["detail"].startswith(field), (name, response.json()["detail"])
        with contextlib.suppress(TimeoutError):
            hits.append(listener.accept()[0].recv(100))
    spec = {"input": {"url": "raw"}, "output": {"url": "out/spec"},
            "stages": [{"stage": "tags", "benchmarks": [f"{outside}/secret.txt"]}]}  # fmt: skip
    response = admin.post("/jobs", json={"spec": spec})
    assert response.status_code == 403 and "stages[0].benchmarks[0]" in response.json()["detail"]
    listener.close()
    assert hits == [], "the service made a request to a URL named in a spec"
    assert admin.get("/jobs").json()["count"] == 0


def test_symlinked_and_special_files_in_an_input_folder_are_quarantined_not_followed(
    site: tuple[Server, Path],
) -> None:
    server, outside = site
    raw = server.root / "raw"
    (raw / "passwd.txt").symlink_to(outside / "secret.txt")
    os.mkfifo(raw / "pipe.jsonl")
    (raw / "empty.jsonl.gz").write_bytes(b"")
    with open(os.fsencode(str(raw)) + b"/bad-\xff.jsonl", "wb") as handle:
        handle.write(b'{"text": "x"}\n')
    admin = server.client()
    response = _submit(admin, "out/mixed", set=["stages.1.seq_len=256", "input.format=jsonl"])
    assert response.status_code == 202, response.text
    job = wait_for_job(admin, response.json()["id"], limit=120)
    assert job["state"] == "succeeded", job
    funnel = job["funnel"]
    assert funnel["quarantined"] == {"truncated_file": 1, "unreadable_file": 3}
    assert funnel["input"] == funnel["kept"] + sum(funnel["dropped"].values()) + sum(funnel["quarantined"].values())
    query = f"SELECT string_agg(detail, ' | ') FROM ds_{job['id']}_quarantine"
    details = server.client(ANALYST).post("/sql", json={"query": query}).json()["rows"][0][0]
    assert "outside the data roots" in details and "TOP-SECRET" not in details


def test_outputs_are_claimed_once_away_from_roots_inputs_and_other_jobs(site: tuple[Server, Path]) -> None:
    server, _ = site
    admin = server.client()
    first = _submit(admin, "out/big1")
    assert first.status_code == 202
    (server.root / "cli-made").mkdir()
    (server.root / "cli-made" / "_job.json").write_text("{}")
    for output, status in [
        ("out/big1", 409),  # the same output
        ("out/big1/docs", 409),  # inside another job's output
        ("out", 409),  # around another job's output
        ("raw", 409),  # the job's own input
        ("raw/sub", 409),
        ("cli-made/x", 409),  # inside an output no job of the service made
        (".", 403),
        ("state.sqlite", 403),
    ]:
        response = _submit(admin, output)
        assert response.status_code == status, (output, response.status_code, response.text)
    with ThreadPoolExecutor(6) as pool:  # the same new output from six clients at once: one claim wins
        codes = sorted(pool.map(lambda _: _submit(server.client(), "out/race").status_code, range(6)))
    assert codes == [202, 409, 409, 409, 409, 409]
    wait_for_job(admin, first.json()["id"])


def test_concurrent_resumes_and_cancels_have_one_winner(site: tuple[Server, Path]) -> None:
    server, _ = site
    admin = server.client()
    (server.root / "raw" / "notes.unknown").write_text("no format")
    response = _submit(admin, "out/resume")
    job = wait_for_job(admin, response.json()["id"], states=("failed",))
    assert "cannot tell the format" in job["error"]
    (server.root / "raw" / "notes.unknown").unlink()
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: server.client().post(f"/jobs/{job['id']}/resume").status_code, range(4)))
    assert codes == [200, 409, 409, 409]
    assert wait_for_job(admin, job["id"])["state"] == "succeeded"
    again = server.client().post(f"/jobs/{job['id']}/cancel")
    assert again.status_code == 409


@pytest.mark.parametrize("step", ["partitions", "dedup"])
def test_cancel_stops_a_running_task_within_seconds(tmp_path: Path, step: str) -> None:
    """One partition of 80 MB takes the quality stage half a minute: in the partition task, or inside the global
    dedup step (quality runs before exact_dedup for the keys). Dask cannot interrupt a running task, so a cancel
    must restart the worker that still runs it; the job ends within seconds of the request."""
    rng = random.Random(3)
    words = [w for w in WORDS for _ in range(3)]
    docs = [" ".join(rng.choice(words) for _ in range(700)) for _ in range(50)]
    (tmp_path / "big").mkdir()
    with open(tmp_path / "big" / "one.jsonl", "w") as handle:
        for i in range(20_000):
            handle.write(json.dumps({"id": str(i), "text": docs[i % 50]}) + "\n")
    spec = make_spec(
        str(tmp_path / "big"), str(tmp_path / "out"), input={"url": str(tmp_path / "big"), "partition_bytes": 2**30}
    )
    quality = QualityConfig()
    stages = [quality, *spec.stages] if step == "partitions" else [quality, ExactDedupConfig(), *spec.stages]
    spec = spec.model_copy(update={"stages": stages})
    asked = threading.Event()
    threading.Timer(4, asked.set).start()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            run_workflow(spec, workers=1, show_progress=False, hooks=JobHooks(cancelled=asked.is_set))
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(4 + 12)
    assert not worker.is_alive(), "the cancel did not end the job within 12 s"
    assert len(outcome) == 1 and isinstance(outcome[0], JobCancelled), outcome


def test_sql_is_bounded_in_bytes_and_time_and_never_starves_the_job_endpoints(site: tuple[Server, Path]) -> None:
    server, _ = site
    admin, analyst = server.client(), server.client(ANALYST)
    done = wait_for_job(admin, _submit(admin, "out/sql").json()["id"])
    harmless = f"SELECT count(*) FROM ds_{done['id']}_docs WHERE source LIKE '%import%' OR id = 'copy load export'"
    assert analyst.post("/sql", json={"query": harmless}).json()["rows"] == [[0]]
    big = analyst.post("/sql", json={"query": "SELECT repeat('x', 10000) AS s FROM range(1000)"}).json()
    assert big["truncated"] and big["truncated_by"] == "bytes" and len(big["rows"]) < 25
    for query in ("SELECT * FROM read_blob('state.sqlite')", f"SELECT * FROM read_blob('{server.root}/state.sqlite')",
                  "DESCRIBE SELECT 1; SELECT 2", "COPY (SELECT 1) TO 'x.csv'"):  # fmt: skip
        assert analyst.post("/sql", json={"query": query}).status_code == 403, query

    slow = {"query": "SELECT sum(hash(range)) FROM range(100000000000)"}
    codes: list[int] = []

    def run_slow(_: int) -> None:
        codes.append(server.client(ANALYST).post("/sql", json=slow, timeout=120).status_code)

    latencies = []
    with ThreadPoolExecutor(40) as pool:
        futures = [pool.submit(run_slow, i) for i in range(40)]
        time.sleep(1)
        reader = server.client(READER)
        while not all(f.done() for f in futures) and len(latencies) < 200:
            started = time.perf_counter()
            assert reader.get("/jobs").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert set(codes) <= {408, 503} and 408 in codes, codes
    assert len(latencies) >= 20 and p99 <= 0.2, f"GET /jobs p99 {p99 * 1000:.0f} ms over {len(latencies)} calls"


def test_requests_are_authenticated_and_bounded_before_their_body_is_read(site: tuple[Server, Path]) -> None:
    server, _ = site
    big = b"x" * (8 * 2**20)
    assert httpx.post(f"{server.url}/jobs", content=big, timeout=30).status_code == 401
    assert server.client("").post("/jobs", content=b"{}").status_code == 401
    assert server.client().post("/jobs", content=big).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"x" * 65536

    assert server.client().post("/jobs", content=chunks()).status_code == 413
    admin = server.client()
    for override, field in [
        ("name.x=1", "name.x"),
        ("stages.0.backend=[unclosed", "stages.0.backend"),
        ("stages.1.seq_len=1e23", "stages[1].seq_len"),
        ("stages.1.seq_len=100000000000000000000000000000", "stages[1].seq_len"),
        ("seed=-1", "seed"),
        ("stages=5", "stages"),
    ]:
        response = _submit(admin, "out/x", set=[override])
        assert response.status_code == 422, (override, response.text)
        assert field in response.json()["detail"], (override, response.json()["detail"])
    deep: Any = "x"
    for _ in range(200):
        deep = {"a": deep}
    assert admin.post("/jobs", json={"spec": deep}).status_code == 422


@pytest.mark.parametrize("tokens", ["=read+sql", "viewer=", "x=bogus", ","])
def test_the_service_refuses_to_start_with_a_malformed_token_list(tmp_path: Path, tokens: str) -> None:
    env = {**os.environ, "REFINERY_API_TOKENS": tokens, "REFINERY_DATA_ROOTS": str(tmp_path)}
    result = subprocess.run([BIN / "refinery", "serve", "--port", "9"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2 and "REFINERY_API_TOKENS" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


FUZZ_PATHS = ["raw", "../x", "/etc/passwd", "out/'q", "a\x00b", "http://127.0.0.1:9/x", "file:///etc",
              "raw/*", "~", "out/\u202e", "s3://b/k", "memory://m", "//x", "." * 300, "out/" + "d/" * 60]  # fmt: skip


def _fuzz_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 3 else 5)
    if choice == 0:
        return rng.choice(FUZZ_PATHS)
    if choice == 1:
        return rng.choice([0, -1, 2**63, 10**30, 1.5, float("1e308")])
    if choice == 2:
        return rng.choice([None, True, "", "deepseek-v3"])
    if choice in (3, 4):
        return "".join(rng.choice("ab'\"\\/.%$ \t\n;-") for _ in range(rng.randrange(12)))
    if choice in (5, 6):
        return [_fuzz_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(["url", "stage", "tokenizer", "index", "benchmarks", "x"]): _fuzz_value(rng, depth + 1)}


def test_fuzzed_spec_bodies_never_crash_the_service_or_touch_files_outside(site: tuple[Server, Path]) -> None:
    server, _ = site
    admin = server.client()
    rng = random.Random(7)
    stage_names = ["tokenize", "pack", "tags", "minhash_dedup", "quality", "mix", "bogus"]
    statuses = []
    for i in range(150):
        stages = [{"stage": rng.choice(stage_names), rng.choice(["tokenizer", "index", "benchmarks", "seq_len",
                   "weights", "x"]): _fuzz_value(rng)} for _ in range(rng.randrange(4))]  # fmt: skip
        spec: dict[str, Any] = {
            "input": {"url": _fuzz_value(rng)},
            "output": {"url": rng.choice([_fuzz_value(rng), f"out/fuzz-{i}"])},
            "stages": stages,
        }
        if rng.random() < 0.2:
            spec = _fuzz_value(rng)
        body = {"spec": spec} if rng.random() < 0.8 else {"workflow": "tokenize", "set": [f"{_fuzz_value(rng)}"]}
        response = admin.post("/jobs", json=body)
        statuses.append(response.status_code)
        assert response.status_code < 500, (body, response.text)
        if response.status_code == 202:
            server.client().post(f"/jobs/{response.json()['id']}/cancel")
    assert {403, 422} <= set(statuses)
    assert admin.get("/jobs").status_code == 200


def test_a_planted_fifo_or_link_in_a_dataset_neither_blocks_nor_leaks(site: tuple[Server, Path]) -> None:
    server, outside = site
    admin, reader = server.client(), server.client(READER)
    job = wait_for_job(admin, _submit(admin, "out/planted").json()["id"])
    root = Path(job["output"])
    (root / "manifest.json").unlink()
    os.mkfifo(root / "manifest.json")
    shard = next((root / "shards").glob("*.parquet"))
    shard.unlink()
    shard.symlink_to(outside / "secret.txt")
    for _ in range(10):
        assert reader.get(f"/datasets/{job['id']}", timeout=5).status_code == 404
    assert reader.get(f"/shards/{job['id']}:{shard.stem}/sample", timeout=5).status_code == 404
    started = time.perf_counter()
    assert reader.get("/jobs").status_code == 200 and time.perf_counter() - started < 1
    assert "TOP-SECRET" not in json.dumps(admin.get(f"/jobs/{job['id']}/logs").json())


def test_an_output_swapped_for_a_link_to_the_filesystem_root_is_not_queryable(site: tuple[Server, Path]) -> None:
    server, _ = site
    admin, analyst = server.client(), server.client(ANALYST)
    job = wait_for_job(admin, _submit(admin, "out/swap").json()["id"])
    output = Path(job["output"])
    output.rename(output.with_name("swap.real"))
    output.symlink_to("/")
    wait_for_job(admin, _submit(admin, "out/next").json()["id"])  # a new dataset rebuilds the catalog
    assert analyst.post("/sql", json={"query": "SELECT content FROM read_text('/etc/hostname')"}).status_code == 403
    assert analyst.post("/sql", json={"query": f"SELECT count(*) FROM ds_{job['id']}_docs"}).status_code == 403
