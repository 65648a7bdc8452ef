"""s3:// input and output against a real S3-compatible server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from pipeline.runner import run_workflow
from storage.parts import parquet_bytes

from .conftest import make_spec, tree_bytes, write_jsonl_corpus

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = dict(os.environ)
    # Worker processes read the endpoint from fsspec's environment configuration.
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "FSSPEC_S3_ENDPOINT_URL": endpoint,
        }
    )
    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = endpoint
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)
        os.environ.clear()
        os.environ.update(saved)
        fsspec.config.conf.pop("s3", None)


def test_s3_input_and_output_match_a_local_run(s3_endpoint: str, tmp_path: Path) -> None:
    corpus = write_jsonl_corpus(tmp_path / "corpus", files=3, docs_per_file=60, seed=5)
    s3 = fsspec.filesystem("s3", endpoint_url=s3_endpoint)
    s3.mkdir("refinery-test")
    for path in corpus.iterdir():
        s3.put(str(path), f"refinery-test/raw/{path.name}")

    result = run_workflow(
        make_spec("s3://refinery-test/raw/*.jsonl.gz", "s3://refinery-test/out"), workers=2, show_progress=False
    )
    assert result.manifest.funnel.balanced and result.manifest.funnel.kept == 180
    assert s3.exists("refinery-test/out/_SUCCESS")
    manifest = json.loads(s3.cat("refinery-test/out/manifest.json"))
    s3.get("refinery-test/out/shards/", str(tmp_path / "from-s3"), recursive=True)
    assert not [p for p in s3.find("refinery-test/out") if "/.tmp-" in p]

    run_workflow(make_spec(str(corpus), str(tmp_path / "local")), workers=2, show_progress=False)
    local = tree_bytes(tmp_path / "local" / "shards")
    assert tree_bytes(tmp_path / "from-s3") == local
    assert manifest["shards"] == json.loads((tmp_path / "local" / "manifest.json").read_text())["shards"]


def test_scale_out_with_every_file_on_s3_is_byte_identical_whatever_the_workers(
    s3_endpoint: str, tmp_path: Path
) -> None:
    """A dask scheduler and two dask workers whose working directory and TMPDIR are their own: input, the
    intermediate segments and output all live on s3://, so nothing can rely on a shared local disk. The result is
    byte-identical to one local worker's."""
    from .test_dask_cluster import Cluster

    corpus = write_jsonl_corpus(tmp_path / "corpus", files=3, docs_per_file=80, seed=9)
    s3 = fsspec.filesystem("s3", endpoint_url=s3_endpoint)
    s3.mkdir("scale-out")
    for path in corpus.iterdir():
        s3.put(str(path), f"scale-out/raw/{path.name}")
    big = b"".join(s3.cat(f"scale-out/raw/{p.name}") for p in sorted(corpus.iterdir()))
    s3.pipe("scale-out/raw/all.jsonl", gzip.decompress(big))  # one plain file: cut into byte ranges
    stages = [{"stage": "exact_dedup"}, {"stage": "quality", "drop": False}, {"stage": "minhash_dedup"},
              {"stage": "tokenize"}, {"stage": "pack", "seq_len": 512}]  # fmt: skip
    inputs = {"url": "s3://scale-out/raw/", "partition_bytes": 16384, "batch_bytes": 8192}

    def spec(out: str):
        return make_spec("s3://scale-out/raw/", out, stages=stages, input=inputs)

    homes = [tmp_path / "w0", tmp_path / "w1"]
    for home in homes:
        home.mkdir()
    cluster = Cluster(workers=2, homes=homes)
    try:
        result = run_workflow(spec("s3://scale-out/two"), scheduler=cluster.address, show_progress=False)
    finally:
        cluster.close()
    funnel = result.manifest.funnel
    assert funnel.balanced and funnel.partitions > 6 and funnel.dropped.get("exact_duplicate", 0) >= 240
    run_workflow(spec("s3://scale-out/one"), workers=1, show_progress=False)

    def tree(prefix: str) -> dict[str, bytes]:
        root = f"scale-out/{prefix}/"
        return {p[len(root) :]: s3.cat(p) for p in sorted(s3.find(root)) if "_job.json" not in p}

    two, one = tree("two"), tree("one")
    assert two.keys() == one.keys() and two == one
    assert not any(p.startswith("_work/") for p in two), "intermediates are removed at commit"
    assert not [p for home in homes for p in home.rglob("*.parquet")], "workers wrote nothing to their local disk"


