"""The ``refinery`` command as a user runs it, and the installed package."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT, SAMPLE, write_jsonl_corpus

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("workflow", "pack_index", "extra"),
    [("pretrain.yaml", 6, ["--set", "stages.1.drop=false"]), ("tokenize.yaml", 1, [])],
)
def test_workflows_run_on_any_corpus_with_overrides(
    workflow: str, pack_index: int, extra: list[str], tmp_path: Path
) -> None:
    corpus = write_jsonl_corpus(tmp_path / "corpus", files=2, docs_per_file=30)
    out = tmp_path / "out"
    command = [BIN / "refinery", "run", ROOT / "workflows" / workflow, "--input", corpus, "--output", out,
               "--workers", "2", "--set", f"stages.{pack_index}.seq_len=512", *extra]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "input" in result.stdout and "kept" in result.stdout and str(out) in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seq_len"] == 512 and manifest["funnel"]["kept"] == 60
    assert (out / "_SUCCESS").exists()


def test_demo_corpus_funnel(tmp_path: Path) -> None:
    """The shipped sample, with its planted bad records, through the main workflow as `make demo` runs it
    (quality rules tag but do not drop: the sample is documentation and code, not web prose)."""
    out = tmp_path / "demo"
    command = [BIN / "refinery", "run", ROOT / "workflows" / "pretrain.yaml", "--output", out, "--no-progress",
               "--set", "stages.1.drop=false"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    funnel = json.loads((out / "stats" / "funnel.json").read_text())
    assert funnel["quarantined"] == {
        "blank_line": 1, "empty_text": 1, "invalid_utf8": 1, "malformed_json": 1, "missing_field": 1,
        "non_string_field": 1,
    }  # fmt: skip
    assert funnel["input"] == funnel["kept"] + sum(funnel["quarantined"].values()) + sum(funnel["dropped"].values())
    assert funnel["kept"] > 200 and funnel["tokens"] > 500_000
    assert len(list(SAMPLE.iterdir())) == 4


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    command = [BIN / "refinery", "run", ROOT / "workflows" / "tokenize.yaml", "--input", tmp_path / "nope.jsonl",
               "--output", tmp_path / "out"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "nope.jsonl" in result.stderr and "does not exist" in result.stderr


def test_other_job_in_output_is_refused(tmp_path: Path) -> None:
    corpus = write_jsonl_corpus(tmp_path / "corpus", files=1, docs_per_file=5)
    base = [BIN / "refinery", "run", ROOT / "workflows" / "tokenize.yaml", "--input", corpus, "--output",
            tmp_path / "out", "--no-progress", "--workers", "1"]  # fmt: skip
    assert subprocess.run(base, capture_output=True, timeout=120).returncode == 0
    other = subprocess.run([*base, "--set", "seed=9"], capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "holds another job" in other.stderr


def test_wheel_holds_the_packages_and_entry_point(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path, ROOT],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("refinery-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("pipeline", "stages", "schemas", "api", "storage"):
        assert f"{package}/__init__.py" in names
    assert not any(n.startswith(("tests/", "bench/", "workflows/")) for n in names)
    assert "stages/data/spacy_en_tokenizer.json" in names and "api/static/index.html" in names, "package data"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "refinery = pipeline.cli:entry" in zipfile.ZipFile(wheel).read(entry).decode()


def test_the_printed_training_lines_are_exact_and_safe_to_paste_whatever_the_output_path(tmp_path: Path) -> None:
    """An output path full of shell, sed and rich-markup syntax: the run prints it as it is, and pasting the
    printed lines makes data-args.txt absolute without running anything."""
    corpus = write_jsonl_corpus(tmp_path / "corpus", files=2, docs_per_file=20)
    out = tmp_path / "o[red]ut #;e touch PWNED;# & 'q' $(touch PWNED2)"
    command = [BIN / "refinery", "run", ROOT / "workflows" / "tokenize.yaml", "--input", corpus, "--output", out,
               "--workers", "1", "--no-progress"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    export = next(line.strip() for line in lines if line.strip().startswith("export OUT="))
    megatron = next(line.split("megatron: ", 1)[1] for line in lines if "megatron: " in line and "awk" in line)
    assert "note: Megatron splits its data-args on whitespace" in result.stdout
    paste = f"{export}\n{megatron.split('  # ')[0]}\n"
    subprocess.run(["bash", "-c", paste], cwd=tmp_path, check=True, timeout=60)
    prefixes = (tmp_path / "data-args.txt").read_text().splitlines()
    assert prefixes and all(p.startswith(str(out) + "/megatron/part-") for p in prefixes), prefixes
    assert all(Path(p + ".bin").exists() for p in prefixes)
    assert not list(tmp_path.rglob("PWNED*")), "nothing in the path ran"
