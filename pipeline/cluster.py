"""The embedded Dask cluster: worker processes on this machine, started the same way by ``refinery run``, the
service and the benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

import dask
import pyarrow as pa
from distributed import Client, LocalCluster, WorkerPlugin
from tornado.ioloop import PeriodicCallback

from schemas.stages import StageBase, TokenizeConfig

#: glibc settings for local workers. Dask's default (trim above 64 KiB) hands a batch's arrays back to the kernel
#: when they are freed, so the next batch page-faults every page anew: measured on a tokenize job, a third of the
#: workers' CPU time went to the kernel (0.9 of 3.2 core-seconds for 256 MB) and the job ran 25% slower. Arrays
#: under 32 MiB now come from a heap that keeps up to 256 MiB of free memory, still bounded by the batch size.
#: Arrow's allocator (mimalloc) returns memory to the kernel 10 ms after it is freed, which is before the next
#: batch needs it: building a 16 MB string column and reading it back took 10.5 ms with that, 5.0 ms with a 1 s
#: delay. The nanny reads these when it is built and applies them to every worker it (re)starts (and to its own
#: process: the driver, for a local cluster).
WORKER_MALLOC = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": str(256 * 2**20),
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "distributed.nanny.pre-spawn-environ.MIMALLOC_PURGE_DELAY": "1000",
}

#: fastokens fans each encode call out to threads of its own, one per core unless ``FASTOKENS_BPE_THREADS`` says
#: otherwise. With one single-threaded worker process per core those threads compete with the other workers for
#: the same cores and spin while they wait: measured on the 1 GiB tokenize job (2 workers, 2 cores), the job took
#: 5.0-5.2 s with them and 4.4-4.5 s with one thread per worker, and fastokens alone encodes 135 MB per CPU-second
#: with two threads against 159-200 with one. A worker's own setting, when it has one, is kept. It is set by a
#: plugin in the worker, not through the nanny's ``pre-spawn-environ``: the nanny also writes those into the
#: environment of its own process, which for a local cluster is the driver's (the benchmarks' raw fastokens ran on
#: one thread after a cluster had started).
TOKENIZER_THREADS = "FASTOKENS_BPE_THREADS"


def local_cluster(
    workers: int | None = None, worker_memory: str | None = None, dashboard_address: str | None = None
) -> LocalCluster:
    """``workers`` single-threaded worker processes (default: one per core) with ``worker_memory`` each (Dask's
    "auto": the machine's memory shared out). One thread per process: the stages hold the GIL in Python."""
    with dask.config.set(WORKER_MALLOC):
        return LocalCluster(
            n_workers=workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard_address,
            memory_limit=worker_memory or "auto",
            silence_logs=logging.ERROR,
        )


class OneTokenizerThread(WorkerPlugin):
    """``TOKENIZER_THREADS`` in every worker of a job's cluster, local or remote: fastokens reads it when it first
    encodes, so it holds for any worker that has not tokenized yet."""

    name = "refinery-one-tokenizer-thread"

    def setup(self, worker: Any) -> None:
        os.environ.setdefault(TOKENIZER_THREADS, "1")


#: What a global step's task imports when it arrives on a worker.
STEP_MODULES = ("pipeline.dedup",)


class WarmUp:
    """Readies workers for a global step and the segment after it while they would otherwise wait: a thread on
    each imports the step's module (Dask DataFrame: 0.26 s) and loads the segment's tokenizers (fastokens: 0.6-0.75
    s of CPU, outside the GIL). Without it the step's task began by importing, and the segment by every worker
    loading the tokenizer on its first task.

    A worker starts when it falls idle at the tail of the segment before (:meth:`start_on`, from the runner), the
    rest as the step starts. A step of one task runs on the worker that started first (:meth:`step_worker`): its
    imports are likely done by then."""

    def __init__(self, client: Client, stages: Iterable[StageBase], modules: tuple[str, ...] = STEP_MODULES) -> None:
        self.client, self.modules = client, modules
        self.keys = sorted({(s.tokenizer, s.backend, s.split_special_tokens) for s in stages
                            if isinstance(s, TokenizeConfig)})  # fmt: skip
        self.started: list[str] = []

    def start_on(self, workers: Iterable[str]) -> None:
        """Start the warm-up on ``workers`` (those not started yet) and return at once: the call to the workers
        is made from a thread of its own, so a worker gone since it was listed (the scheduler tries it for 30 s)
        neither holds up nor fails the job; it is logged."""
        new = sorted(set(workers) - set(self.started))
        if new:
            threading.Thread(target=self._run, args=(new,), name="refinery-warm-up-call", daemon=True).start()
            self.started += new

    def _run(self, workers: list[str]) -> None:
        try:
            self.client.run(_warm_up_in_background, self.modules, self.keys, workers=workers, on_error="return")
        except Exception:  # an optimisation: the tasks load what they need themselves
            logging.getLogger(__name__).warning("warming up workers %s failed", workers, exc_info=True)

    def step_worker(self, workers: list[str]) -> str:
        """Where a one-task step should run (``workers``: at least one): the first worker warmed, if any."""
        return next((w for w in self.started if w in workers), None) or min(workers)


def _warm_up_in_background(modules: tuple[str, ...], keys: list[tuple[str, str, bool]]) -> None:
    def warm_up() -> None:
        try:
            for module in modules:
                importlib.import_module(module)
            from stages.tokenize import load_encoder

            for key in keys:
                load_encoder(*key)
        except Exception:  # the task that needs it does it again and reports the error with its context
            logging.getLogger(__name__).exception("warming up the worker failed")

    threading.Thread(target=warm_up, name="refinery-warm-up", daemon=True).start()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def _glibc() -> Any | None:
    """glibc's allocator functions, or None where there are none (another libc, glibc before 2.33)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


class ReleaseFreedMemory(WorkerPlugin):
    """Hands the memory a worker's allocators hold freed back to the kernel: after a task that left resident
    memory ``after_task_bytes`` above the lowest it has been since the last release, and while a task runs once
    it is ``keep_bytes`` above it (checked every ``every_ms`` from the worker's event loop).

    glibc returns only the top of its heap (and only above ``MALLOC_TRIM_THRESHOLD_``); memory freed below a
    live allocation stays with the process. Over a long job the holes add up: in the dedup step of 4M short
    documents the workers' heaps held 0.6 GB free against 0.1 GB in use, and peak RSS grew with the corpus (1.2,
    1.5, 1.8 GB for 1M, 2M, 4M documents) though every task's data is bounded. ``malloc_trim(0)`` releases the
    free pages inside the heap too, and Arrow's pool (mimalloc) its free pages, which it otherwise keeps for a
    second (``MIMALLOC_PURGE_DELAY``). The dedup step's thousands of short tasks each allocate and free up to
    0.2 GB: without a release between them, a worker started each task on what the last ones left (0.88 GB
    resident at 4M documents, 0.1 GB of it data) and its peak followed the number of tasks. Within a task a
    release runs only after growth (a walk of the heap costs milliseconds), so a batch still reuses the pages of
    the last one (see ``WORKER_MALLOC``)."""

    name = "refinery-release-freed-memory"

    def __init__(self, keep_bytes: int = 256 * 2**20, every_ms: int = 200, after_task_bytes: int = 128 * 2**20) -> None:
        self.keep_bytes, self.every_ms, self.after_task_bytes = keep_bytes, every_ms, after_task_bytes
        self._release: _Release | None = None

    def setup(self, worker: Any) -> None:
        libc = _glibc()
        if libc is None:
            return
        self._release = _Release(libc)
        callback = PeriodicCallback(lambda: self._release.above(self.keep_bytes), self.every_ms)
        worker.periodic_callbacks[self.name] = callback
        callback.start()

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start == "executing" and self._release is not None:  # a task has just ended, however
            self._release.above(self.after_task_bytes)

    def teardown(self, worker: Any) -> None:
        callback = worker.periodic_callbacks.pop(self.name, None)
        if callback is not None:
            callback.stop()


def resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Release:
    """Frees what the allocators hold unused once resident memory is some bytes above the lowest it has been
    since the last release."""

    def __init__(self, libc: Any) -> None:
        self.libc, self.floor = libc, resident_bytes()

    def above(self, grown: int) -> None:
        resident = resident_bytes()
        if resident > self.floor + grown:
            pa.default_memory_pool().release_unused()
            self.libc.malloc_trim(0)
            self.floor = resident_bytes()
        else:
            self.floor = min(self.floor, resident)
