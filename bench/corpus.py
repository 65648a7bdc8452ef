"""Build a benchmark corpus of real, distinct text: Python sources and docs found on this machine.

Documents are 1–16 KB slices of standard-library and site-packages files (code, docstrings, READMEs), taken
in a fixed order, so a given size always yields the same bytes, and the 4x corpus never repeats the 1x one
(repeated text would flatter the tokenizer's caches).
"""

from __future__ import annotations

import json
import random
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

FILE_BYTES = 4 * 2**20  # each JSONL file is one partition of about this size


def _source_files() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    files: list[Path] = []
    for root in roots:
        files.extend(p for p in root.rglob("*") if p.suffix in {".py", ".md", ".txt", ".rst"} and p.is_file())
    return sorted(set(files))


def documents(seed: int = 0) -> Iterator[str]:
    rng = random.Random(seed)
    files = _source_files()
    rng.shuffle(files)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        at = 0
        while at < len(text):
            size = rng.randint(1024, 16384)
            piece = text[at : at + size]
            at += size
            if piece.strip():
                yield piece


def build(directory: Path, size_mb: int, skip_mb: int = 0) -> Path:
    """Write ``size_mb`` MB of JSONL files, after skipping the first ``skip_mb`` MB of the document stream."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        return directory
    budget, skip = size_mb * 2**20, skip_mb * 2**20
    written = part = 0
    lines: list[bytes] = []
    pending = 0
    stream = documents()
    for n, text in enumerate(stream):
        line = json.dumps({"id": f"doc-{n}", "text": text}, ensure_ascii=False).encode() + b"\n"
        if skip > 0:
            skip -= len(line)
            continue
        lines.append(line)
        pending += len(line)
        written += len(line)
        if pending >= FILE_BYTES or written >= budget:
            (directory / f"part-{part:04d}.jsonl").write_bytes(b"".join(lines))
            part, lines, pending = part + 1, [], 0
        if written >= budget:
            break
    if written < budget:
        sys.exit(f"only {written / 2**20:.0f} MB of text found on this machine; use a smaller --size-mb")
    return directory


def corpora(size_mb: int) -> tuple[Path, Path]:
    """The benchmark pair: ``size_mb`` MB, and a distinct corpus four times larger (for the scaling check)."""
    data = Path(__file__).parent / "data"
    base = build(data / f"text-{size_mb}mb", size_mb)
    big = build(data / f"text-{4 * size_mb}mb-after-{size_mb}", 4 * size_mb, skip_mb=size_mb)
    return base, big


_WARM_UP_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "that",
    "is",
    "was",
    "for",
    "with",
    "as",
    "on",
    "by",
    "it",
    "from",
    "at",
    "this",
    "be",
    "are",
    "which",
    "an",
    "have",
    "not",
    "or",
    "had",
    "river",
    "stone",
    "garden",
    "letter",
    "winter",
    "market",
    "music",
    "harbour",
    "village",
    "lantern",
    "orchard",
    "meadow",
    "bridge",
    "candle",
    "violin",
    "tower",
    "forest",
    "valley",
]


def warm_up_corpus(directory: Path, n: int = 200) -> Path:
    """A few hundred documents of generated English sentences, from no file on this machine: a job on them loads
    a cluster's modules, tokenizer and word rules without filling its caches with the measured text (fastokens and
    the word splitter cache the pieces they have seen, so a "warm" run over text seen before is not a fair one).
    They pass the quality rules, so every stage of a chain runs."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(99)
    with (directory / "warm-up.jsonl").open("w") as out:
        for i in range(n):
            sentences = [" ".join(rng.choice(_WARM_UP_WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."
                         for _ in range(rng.randint(20, 40))]  # fmt: skip
            out.write(json.dumps({"id": f"warm-up-{i}", "text": "\n\n".join(" ".join(sentences[k : k + 5])
                                  for k in range(0, len(sentences), 5))}) + "\n")  # fmt: skip
    return directory


def worker_peak_mb(client: object) -> float:
    """The largest peak resident set (``VmHWM``) of the client's workers, in MB. Not ``ru_maxrss``: a spawned
    worker reports its parent's peak through it (a driver holding 3 GiB made every worker read 3,131 MB)."""
    return max(client.run(_peak_mb).values())


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb_then_reset() -> float:
    """Linux: writing 5 to ``clear_refs`` resets the peak (``VmHWM``) to the current resident set."""
    peak = _peak_mb()
    Path("/proc/self/clear_refs").write_text("5")
    return peak


class PhasePeaks:
    """Each phase's peak RSS per worker (MB, the largest worker's), phases told apart by the text before the
    first ``:`` of the job's progress (``segment 1 of 2``, ``minhash_dedup``, ...): at each change the workers'
    peaks are read and reset. Pass ``on_progress`` to ``JobHooks``; call ``finish`` after the job."""

    def __init__(self, client: object) -> None:
        self.client, self.current, self.peaks = client, "", {}

    def on_progress(self, snapshot: dict) -> None:
        phase = (snapshot.get("phase") or "").split(":")[0]
        if phase and phase != self.current:
            self.finish()
            self.current = phase

    def finish(self) -> None:
        peak = max(self.client.run(_peak_mb_then_reset).values())
        if self.current:
            self.peaks[self.current] = round(max(peak, self.peaks.get(self.current, 0)))
