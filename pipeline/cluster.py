"""The embedded Dask cluster: worker processes on this machine, started the same way by ``refinery run``, the
service and the benchmarks."""

from __future__ import annotations

import logging
import os

import dask
from distributed import LocalCluster

#: glibc settings for local workers. Dask's default (trim above 64 KiB) hands a batch's arrays back to the kernel
#: when they are freed, so the next batch page-faults every page anew: measured on a tokenize job, a third of the
#: workers' CPU time went to the kernel (0.9 of 3.2 core-seconds for 256 MB) and the job ran 25% slower. Arrays
#: under 32 MiB now come from a heap that keeps up to 256 MiB of free memory, still bounded by the batch size.
#: The nanny reads them when it is built and applies them to every worker it (re)starts.
WORKER_MALLOC = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": str(256 * 2**20),
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
}


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