def _refused_reads(run: Callable[[str], object]) -> None:
    """Reads outside the dataset's prefix: a sibling prefix that shares its name's start, another prefix of the
    bucket, another bucket, and a way up with '..'."""
    for url in ("s3://sql-data/out-old/docs/y.parquet", "s3://sql-data/secret/x.parquet",
                "s3://sql-other/out/docs/z.parquet", "s3://sql-data/out/../secret/x.parquet"):  # fmt: skip
        run(f"SELECT * FROM read_parquet('{url}')")


def test_sql_over_an_s3_output_from_the_cli_and_the_service(s3_endpoint: str, tmp_path: Path, capsys) -> None:
    from pipeline.cli import main
    from storage.catalog import SqlRefused, connect, run_sql

    from .conftest import ANALYST, Server, wait_for_job

    s3 = fsspec.filesystem("s3", endpoint_url=s3_endpoint)
    s3.mkdir("sql-data")
    s3.mkdir("sql-other")
    corpus = write_jsonl_corpus(tmp_path / "corpus", files=2, docs_per_file=30, seed=8)
    for path in corpus.iterdir():
        s3.put(str(path), f"sql-data/raw/{path.name}")
    for key in ("sql-data/out-old/docs/y.parquet", "sql-data/secret/x.parquet", "sql-other/out/docs/z.parquet"):
        s3.pipe(key, parquet_bytes(pa.table({"secret": ["s3cr3t"]})))
    output = {"url": "s3://sql-data/out", "shard_sequences": 16, "shard_formats": ["parquet"]}
    result = run_workflow(make_spec("s3://sql-data/raw/*.jsonl.gz", "s3://sql-data/out", output=output), workers=1,
                          show_progress=False)  # fmt: skip
    manifest = result.manifest

    conn = connect({"job": "s3://sql-data/out"}, prefix=False)
    assert run_sql(conn, "SELECT count(*) FROM docs WHERE status = 'kept'").rows == [[manifest.funnel.kept]]
    assert run_sql(conn, "SELECT count(*), sum(n_pad) FROM shards").rows == [
        [manifest.funnel.sequences, manifest.funnel.padding]
    ]
    assert run_sql(conn, "SELECT count(*) FROM manifest").rows == [[len(manifest.shards)]]

    def refused_here(sql: str) -> None:
        with pytest.raises(SqlRefused, match="Permission Error"):
            run_sql(conn, sql)

    _refused_reads(refused_here)
    assert main(["sql", "s3://sql-data/out", "SELECT DISTINCT shard FROM shards"]) == 0
    printed = capsys.readouterr().out
    assert all(s.shard in printed for s in manifest.shards), printed
    assert main(["sql", "s3://sql-data/out", "SELECT * FROM read_parquet('s3://sql-data/secret/x.parquet')"]) == 2
    assert "s3cr3t" not in capsys.readouterr().out

    # the service: a job whose output is on s3:// is a dataset like any other, in the same sandbox
    server = Server(tmp_path / "svc", env={"REFINERY_DATA_ROOTS": f"{tmp_path / 'svc'};s3://sql-data",
                                           "REFINERY_MIN_PARTITION_BYTES": "1024"})  # fmt: skip
    (tmp_path / "svc").mkdir()
    server.start()
    try:
        admin, analyst = server.client(), server.client(ANALYST)
        body = {"workflow": "tokenize", "input": "s3://sql-data/raw/*.jsonl.gz", "output": "s3://sql-data/served",
                "set": ["stages.1.seq_len=256", "stages.1.mode=concat", "output.shard_formats=[parquet]"]}  # fmt: skip
        response = admin.post("/jobs", json=body)
        assert response.status_code == 202, response.text
        job = wait_for_job(admin, response.json()["id"])
        assert job["state"] == "succeeded", job
        view = f"ds_{job['id']}"
        answer = analyst.post("/sql", json={"query": f"SELECT count(*) FROM {view}_docs WHERE status = 'kept'"})
        assert answer.status_code == 200 and answer.json()["rows"] == [[job["funnel"]["kept"]]]
        answer = analyst.post("/sql", json={"query": f"SELECT count(*), sum(n_pad) FROM {view}_shards"})
        assert answer.json()["rows"] == [[job["funnel"]["sequences"], job["funnel"]["padding"]]]
        shards = admin.get(f"/datasets/{job['id']}/shards").json()["data"]
        sample = admin.get(f"/shards/{shards[0]['id']}/sample", params={"n": 1}).json()
        assert sample["sequences"][0]["documents"][0]["text"]

        def refused_over_http(sql: str) -> None:
            response = analyst.post("/sql", json={"query": sql})
            assert response.status_code == 403 and "s3cr3t" not in response.text, (sql, response.text)

        _refused_reads(refused_over_http)
    finally:
        server.kill()
