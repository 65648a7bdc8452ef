"""R1 trace checks and answer verification against reasoning-gym's own problems and scorer."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from schemas.stages import CotFormatConfig, VerifyAnswerConfig
from stages.answers import UnbalancedBoxError, extract_answer, last_boxed
from stages.cot_format import cot_format
from stages.verify_answer import verify_answer

TASKS = ("gsm_symbolic", "basic_arithmetic", "simple_equations", "fraction_simplification")
ALL = ["verified", "wrong", "unverifiable", "timeout"]


def _problems(per_task: int = 12) -> list[tuple[object, dict]]:
    import reasoning_gym

    out = []
    for task in TASKS:
        dataset = reasoning_gym.create_dataset(task, size=per_task, seed=7)
        out.extend((dataset, entry) for entry in dataset)
    return out


def _fraction(answer: str) -> tuple[int, int] | None:
    numbers = re.findall(r"-?\d+", answer)
    return (int(numbers[0]), int(numbers[1])) if ("/" in answer or "frac" in answer) and len(numbers) == 2 else None


def _wrong(answer: str) -> str:
    fraction = _fraction(answer)
    if fraction:
        return f"{fraction[0] + 1}/{fraction[1]}"
    return str(int(float(answer)) + 1)


def _equivalent(answer: str) -> str:
    """The same value in another notation: 138/583 as \\frac{138}{583}, \\dfrac{a}{b} as a/b."""
    fraction = _fraction(answer)
    if fraction:
        num, den = fraction
        return f"{num}/{den}" if "frac" in answer else f"\\frac{{{num}}}{{{den}}}"
    return answer


def test_verdicts_agree_with_reasoning_gym_scorer() -> None:
    rows, expected = [], []
    for dataset, entry in _problems():
        truth = entry["answer"]
        traces = {
            "correct": f"<think>Let me work through it step by step.</think>\nThe answer is \\boxed{{{truth}}}.",
            "wrong": f"<think>Let me work through it step by step.</think>\nThe answer is \\boxed{{{_wrong(truth)}}}.",
            "equivalent": f"<think>Step by step.</think> So the final answer is {_equivalent(truth)}.",
        }
        for kind, response in traces.items():
            rows.append({"text": response, "prompt": entry["question"], "ground_truth": truth, "kind": kind})
            expected.append((dataset, entry))
    table = cot_format(pa.Table.from_pylist(rows), CotFormatConfig())
    assert table.column("drop_reason").null_count == len(rows), "all traces are well formed"
    out = verify_answer(table.drop_columns(["drop_reason"]), VerifyAnswerConfig(keep=ALL)).to_pylist()
    agree = 0
    for row, (dataset, entry) in zip(out, expected, strict=True):
        theirs = dataset.score_answer(answer=row["extracted_answer"], entry=entry) == 1.0
        ours = row["verify_status"] == "verified"
        agree += theirs == ours
        assert ours == (row["kind"] != "wrong"), row
    print(f"\nagreement with reasoning-gym's scorer: {agree}/{len(out)}")
    assert agree == len(out)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("<think>I started but never closed the block", "cot_format:unclosed_think"),
        ("<think>one</think><think>two</think> 4", "cot_format:multiple_think_blocks"),
        ("<think>   \n </think> 4", "cot_format:empty_reasoning"),
        ("<think>fine reasoning</think>   ", "cot_format:empty_answer"),
        ("4 <think>late</think> 4", "cot_format:think_not_at_start"),
        ("<think>fine</think> The answer is \\boxed{\\frac{1}{2}", "cot_format:truncated"),
    ],
)
def test_malformed_traces_get_a_named_reason(response: str, reason: str | None) -> None:
    table = pa.table({"text": [response], "prompt": ["What is 2 + 2?"]})
    assert cot_format(table, CotFormatConfig()).column("drop_reason").to_pylist() == [reason]


def test_r1_zero_form_and_prefilled_think() -> None:
    zero = CotFormatConfig(answer_form="r1_zero")
    table = pa.table(
        {"text": ["<think>add</think> <answer>4</answer>", "<think>add</think> 4"], "prompt": ["2+2?"] * 2}
    )
    out = cot_format(table, zero)
    assert out.column("drop_reason").to_pylist() == [None, "cot_format:missing_answer_tags"]
    assert out.column("answer").to_pylist()[0] == "4"
    prefilled = pa.table({"text": ["I add two and two.\n</think>\n\nThe answer is 4."], "prompt": ["2+2?"]})
    assert cot_format(prefilled, CotFormatConfig()).column("drop_reason").to_pylist() == ["cot_format:missing_think"]
    assert cot_format(prefilled, CotFormatConfig(prefilled_think=True)).column("drop_reason").to_pylist() == [None]


def test_language_mixing_code_blocks_and_long_paragraphs() -> None:
    config = CotFormatConfig(reject_code_blocks=True, max_paragraph_chars=200)
    table = pa.table(
        {
            "text": [
                "<think>首先计算二加二，然后 we check the result carefully in English words here</think> 4",
                "<think>Run this:\n```python\nprint(2 + 2)\n```</think> 4",
                "<think>" + "word " * 100 + "</think> 4",
                "<think>二加二等于四。</think> 答案是4。",
            ],
            "prompt": ["二加二等于多少？", "What is 2 + 2?", "What is 2 + 2?", "二加二等于多少？"],
        }
    )
    reasons = cot_format(table, config).column("drop_reason").to_pylist()
    assert reasons == ["cot_format:language_mixing", "cot_format:code_in_reasoning", "cot_format:long_paragraph", None]


def test_answer_extraction_forms() -> None:
    assert last_boxed("x \\boxed{\\frac{a^{2}}{b}} y") == "\\frac{a^{2}}{b}"
    with pytest.raises(UnbalancedBoxError):
        last_boxed("\\boxed{\\frac{1}{2}")
    assert extract_answer("Thus the answer is 42.") == ("42", "answer_is")
    assert extract_answer("Answer: (C)") == ("C", "choice")
    assert extract_answer("We get 3 apples, then 1,250 more") == ("1250 more", "last_number")  # a unit, maybe


def test_bad_ground_truth_missing_answer_and_timeouts_are_named() -> None:
    table = pa.table(
        {
            "answer": ["\\boxed{2}", "no number here", "\\boxed{3", "\\boxed{5}"],
            "ground_truth": ["\\frac{1}{", "4", "3", None],
        }
    )
    out = verify_answer(table, VerifyAnswerConfig())
    assert out.column("drop_reason").to_pylist() == [
        "verify_answer:bad_ground_truth",
        "verify_answer:no_answer",
        "verify_answer:unbalanced_boxed",
        "verify_answer:missing_ground_truth",
    ]


def test_verification_runs_inside_a_worker_thread() -> None:
    """math-verify's SIGALRM timeouts fail outside a main thread; ours run in a child process's main thread."""
    from concurrent.futures import ThreadPoolExecutor

    table = pa.table({"answer": ["\\boxed{\\frac{1}{2}}"], "ground_truth": ["0.5"]})
    with ThreadPoolExecutor(1) as pool:
        out = pool.submit(verify_answer, table, VerifyAnswerConfig()).result()
    assert out.column("verify_status").to_pylist() == ["verified"]


def test_a_verification_that_runs_away_is_a_timeout_even_in_a_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    table = pa.table({"answer": ["\\boxed{2^{2^{2^{2^{2^{10}}}}}}", "\\boxed{4}"], "ground_truth": ["3", "4"]})
    config = VerifyAnswerConfig(timeout_seconds=1)
    with ThreadPoolExecutor(1) as pool:
        out = pool.submit(verify_answer, table, config).result()
    assert out.column("verify_status").to_pylist() == ["timeout", "verified"]
    assert out.column("drop_reason").to_pylist() == ["verify_answer:timeout", None]


def test_chat_messages_field() -> None:
    import json

    chats = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"},
         {"role": "assistant", "content": "<think>add</think> 4"}],
        [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
        "not a chat",
    ]  # fmt: skip
    table = pa.table({"text": ["x"] * 3, "messages": [json.dumps(c) for c in chats]})
    out = cot_format(table, CotFormatConfig(messages_field="messages"))
    assert out.column("drop_reason").to_pylist() == [None, "cot_format:missing_think", "cot_format:missing_think"]
    assert out.column("prompt_text").to_pylist()[0] == "What is 2 + 2?"
