"""Shared fixtures: the repository paths, a spec builder and a corpus writer."""

from __future__ import annotations

import gzip
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.spec import WorkflowSpec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "workflows" / "samples" / "pretrain"
WORDS = [
    "data",
    "model",
    "token",
    "shard",
    "corpus",
    "train",
    "packed",
    "sequence",
    "document",
    "quality",
    "filter",
    "river",
    "mountain",
    "city",
    "language",
    "history",
    "science",
    "music",
    "market",
    "system",
    "energy",
    "water",
    "light",
    "number",
    "theory",
    "paper",
    "study",
]


def make_spec(input_url: str | list[str], output_url: str, **overrides: Any) -> WorkflowSpec:
    data: dict[str, Any] = {
        "name": "test",
        # 1 KiB partitions: every small test file stays one partition (many partitions per job, as at scale)
        "input": {"url": input_url, "partition_bytes": 1024},
        "output": {"url": output_url, "shard_sequences": 64},
        "stages": [{"stage": "tokenize"}, {"stage": "pack", "seq_len": 256, "mode": "best_fit"}],
    }
    for key, value in overrides.items():
        data[key] = value
    return parse_spec(data)


def write_jsonl_corpus(directory: Path, files: int, docs_per_file: int, seed: int = 0) -> Path:
    """Files of English-like documents of varied length (some longer than a 256-token sequence)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = []
        for d in range(docs_per_file):
            n = rng.choice([5, 20, 60, 150, 400])
            text = " ".join(rng.choice(WORDS) for _ in range(n))
            lines.append(json.dumps({"id": f"f{f}-d{d}", "text": text}))
        payload = ("\n".join(lines) + "\n").encode()
        (directory / f"part-{f:03d}.jsonl.gz").write_bytes(gzip.compress(payload, mtime=0))
    return directory


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, for byte-identical comparisons of two outputs."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_jsonl_corpus(tmp_path / "corpus", files=4, docs_per_file=50)


BIN = Path(sys.executable).parent
ADMIN, READER, ANALYST = "admin-token", "reader-token", "analyst-token"


class Server:
    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root = root
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "REFINERY_API_TOKENS": f"{ADMIN},{READER}=read,{ANALYST}=read+sql",
            "REFINERY_DATA_ROOTS": str(self.root),
            "REFINERY_STATE_DB": str(self.root / "state.sqlite"),
            "REFINERY_WORKERS": "1",
            **self.env,
        }
        self.proc = subprocess.Popen([BIN / "refinery", "serve", "--port", str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/openapi.json", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise TimeoutError("the service did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def client(self, token: str | None = ADMIN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def wait_for_job(
    client: httpx.Client, job_id: str, states: tuple[str, ...] = ("succeeded", "failed"), limit: float = 180
) -> dict[str, Any]:
    """Poll a job of a running service until it reaches one of ``states``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} still {job['state']}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A service whose jobs may use tiny partitions (so a small test corpus still spans several)."""
    running = Server(tmp_path, env={"REFINERY_MIN_PARTITION_BYTES": "1024"})
    running.start()
    try:
        yield running
    finally:
        running.kill()
