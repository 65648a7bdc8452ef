"""The path policy, token settings, dotted overrides, catalog quoting and ingest of odd files, without a server."""

from __future__ import annotations

import gzip
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from api.settings import SettingsError, parse_tokens
from pipeline.planner import plan_partitions
from pipeline.runner import run_workflow
from schemas.paths import PathKind, PathPolicy, PathRefused, path_kind_of, walk_fields
from schemas.spec import SpecError, WorkflowSpec, parse_spec, set_dotted
from storage.catalog import connect, run_sql, sql_string

from .conftest import make_spec

# Every string-valued field of the spec model that does not name a file or URL, with why. A new string field must
# be added here or typed as a path (schemas/paths.py), so no file-naming field can skip the policy.
NOT_PATHS = {
    "name": "a label",
    "input.format": "a choice",
    "input.text_field": "a column name",
    "input.id_field": "a column name",
    "input.keep_fields": "column names",
    "output.shard_formats": "choices",
    "stages.stage": "the stage's name",
    "stages.backend": "a choice",
    "stages.mode": "a choice",
    "stages.order": "rule-set names",
    "stages.gopher_quality.stop_words": "words",
    "stages.keep": "language codes or verdicts",
    "stages.benchmark_field": "a column name",
    "stages.weights": "bucket selectors over columns",
    "stages.prompt_field": "a column name",
    "stages.response_field": "a column name",
    "stages.messages_field": "a column name",
    "stages.answer_form": "a choice",
    "stages.ground_truth_field": "a column name",
    "stages.system_prompt": "prompt text",
    "stages.data_source": "a label for verl",
    "stages.units_data_source": "a label for verl",
    "stages.ability": "a label for verl",
    "stages.split": "a label for verl",
}
PATH_FIELDS = {
    "input.url": PathKind.INPUT,
    "output.url": PathKind.OUTPUT,
    "stages.tokenizer": PathKind.READ,
    "stages.index": PathKind.READ,
    "stages.benchmarks": PathKind.READ,
}


def _mentions_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    return any(_mentions_str(arg) for arg in getattr(annotation, "__args__", ()))


def test_every_string_field_of_the_spec_is_a_policed_path_or_declared_not_a_path() -> None:
    seen_paths: dict[str, PathKind] = {}
    unclassified = []
    for name, annotation in walk_fields(WorkflowSpec):
        kind = path_kind_of(annotation)
        if kind is not None:
            seen_paths[name] = kind
        elif _mentions_str(annotation) and name not in NOT_PATHS:
            unclassified.append(name)
    assert not unclassified, f"string fields neither typed as paths nor declared not to be paths: {unclassified}"
    assert seen_paths == PATH_FIELDS


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "raw").mkdir(parents=True)
    (tmp_path / "root" / "raw" / "a.jsonl").write_text('{"text": "one two three"}\n')
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.txt").write_text("secret words here\n")
    return tmp_path / "root"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("../elsewhere/secret.txt", PathKind.READ),
        ("raw/../../elsewhere", PathKind.INPUT),
        ("/etc/passwd", PathKind.READ),
        ("file:///etc/passwd", PathKind.READ),
        ("http://127.0.0.1:9/x.jsonl", PathKind.READ),
        ("https://example.org/x", PathKind.INPUT),
        ("memory://x", PathKind.INPUT),
        ("s3://bucket/x", PathKind.INPUT),
        ("link-out/secret.txt", PathKind.READ),
        ("link-out", PathKind.INPUT),
        (".", PathKind.OUTPUT),
        ("", PathKind.OUTPUT),
        ("out/a\x00b", PathKind.OUTPUT),
        ("out/*", PathKind.OUTPUT),
        ("state", PathKind.OUTPUT),
    ],
)
def test_policy_refuses(root: Path, value: str, kind: PathKind) -> None:
    (root / "link-out").symlink_to(root.parent / "elsewhere")
    (root / "state").mkdir()
    policy = PathPolicy.from_locations([str(root)], protected=[str(root / "state" / "jobs.sqlite")])
    with pytest.raises(PathRefused):
        policy.check(value, kind)


