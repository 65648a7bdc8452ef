"""s3:// input and output against a real S3-compatible server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from pipeline.runner import run_workflow

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
