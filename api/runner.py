"""Run jobs for the service: each job's driver runs in a thread of the service, its tasks on Dask.

The driver thread only plans, submits and commits; partitions run on the configured Dask cluster (a local one
per job by default). State and progress go to the job store as they change.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any

from api.store import JobStore
from pipeline.runner import JobConflictError, JobHooks, run_workflow
from pipeline.waiting import JobCancelled
from schemas.spec import WorkflowSpec


class JobRunner:
    def __init__(self, store: JobStore, scheduler: str | None, workers: int | None, roots: tuple[str, ...]) -> None:
        self.store, self.scheduler, self.workers, self.roots = store, scheduler, workers, roots
        self._cancel: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self, job_id: str, spec: WorkflowSpec) -> None:
        """Run a job the caller has moved to ``queued`` (a compare-and-set in the store, so once per job)."""
        self._cancel[job_id] = threading.Event()
        thread = threading.Thread(target=self._run, args=(job_id, spec), name=f"job-{job_id}", daemon=True)
        self._threads[job_id] = thread
        thread.start()

    def cancel(self, job_id: str) -> bool:
        event = self._cancel.get(job_id)
        if event is None:
            return False
        event.set()
        return True

    def _run(self, job_id: str, spec: WorkflowSpec) -> None:
        store = self.store
        if not store.transition(job_id, ("queued",), "running"):
            store.update(job_id, state="cancelled")  # cancelled before it started
            return
        store.log(job_id, f"started {spec.name}: {len(spec.stages)} stages, output {spec.output.url}")

        def progress(snapshot: dict[str, Any]) -> None:
            store.update(job_id, progress=snapshot)

        hooks = JobHooks(on_progress=progress, cancelled=self._cancel[job_id].is_set, roots=self.roots)
        try:
            result = run_workflow(spec, self.scheduler, self.workers, show_progress=False, hooks=hooks)
        except JobCancelled:
            store.update(job_id, state="cancelled")
            store.log(job_id, "cancelled; finished partitions are kept, POST /jobs/{id}/resume continues")
        except (JobConflictError, OSError, ValueError) as error:
            store.update(job_id, state="failed", error=str(error))
            store.log(job_id, f"failed: {error}")
        except Exception as error:  # the job fails, the service stays up; the trace goes to the job's log
            store.update(job_id, state="failed", error=f"{type(error).__name__}: {error}")
            store.log(job_id, traceback.format_exc())
        else:
            store.update(job_id, state="succeeded", funnel=result.manifest.funnel.model_dump())
            store.log(job_id, f"succeeded: {result.manifest.funnel.kept} kept, {result.skipped_partitions} resumed")
