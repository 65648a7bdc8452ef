"""Spec validation: bad specs fail before any work, naming the field and the reason, with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from schemas.spec import SpecError, load_spec, parse_spec

from .conftest import ROOT


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


BASE = {"input": {"url": "in"}, "output": {"url": "out"}}


def test_bad_seq_len_names_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stages = [{"stage": "tokenize"}, {"stage": "tokenize"}, {"stage": "pack", "seq_len": 0}]
    path = _write(tmp_path, {**BASE, "stages": stages})
    assert main(["validate", str(path)]) == 2
    assert "stages[2].seq_len: must be > 0" in capsys.readouterr().err


def test_unknown_stage_lists_known_ones() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, "stages": [{"stage": "tokenise"}]})
    assert "stages[0]: unknown stage tokenise" in str(info.value)
    assert "'tokenize'" in str(info.value) and "'pack'" in str(info.value)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([{"stage": "pack"}], "stages[0]: 'pack' needs a 'tokenize' (or 'sft_format') stage before it"),
        ([{"stage": "tokenize"}, {"stage": "pack"}, {"stage": "tokenize"}], "'pack' must be the last stage"),
        ([{"stage": "tokenize", "backend": "rust"}], "stages[0].backend"),
        ([{"stage": "tokenize", "colour": 1}], "stages[0].colour: is not a known field"),
    ],
)
def test_stage_rules(stages: list[dict], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, "stages": stages})
    assert message in str(info.value)


def test_missing_sections_are_named() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"stages": []})
    assert "input: is required" in str(info.value)
    assert "output: is required" in str(info.value)


def test_set_overrides_and_url_overrides(tmp_path: Path) -> None:
    spec = load_spec(
        ROOT / "workflows" / "pretrain.yaml",
        ["stages.6.seq_len=2048", "stages.6.mode=concat", "output.shard_formats=[parquet]"],
        input_url="s3://bucket/raw/*.jsonl",
        output_url=str(tmp_path),
    )
    assert spec.pack is not None and spec.pack.seq_len == 2048 and spec.pack.mode == "concat"
    assert spec.output.shard_formats == ["parquet"] and spec.output.url == str(tmp_path)
    assert spec.input.url == ["s3://bucket/raw/*.jsonl"]


def test_bad_override_fails_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(ROOT / "workflows" / "pretrain.yaml")
    assert main(["run", spec, "--set", "stages.6.seq_len=-5", "--output", str(tmp_path / "o")]) == 2
    assert "stages[6].seq_len: must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists(), "a bad spec must fail before any work"
    assert main(["validate", spec, "--set", "stages.9.seq_len=1"]) == 2


@pytest.mark.parametrize("name", ["pretrain.yaml", "tokenize.yaml"])
def test_shipped_workflows_validate(name: str) -> None:
    assert main(["validate", str(ROOT / "workflows" / name)]) == 0


def test_fingerprint_ignores_output_location() -> None:
    a = parse_spec({**BASE, "output": {"url": "a"}})
    b = parse_spec({**BASE, "output": {"url": "b"}})
    c = parse_spec({**BASE, "output": {"url": "b"}, "seed": 1})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def _layout_spec(formats: list[str] | None, pack_mode: str, mix: dict | None = None) -> dict:
    output = {"url": "/tmp/out"} | ({"shard_formats": formats} if formats is not None else {})
    stages = [*([mix] if mix else []), {"stage": "tokenize"}, {"stage": "pack", "mode": pack_mode}]
    return {"input": {"url": "/tmp/in"}, "output": output, "stages": stages}


def test_layouts_cannot_be_mixed_up() -> None:
    assert parse_spec(_layout_spec(None, "none")).output.shard_formats == ["megatron"], "documents only by default"
    assert parse_spec(_layout_spec(None, "best_fit")).output.shard_formats == ["megatron", "parquet"]
    with pytest.raises(SpecError, match=r"parquet holds packed sequences, but pack\.mode is 'none'"):
        parse_spec(_layout_spec(["megatron", "parquet"], "none"))
    blend = {"stage": "mix", "weights": {"source~wiki": 2.0}, "apply": "blend"}
    with pytest.raises(SpecError, match="blend' leaves the weights to the trainer's sampler"):
        parse_spec(_layout_spec(["megatron", "megatron_packed"], "best_fit", blend))
    assert parse_spec(_layout_spec(["megatron", "datatrove"], "none", blend)).mix.apply == "blend"
    with pytest.raises(SpecError, match="only once"):
        parse_spec(_layout_spec(["megatron", "megatron"], "none"))


def test_blend_specs_that_cannot_be_sampled_are_refused() -> None:
    def blend(weights: dict, formats: list[str], default: float = 1.0) -> dict:
        mix = {"stage": "mix", "weights": weights, "apply": "blend", "default_weight": default}
        return _layout_spec(formats, "none", mix)

    with pytest.raises(SpecError, match="needs the megatron format"):
        parse_spec(blend({"source~a": 2.0}, ["datatrove"]))
    with pytest.raises(SpecError, match="every weight is 0"):
        parse_spec(blend({"source~a": 0.0}, ["megatron"], default=0.0))
    with pytest.raises(SpecError, match="match no key"):
        parse_spec(blend({"other": 2.0}, ["megatron"]))
    with pytest.raises(SpecError, match="may appear only once"):
        parse_spec({**_layout_spec(["megatron"], "none"), "stages": [{"stage": "mix"}, {"stage": "mix"}]})
    with pytest.raises(SpecError, match="at most 64 items"):  # each bucket holds open files in every task
        parse_spec(blend({f"source~part-{i}": 1.0 for i in range(65)}, ["megatron"]))
    with pytest.raises(SpecError, match="lone surrogate"):
        parse_spec(blend({"source~\ud800": 2.0}, ["megatron"]))
