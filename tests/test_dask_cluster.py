"""The same spec on a real multi-process Dask cluster: identical bytes, worker loss survived, resume works."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from distributed import Client

from pipeline.runner import run_workflow

from .conftest import ROOT, make_spec, tree_bytes, write_jsonl_corpus

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """``dask scheduler`` and ``dask worker`` as separate processes on 127.0.0.1."""

    def __init__(self, workers: int, homes: list[Path] | None = None, env: dict[str, str] | None = None) -> None:
        """``homes``: one directory per worker, its working directory and TMPDIR (no disk shared with the
        driver); ``env``: extra environment of every process (e.g. allowed failures)."""
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        port = self.address.rsplit(":", 1)[1]
        base = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        common = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.scheduler = subprocess.Popen(
            [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
            cwd=ROOT, env=base, **common,
        )  # fmt: skip
        self.workers = []
        for k in range(workers):
            home = homes[k] if homes else ROOT
            env_k = {**base, "TMPDIR": str(home)} if homes else base
            command = [BIN / "dask", "worker", self.address, "--nthreads", "1", "--no-dashboard", "--no-nanny"]
            self.workers.append(subprocess.Popen(command, cwd=home, env=env_k, **common))
        self._wait_for(workers)

    def _wait_for(self, workers: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with Client(self.address, timeout="5s") as client:
                    client.wait_for_workers(workers, timeout=50)
                    return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"cluster at {self.address} did not start")

    def close(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    running = Cluster(workers=2)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def corpus_and_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dask")
    corpus = write_jsonl_corpus(root / "corpus", files=24, docs_per_file=400, seed=3)
    reference = root / "local"
    run_workflow(make_spec(str(corpus), str(reference)), workers=2, show_progress=False)
    return corpus, reference


def test_remote_cluster_output_is_byte_identical(
    cluster: Cluster, corpus_and_reference: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, reference = corpus_and_reference
    events: list[dict] = []
    subscribe = Client.subscribe_topic

    def spy(self: Client, topic: str, handler: Callable) -> None:
        subscribe(self, topic, lambda event: (events.append(event[1]), handler(event)))

    monkeypatch.setattr(Client, "subscribe_topic", spy)
    run_workflow(make_spec(str(corpus), str(tmp_path / "remote")), scheduler=cluster.address, show_progress=True)
    assert tree_bytes(tmp_path / "remote") == tree_bytes(reference)
    # Per-stage progress comes from the workers as each step of each partition finishes.
    steps = {(e["step"], e["partition"]) for e in events}
    assert len(steps) >= 24 * 4 - 2, "read, tokenize, pack and write events of (nearly) every partition"
    assert set(cluster_client_run(cluster, _tokenizer_threads).values()) == {0}, "fastokens ran on the task's thread"


def _tokenizer_threads() -> int:
    """Threads fastokens started in this process (it names them ``fastokens-N``)."""
    names = (Path(f"/proc/self/task/{task}/comm").read_text() for task in os.listdir("/proc/self/task"))
    return sum(name.startswith("fastokens") for name in names)


def cluster_client_run(cluster: Cluster, function: Callable) -> dict:
    with Client(cluster.address, timeout="10s") as client:
        return client.run(function)


def test_local_workers_tokenize_on_one_thread_each() -> None:
    """One worker process per core: fastokens' own threads (one per core by default) would compete with the other
    workers for the cores (``pipeline.cluster.TOKENIZER_THREADS``)."""
    import pyarrow as pa

    from pipeline.cluster import TOKENIZER_THREADS
    from pipeline.runner import dask_client
    from schemas.stages import TokenizeConfig
    from stages.tokenize import tokenize

    if os.cpu_count() == 1:
        pytest.skip("one core: fastokens starts no thread of its own anyway")
    table = pa.table({"text": ["a document of a few words, tokenized on a worker " * 50] * 256})
    with dask_client(None, 1) as client:
        assert client.submit(tokenize, table, TokenizeConfig()).result().num_rows == 256
        assert list(client.run(_tokenizer_threads).values()) == [0]
    assert TOKENIZER_THREADS not in os.environ, "the driver's own tokenizer keeps its threads"


def _warmed_up() -> tuple[bool, int]:  # runs on a worker
    import importlib

    loaded = importlib.import_module("stages.tokenize")._load_encoder.cache_info().currsize
    return "tabnanny" in sys.modules, loaded


def test_a_worker_warms_up_for_the_step_and_the_segment_after_it() -> None:
    """``WarmUp``: a worker told to start imports the global step's module and loads the next segment's tokenizer
    in the background; the others stay as they were, and a one-task step is placed on the first one warmed."""
    from pipeline.cluster import WarmUp
    from pipeline.runner import dask_client
    from schemas.stages import PackConfig, TokenizeConfig

    with dask_client(None, 2) as client:
        first, second = sorted(client.scheduler_info(n_workers=-1)["workers"])
        # a module no worker imports otherwise stands for the step's (this test module imports pipeline.dedup)
        warm_up = WarmUp(client, [TokenizeConfig(), PackConfig()], modules=("tabnanny",))
        assert warm_up.step_worker([second, first]) == first, "none warmed: the first by name"
        warm_up.start_on([second])
        deadline = time.monotonic() + 60
        while client.run(_warmed_up, workers=[second])[second] != (True, 1) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.run(_warmed_up) == {first: (False, 0), second: (True, 1)}
        assert warm_up.step_worker([first, second]) == second
        warm_up.start_on([first, second])  # each worker once
        assert warm_up.started == [second, first]


def test_killing_a_worker_mid_job_changes_nothing(
    cluster: Cluster, corpus_and_reference: tuple[Path, Path], tmp_path: Path
) -> None:
    corpus, reference = corpus_and_reference
    out = tmp_path / "killed"
    markers = out / "_markers"
    killed: list[int] = []

    def kill_when_started() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (markers.exists() and any(markers.iterdir())):
            time.sleep(0.01)
        victim = cluster.workers[0]
        victim.send_signal(signal.SIGKILL)
        killed.append(len(list(markers.iterdir())) if markers.exists() else 0)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    run_workflow(make_spec(str(corpus), str(out)), scheduler=cluster.address, show_progress=False)
    killer.join()
    assert cluster.workers[0].wait(timeout=10) == -signal.SIGKILL
    assert killed and killed[0] < 24, "the worker died while partitions were still running"
    assert tree_bytes(out) == tree_bytes(reference)


def test_interrupted_job_resumes_to_the_same_bytes(corpus_and_reference: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, reference = corpus_and_reference
    out = tmp_path / "resumed"
    command = [
        str(BIN / "refinery"), "run", str(ROOT / "workflows" / "tokenize.yaml"), "--no-progress", "--workers", "1",
        "--input", str(corpus), "--output", str(out), "--set", "stages.1.seq_len=256",
        "--set", "stages.1.mode=best_fit", "--set", "output.shard_sequences=64", "--set", "input.partition_bytes=1024",
        "--set", "output.shard_formats=[megatron,parquet]",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = out / "_markers"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (markers.exists() and len(list(markers.iterdir())) >= 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    done = len(list(markers.iterdir()))
    assert 3 <= done < 24 and not (out / "_SUCCESS").exists(), "the job was interrupted part-way"

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    resumed = tree_bytes(out)
    expected = tree_bytes(reference)
    # The spec's name differs (tokenize vs test); everything derived from data and settings must not.
    assert resumed.keys() == expected.keys()
    for name in expected:
        if name not in ("manifest.json", "_job.json"):
            assert resumed[name] == expected[name], name


def test_dedup_on_two_workers_equals_one_worker(cluster: Cluster, tmp_path: Path) -> None:
    """Signatures and band keys shuffle between two worker processes; the verdicts match one worker's."""
    import json

    from .dedup_corpus import planted_pairs

    pairs = planted_pairs(240, seed=11)
    corpus = tmp_path / "in"
    corpus.mkdir()
    texts = [t for pair in pairs for t in pair[:2]]
    for f in range(8):  # originals and variants scattered over eight partitions
        chunk = texts[f::8]
        (corpus / f"{f}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in chunk))
    stages = [{"stage": "exact_dedup"}, {"stage": "minhash_dedup"}, {"stage": "tokenize"}, {"stage": "pack"}]
    where = {"url": str(corpus), "partition_bytes": 32 * 1024}  # a few byte ranges per file
    single = make_spec(str(corpus), str(tmp_path / "one"), stages=stages, input=where)
    run_workflow(single, workers=1, show_progress=False)
    remote = make_spec(str(corpus), str(tmp_path / "two"), stages=stages, input=where)
    result = run_workflow(remote, scheduler=cluster.address, show_progress=False)
    assert result.manifest.funnel.dropped.get("near_duplicate", 0) > 50
    assert tree_bytes(tmp_path / "two") == tree_bytes(tmp_path / "one")


def test_a_worker_that_dies_fails_the_job_at_once_naming_the_partition_and_the_budget(tmp_path: Path) -> None:
    """With retries off (the local cluster's setting), a dead worker is not a doomed retry loop and not a bare
    KilledWorker traceback: one message names the split, the memory budget and the settings to change."""
    from pipeline.runner import WorkerDiedError

    corpus = write_jsonl_corpus(tmp_path / "corpus", files=1, docs_per_file=3000, seed=2)
    cluster = Cluster(workers=1, env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})
    killed: list[str] = []

    def kill_when_busy() -> None:
        with Client(cluster.address, timeout="10s") as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                busy = [w for w, keys in client.processing().items() if any("segment-" in k for k in keys)]
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(busy[0])
                    return
                time.sleep(0.02)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        spec = make_spec(str(corpus), str(tmp_path / "out"), input={"url": str(corpus), "batch_bytes": 4096})
        with pytest.raises(WorkerDiedError) as caught:
            run_workflow(spec, scheduler=cluster.address, show_progress=False)
    finally:
        killer.join()
        cluster.close()
    message = str(caught.value)
    assert killed and "part-00000" in message and "whole file" in message and str(corpus) in message
    assert "memory budget per worker" in message and "input.batch_bytes" in message and "--worker-memory" in message


