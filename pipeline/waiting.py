"""Waiting on Dask futures while staying cancellable: a cancel takes effect within seconds, even for a hung task.

Dask cannot interrupt a Python function that is running: cancelling its future only makes the scheduler forget
it, while the worker thread runs on (a tokenizer reading an endless file, a regex that never returns). So after a
cancel, workers still executing a cancelled task are restarted; Dask reschedules whatever else they held.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, TimeoutError

from distributed import Client, Future, as_completed

POLL_SECONDS = 0.5
GRACE_SECONDS = 2.0


class JobCancelled(RuntimeError):
    """The job was cancelled; finished partitions keep their markers, so it can be resumed."""


def _cancelled_still_running(dask_worker) -> list[str]:  # runs on each worker's event loop
    return [str(key) for key, task in dask_worker.state.tasks.items() if task.state == "cancelled"]


def _ask(client: Client, workers: list[str], timeout: float) -> dict[str, object] | None:
    """Which cancelled tasks each worker still runs; None if some worker does not answer in time (a task that
    holds the GIL in native code freezes the worker's event loop too)."""
    pool = ThreadPoolExecutor(1)
    answer = pool.submit(client.run, _cancelled_still_running, workers=workers, on_error="return")
    pool.shutdown(wait=False)
    try:
        return answer.result(timeout)
    except TimeoutError:
        return None


def stop_futures(client: Client, futures: list[Future]) -> None:
    """Cancel ``futures``; restart the workers that still execute a cancelled task after a short grace period,
    or that stop answering."""
    busy = sorted(worker for worker, keys in client.processing().items() if keys)
    client.cancel(futures, force=True)
    time.sleep(POLL_SECONDS)  # let the cancellation reach the workers before asking them
    stuck = set(busy)
    deadline = time.monotonic() + GRACE_SECONDS
    while stuck and time.monotonic() < deadline:
        answer = _ask(client, sorted(stuck), max(0.1, deadline - time.monotonic()))
        if answer is None:
            break
        stuck = {worker for worker, keys in answer.items() if keys}
        if stuck:
            time.sleep(POLL_SECONDS)
    if stuck:
        client.restart_workers(sorted(stuck), timeout=60, raise_for_error=False)


def as_finished(
    client: Client, futures: list[Future], cancelled: Callable[[], bool] | None, what: str
) -> Iterator[Future]:
    """Yield futures as they finish, checking ``cancelled`` every half second; raise :class:`JobCancelled`."""
    finished = as_completed(futures)  # O(1) per completion, however many futures (a wait() per poll is O(n))
    while not finished.is_empty():
        if cancelled is not None and cancelled():
            stop_futures(client, futures)
            raise JobCancelled(f"{what} was cancelled")
        batch = finished.next_batch(block=False)
        if not batch:  # woken as soon as a future finishes, so the job's last task is seen at once
            with finished.thread_condition:  # as_completed queues a future, then notifies under this lock
                if finished.queue.empty():
                    finished.thread_condition.wait(POLL_SECONDS)
        yield from batch


def gather_cancellable(client: Client, futures: list[Future], cancelled: Callable[[], bool] | None, what: str) -> list:
    """``client.gather`` that honours ``cancelled`` while it waits."""
    for _ in as_finished(client, futures, cancelled, what):
        pass
    return client.gather(futures)