def test_policy_allows_and_resolves_inside_the_roots(root: Path) -> None:
    policy = PathPolicy.from_locations([str(root), "s3://bucket/team"])
    assert policy.check("raw", PathKind.INPUT) == str(root / "raw")
    assert policy.check("raw/*.jsonl", PathKind.INPUT) == str(root / "raw" / "*.jsonl")
    assert policy.check(str(root / "out" / "new"), PathKind.OUTPUT) == str(root / "out" / "new")
    assert policy.check("s3://bucket/team/raw/", PathKind.INPUT) == "s3://bucket/team/raw"
    for other in ("s3://bucket/team2/x", "s3://bucket/other", "s3://other/team/x", "s3://bucket/team"):
        with pytest.raises(PathRefused):
            policy.check(other, PathKind.OUTPUT)


def test_spec_validation_applies_the_policy_to_every_path_field_and_names_it(root: Path) -> None:
    policy = PathPolicy.from_locations([str(root)])
    data = {
        "input": {"url": ["raw", "/etc"]},
        "output": {"url": "out/x"},
        "stages": [
            {"stage": "tags", "tokenizer": "/dev/zero", "benchmarks": ["http://127.0.0.1:9/b.jsonl"]},
            {"stage": "minhash_dedup", "index": "../elsewhere"},
            {"stage": "tokenize", "tokenizer": "deepseek-r1"},
        ],
    }
    with pytest.raises(SpecError) as caught:
        parse_spec(data, policy=policy)
    assert caught.value.refused
    fields = sorted(p.split(":")[0] for p in caught.value.problems)
    assert fields == ["input.url[1]", "stages[0].benchmarks[0]", "stages[0].tokenizer", "stages[1].index"]
    assert parse_spec(data).input.url == ["raw", "/etc"]  # the CLI keeps full freedom


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("name.x=1", "name is a str"),
        ("stages.0.seq_len=[1", "not valid YAML"),
        ("stages.9.seq_len=1", "has no item 9"),
        ("a..b=1", "empty part"),
        ("novalue", "expected KEY=VALUE"),
    ],
)
def test_bad_overrides_are_spec_errors_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        set_dotted({"name": "n", "stages": [{"stage": "tokenize"}]}, override)
    assert message in caught.value.problems[0]


@pytest.mark.parametrize(
    ("field", "value"), [("seq_len", 10**23), ("seq_len", 1e23), ("pad_id", 2**40), ("seq_len", -1)]
)
def test_numbers_have_upper_bounds(field: str, value: Any) -> None:
    data = {"input": {"url": "x"}, "output": {"url": "y"}, "stages": [{"stage": "tokenize"}, {"stage": "pack"}]}
    data["stages"][1][field] = value
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert caught.value.problems[0].startswith(f"stages[1].{field}: ")


@pytest.mark.parametrize("raw", ["=read+sql", "viewer=", "x=bogus", "x=read+", " , ", "a=read,a=sql"])
def test_token_settings_refuse_empty_tokens_and_unknown_or_empty_scopes(raw: str) -> None:
    with pytest.raises(SettingsError):
        parse_tokens(raw)


def test_token_settings() -> None:
    assert parse_tokens("alice, bob=read+sql") == {
        "alice": frozenset({"read", "submit", "sql"}),
        "bob": frozenset({"read", "sql"}),
    }


def test_catalog_quotes_paths_so_a_quote_in_an_output_name_cannot_escape_or_break_others(tmp_path: Path) -> None:
    good = _tiny_output(tmp_path / "good")
    evil_name = "out/t1',union_by_name=true); COPY (SELECT 1) TO '/tmp/refinery-x.csv'; --"
    evil = _tiny_output(tmp_path / evil_name.replace("/", "_"))
    quoted = _tiny_output(tmp_path / "a'b")
    conn = connect({"ds_good": str(good), "ds_evil": str(evil), "ds_quote": str(quoted)})
    for name in ("ds_good", "ds_evil", "ds_quote"):
        assert run_sql(conn.cursor(), f"SELECT count(*) FROM {name}_docs").rows == [[2]]
    assert not Path("/tmp/refinery-x.csv").exists()
    assert sql_string("a'b") == "'a''b'"