def test_workers_hand_the_memory_their_heap_holds_free_back_to_the_kernel() -> None:
    """glibc keeps memory freed below a live allocation; over a long job those holes made peak RSS grow with the
    corpus. Every client the pipeline opens registers ``ReleaseFreedMemory``: here a worker frees 0.5 GB of small
    objects around survivors (the holes stay resident without the plugin), and within a second its resident
    memory is back near where it started."""
    from pipeline.cluster import _glibc, resident_bytes
    from pipeline.runner import dask_client

    if _glibc() is None:
        pytest.skip("not glibc")

    def fragment(dask_worker: object) -> tuple[int, int]:
        start = resident_bytes()
        blocks = [bytes(1024) + bytes([k % 251]) for k in range(500_000)]
        dask_worker._survivors = blocks[::64]  # the freed ones are holes below live objects, not the heap's top
        del blocks
        return start, resident_bytes()

    with dask_client(None, 1) as client:  # the local cluster `refinery run` starts (a remote one registers it too)
        start, holes = next(iter(client.run(fragment).values()))
        time.sleep(1.0)
        after = next(iter(client.run(resident_bytes).values()))
    assert holes - start > 400 * 2**20  # the holes were resident when the objects were freed
    assert after - start < 100 * 2**20, (start >> 20, holes >> 20, after >> 20)


def test_a_task_that_leaves_freed_memory_behind_is_followed_by_a_release() -> None:
    """The dedup step's short tasks each allocate and free up to 0.2 GB. Below the 256 MiB that makes the
    periodic check release memory, what one task frees stayed resident and the next started above it: each task
    that ends 128 MiB above the last release's level is followed by one."""
    from pipeline.cluster import _glibc, resident_bytes
    from pipeline.runner import dask_client

    if _glibc() is None:
        pytest.skip("not glibc")

    def leave_holes() -> tuple[int, int]:
        start = resident_bytes()
        blocks = [bytes(1024) + bytes([k % 251]) for k in range(200_000)]
        survivors = blocks[::64]  # held until the task ends: what it frees is holes below live objects
        del blocks
        holes = resident_bytes()
        assert survivors
        return start, holes

    with dask_client(None, 1) as client:
        start, holes = client.submit(leave_holes, pure=False).result()
        after = next(iter(client.run(resident_bytes).values()))
    assert 150 * 2**20 < holes - start < 256 * 2**20, "the periodic check alone would not release these"
    assert after - start < 60 * 2**20, (start >> 20, holes >> 20, after >> 20)
