"""Progress a person can use: stored bytes done / total per step, rate and ETA, and the global step's phase.

Workers report each batch's bytes per step as Dask events; this object sums them. On a terminal it draws rich
bars; otherwise (a log file, CI, ``nohup``) it prints one line every ``interval`` seconds with the same figures;
the service gets the same numbers through ``on_progress``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

LOG_INTERVAL = 10.0
PUBLISH_INTERVAL = 0.5


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class JobProgress:
    """Bytes done per step of a job (``steps`` in order), against ``total`` stored input bytes."""

    def __init__(
        self,
        name: str,
        steps: list[str],
        total: int,
        show: bool,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        interval: float = LOG_INTERVAL,
    ) -> None:
        self.name, self.steps, self.total = name, steps, max(total, 1)
        self.done = dict.fromkeys(steps, 0)
        self.started: dict[str, float] = {}
        self.phase = ""
        self.on_progress, self.interval = on_progress, interval
        self.published = 0.0
        self.lock = threading.Lock()
        self.terminal = show and sys.stderr.isatty()
        self.logging = show and not self.terminal
        self.bars: Progress | None = None
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> JobProgress:
        if self.terminal:
            columns = [TextColumn("{task.description:>14}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TimeRemainingColumn()]  # fmt: skip
            self.bars = Progress(*columns, transient=False)
            self.tasks = {step: self.bars.add_task(step, total=self.total) for step in self.steps}
            self.bars.start()
        if self.logging:
            self.thread = threading.Thread(target=self._log_loop, name="refinery-progress", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self._publish(force=True)
        if self.thread is not None:
            self.thread.join()
            if exc[0] is None:
                self._log_line()
        if self.bars is not None:
            self.bars.stop()

    def advance(self, step: str, nbytes: int) -> None:
        if step not in self.done:
            return
        with self.lock:
            self.started.setdefault(step, time.monotonic())
            self.done[step] = min(self.total, self.done[step] + nbytes)
        if self.bars is not None:
            self.bars.update(self.tasks[step], completed=self.done[step])
        self._publish()

    def set_phase(self, text: str) -> None:
        """The global step's current sub-step (shown beside the bars, logged, sent to the service)."""
        with self.lock:
            self.phase = text
        if self.bars is not None:
            self.bars.console.log(f"{self.name}: {text}")
        elif self.logging:
            print(f"{self.name}: {text}", file=sys.stderr, flush=True)
        self._publish(force=True)

    def snapshot(self) -> dict[str, Any]:
        """Bytes done, rate (bytes/s) and ETA (s) per step."""
        now = time.monotonic()
        with self.lock:
            rate = {s: self.done[s] / max(now - t, 1e-3) for s, t in self.started.items()}
            eta = {s: (self.total - self.done[s]) / r if r > 0 else None for s, r in rate.items()}
            return {"unit": "bytes", "total": self.total, "steps": dict(self.done), "rate": rate, "eta_seconds": eta,
                    "phase": self.phase}  # fmt: skip

    def _publish(self, force: bool = False) -> None:
        """Hand the figures to ``on_progress``, at most twice a second (a job may finish thousands of batches)."""
        now = time.monotonic()
        if self.on_progress is not None and (force or now - self.published >= PUBLISH_INTERVAL):
            self.published = now
            self.on_progress(self.snapshot())

    def line(self) -> str:
        snap = self.snapshot()
        parts = []
        for step in self.steps:
            done = snap["steps"][step]
            text = f"{step} {_size(done)}/{_size(self.total)} ({100 * done / self.total:.0f}%)"
            if step in snap["rate"] and done < self.total:
                eta = snap["eta_seconds"][step]
                text += f" {_size(snap['rate'][step])}/s ETA {_duration(eta) if eta is not None else '?'}"
            parts.append(text)
        return f"{self.name}: " + " | ".join(parts)

    def _log_line(self) -> None:
        print(self.line(), file=sys.stderr, flush=True)

    def _log_loop(self) -> None:
        while not self.stopped.wait(self.interval):
            self._log_line()