def test_catalog_leaves_out_a_damaged_dataset_and_keeps_the_others(tmp_path: Path) -> None:
    good = _tiny_output(tmp_path / "good")
    bad = tmp_path / "bad"
    (bad / "docs").mkdir(parents=True)
    (bad / "docs" / "part-00000.parquet").write_bytes(b"not parquet")
    conn = connect({"ds_good": str(good), "ds_bad": str(bad)})
    assert run_sql(conn.cursor(), "SELECT count(*) FROM ds_good_docs").rows == [[2]]


def test_sql_refuses_by_statement_type_not_by_keywords(tmp_path: Path) -> None:
    conn = connect({"job": str(_tiny_output(tmp_path / "job"))}, prefix=False)
    ok = run_sql(conn.cursor(), "SELECT count(*) AS n FROM docs WHERE source LIKE '%import%' OR id = 'copy load'")
    assert ok.rows == [[0]]
    result = run_sql(conn.cursor(), "SELECT repeat('x', 100000) FROM range(1000)", max_bytes=1_000_000)
    assert result.truncated_by == "bytes" and 5 <= len(result.rows) <= 10


def _tiny_output(directory: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (directory / "docs").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a", "b"], "source": ["s", "s"]}), directory / "docs" / "part-00000.parquet")
    return directory


def test_ingest_quarantines_symlinks_out_of_the_roots_fifos_bad_names_and_empty_compressed_files(
    root: Path, tmp_path: Path
) -> None:
    raw = root / "raw"
    (raw / "passwd.txt").symlink_to(root.parent / "elsewhere" / "secret.txt")
    (raw / "inside.txt").symlink_to(raw / "a.jsonl")  # a link that stays inside the roots is read
    os.mkfifo(raw / "pipe.jsonl")
    (raw / "empty.jsonl.gz").write_bytes(b"")
    (raw / "empty.jsonl.zst").write_bytes(b"")
    (raw / "good.jsonl.gz").write_bytes(gzip.compress(b'{"text": "four five six"}\n'))
    with open(os.fsencode(str(raw)) + b"/bad-\xff-name.jsonl", "wb") as handle:
        handle.write(b'{"text": "seven"}\n')
    spec = make_spec(str(raw), str(tmp_path / "out"), stages=[], input={"url": str(raw), "format": "auto"})
    spec = spec.model_copy(update={"input": spec.input.model_copy(update={"format": "jsonl"})})
    plans = plan_partitions(spec, (str(root),))
    refused = plans[-1]
    assert refused.format == "refused"
    assert sorted(refused.sources) == sorted(
        [str(raw / "passwd.txt"), str(raw / "pipe.jsonl"), f"{raw}/bad-\\xff-name.jsonl"]
    )

    from pipeline.runner import JobHooks

    done = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        result["job"] = run_workflow(spec, workers=1, show_progress=False, hooks=JobHooks(roots=(str(root),)))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(120), "the job hung (a FIFO was opened?)"
    funnel = result["job"].manifest.funnel
    assert funnel.balanced and funnel.input == funnel.kept + sum(funnel.quarantined.values())
    assert funnel.kept == 3  # a.jsonl, inside.txt (-> a.jsonl), good.jsonl.gz
    assert funnel.quarantined == {"truncated_file": 2, "unreadable_file": 3}
    import pyarrow.parquet as pq

    quarantine = pq.read_table(tmp_path / "out" / "quarantine").to_pylist()
    details = json.dumps([q["detail"] for q in quarantine])
    assert "outside the data roots" in details and "not a regular file" in details and "not valid UTF-8" in details
    assert "secret words" not in json.dumps(quarantine)


def test_chained_urls_are_refused_even_with_an_absolute_path(root: Path) -> None:
    (root / "evil").symlink_to(root.parent / "elsewhere" / "secret.txt")
    policy = PathPolicy.from_locations([str(root)])
    for value in (f"{root}/evil::x", f"{root}/raw::x", "raw::x", "simplecache::raw"):
        with pytest.raises(PathRefused):
            policy.check(value, PathKind.READ)


@pytest.mark.parametrize("raw", ["9" * 5000, "[" * 5000, "{a: " * 3000])
def test_overrides_that_break_the_yaml_parser_are_spec_errors(raw: str) -> None:
    with pytest.raises(SpecError):
        set_dotted({"stages": [{}, {}]}, f"stages.1.seq_len={raw}")


def test_nothing_is_written_or_read_through_a_symlink_planted_in_an_output(root: Path, corpus: Path) -> None:
    from storage.fs import StorageError, read_bytes, write_bytes_atomic

    outside = root.parent / "elsewhere"
    out = root / "out"
    (out / "_markers").mkdir(parents=True)
    (out / "docs").symlink_to(outside)
    with pytest.raises(StorageError, match="symbolic link"):
        write_bytes_atomic(str(out / "docs" / "sub" / "part.parquet"), b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    os.mkfifo(root / "fifo")
    with pytest.raises(StorageError, match="not a regular file"):
        read_bytes(str(root / "fifo"))

    spec = make_spec(str(corpus), str(root / "job"))
    run_workflow(spec, workers=1, show_progress=False)
    marker = root / "job" / "_markers" / "part-00000.json"
    marker.unlink()
    marker.symlink_to(outside / "secret.txt")  # a planted marker must neither be trusted nor echoed
    with pytest.raises(StorageError) as caught:
        run_workflow(spec, workers=1, show_progress=False)
    assert "secret words" not in str(caught.value)


def test_catalog_skips_a_planted_link_to_a_parquet_file_elsewhere(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    job = _tiny_output(tmp_path / "job")
    pq.write_table(pa.table({"secret": [42]}), tmp_path / "secret.parquet")
    (job / "docs" / "zz.parquet").symlink_to(tmp_path / "secret.parquet")
    conn = connect({"ds_job": str(job)})
    columns = run_sql(conn.cursor(), "SELECT column_name FROM information_schema.columns").rows
    assert ["secret"] not in columns


def test_a_link_whose_target_holds_a_chained_url_is_refused(root: Path) -> None:
    (root / "evil").symlink_to(root.parent / "elsewhere" / "secret.txt")
    (root / "blink").symlink_to(f"{root}/evil::x")
    with pytest.raises(PathRefused, match="::"):
        PathPolicy.from_locations([str(root)]).check("blink", PathKind.READ)


def test_planted_links_at_job_record_names_are_neither_written_through_nor_read(root: Path, corpus: Path) -> None:
    from pipeline.runner import JobHooks
    from schemas.stages import ExactDedupConfig
    from storage.fs import StorageError

    victim = root.parent / "elsewhere" / "victim"
    victim.write_bytes(b"untouched")
    spec = make_spec(str(corpus), str(root / "job"), stages=[{"stage": "exact_dedup"}, {"stage": "minhash_dedup"}])
    assert isinstance(spec.stages[0], ExactDedupConfig)
    run_workflow(spec, workers=1, show_progress=False)
    (root / "job" / "dedup" / "clusters.parquet.tmp").symlink_to(victim)  # the old fixed temporary name
    run_workflow(spec, workers=1, show_progress=False)  # everything finished: commits (and writes clusters) again
    assert victim.read_bytes() == b"untouched"

    index = root / "job" / "dedup" / "index"
    (index / "_INDEX.json").unlink()
    (index / "_INDEX.json").symlink_to(root.parent / "elsewhere" / "secret.txt")
    other = make_spec(str(corpus), str(root / "job2"), stages=[{"stage": "minhash_dedup", "index": str(index)}])
    with pytest.raises(StorageError) as caught:
        run_workflow(other, workers=1, show_progress=False)
    assert "secret words" not in str(caught.value)

    moved = root / "job3"
    (root.parent / "elsewhere" / "job3").mkdir()
    moved.symlink_to(root.parent / "elsewhere" / "job3")  # an output swapped for a link after the submission
    with pytest.raises(StorageError, match="replaced by a symbolic link"):
        run_workflow(make_spec(str(corpus), str(moved)), workers=1, show_progress=False,
                     hooks=JobHooks(roots=(str(root),)))  # fmt: skip
    assert not any((root.parent / "elsewhere" / "job3").iterdir())
