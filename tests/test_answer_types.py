"""Answer verification over every answer type of competition mathematics (``tests/answer_cases.py``, labelled by
hand), through the stages an RL job runs, with decoy answers in every response; and agreement with the reward verl
will compute for the rows of the RL set."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from schemas.stages import CotFormatConfig, RlSetConfig, VerifyAnswerConfig
from stages.cot_format import cot_format
from stages.rl_set import rl_rows
from stages.verify_answer import verify_answer

from .answer_cases import ADVERSARIAL, CASES, Case

ALL = ["verified", "wrong", "unverifiable", "timeout"]

#: Responses in the R1 format, each with a decoy: a boxed answer inside the reasoning, several boxed answers, a
#: boxed answer then a correction. The answer that counts is the last boxed one after </think>.
TEMPLATES = (
    "<think>\nA first attempt gives \\boxed{{{decoy}}}, but that step was wrong; redoing it.\n</think>\n\n"
    "The final answer is $\\boxed{{{answer}}}$.",
    "<think>\nWorking it out step by step.\n</think>\n\nAt first I wrote $\\boxed{{{decoy}}}$. Correction: "
    "the answer is $\\boxed{{{answer}}}$.",
    "<think>\nTwo candidates remain.\n</think>\n\nThe candidates were \\boxed{{{decoy}}} and "
    "\\boxed{{{answer}}}; checking both, the second holds, so the answer is \\boxed{{{answer}}}.",
)


def triples() -> list[tuple[Case, str, bool]]:
    return [(case, a, True) for case in CASES for a in case.same] + [
        (case, a, False) for case in CASES for a in case.different
    ]


def _verdicts(rows: list[tuple[Case, str, bool]], config: VerifyAnswerConfig) -> list[str]:
    responses = []
    for k, (case, answer, same) in enumerate(rows):
        # an equivalent answer hides a different one before it; a different answer hides the ground truth
        decoy = case.different[0] if same else case.truth
        responses.append(TEMPLATES[k % len(TEMPLATES)].format(decoy=decoy, answer=answer))
    table = pa.table(
        {
            "id": [f"q{k}" for k in range(len(rows))],
            "text": [f"Problem {k} ({case.kind})" for k, (case, _, _) in enumerate(rows)],
            "response": responses,
            "ground_truth": [case.truth for case, _, _ in rows],
        }
    )
    table = cot_format(table, CotFormatConfig(prompt_field="text"))
    assert table.column("drop_reason").null_count == len(rows), "every response is a well-formed R1 trace"
    out = verify_answer(table.drop_columns(["drop_reason"]), config)
    return out.column("verify_status").to_pylist()


def test_every_answer_type_verified_and_no_different_answer_accepted(capsys) -> None:
    rows = triples()
    assert len(rows) >= 300 and len({case.kind for case, _, _ in rows}) >= 20
    verdicts = _verdicts(rows, VerifyAnswerConfig(keep=ALL))
    per_kind: dict[str, Counter] = {}
    misses = []
    for (case, answer, same), verdict in zip(rows, verdicts, strict=True):
        counts = per_kind.setdefault(case.kind, Counter())
        counts["same" if same else "different"] += 1
        if (verdict == "verified") == same:
            counts["right"] += 1
        else:
            misses.append((case.kind, case.truth, answer, same, verdict))
    with capsys.disabled():
        print(f"\n{'answer type':<14} {'same':>5} {'diff':>5} {'right':>6}")
        for kind, counts in per_kind.items():
            print(f"{kind:<14} {counts['same']:>5} {counts['different']:>5} {counts['right']:>6}")
    assert not misses, misses


def test_pairs_written_to_fool_the_verifier() -> None:
    """An attacker's pairs: operators dropped by the string fallback, digits read as sums, units in every
    spelling, sets against tuples, intervals closed at infinity, percent signs (``tests/answer_cases.py``)."""
    table = pa.table({"answer": [f"\\boxed{{{a}}}" for _, a, _ in ADVERSARIAL],
                      "ground_truth": [t for t, _, _ in ADVERSARIAL]})  # fmt: skip
    out = verify_answer(table, VerifyAnswerConfig(keep=ALL))
    verdicts = out.column("verify_status").to_pylist(), out.column("verify_detail").to_pylist()
    got = zip(ADVERSARIAL, *verdicts, strict=True)
    misses = [(t, a, same, status, detail) for (t, a, same), status, detail in got if (status == "verified") != same]
    assert not misses, misses


def test_an_empty_or_nested_box_is_no_answer_to_verify() -> None:
    table = pa.table(
        {
            "answer": ["\\boxed{5 \\text{ or } \\boxed{6}}", "\\boxed{}", "\\boxed{ }", "\\boxed{\\boxed{6}}"],
            "ground_truth": ["6", "\\{\\}", "\\{ \\}", "6"],
        }
    )
    out = verify_answer(table, VerifyAnswerConfig(keep=ALL))
    assert out.column("extracted_answer").to_pylist()[0] == "5 \\text{ or } \\boxed{6}", "the outer box is the answer"
    assert out.column("verify_status").to_pylist() == ["unverifiable"] * 4
    assert out.column("verify_detail").to_pylist() == ["nested_boxed", "no_answer", "no_answer", "nested_boxed"]


def test_degrees_as_radians_is_a_policy() -> None:
    rows = [(case, a, same) for case, a, same in triples() if case.kind == "degrees"]
    radians = VerifyAnswerConfig(keep=ALL, degrees="radians")
    verdicts = dict(zip(((c.truth, a) for c, a, _ in rows), _verdicts(rows, radians), strict=True))
    assert verdicts[("60^\\circ", "\\frac{\\pi}{3}")] == "verified"
    assert verdicts[("90^\\circ", "\\frac{\\pi}{2}")] == "verified"
    assert verdicts[("60^\\circ", "60")] == "verified", "a bare number is still degrees"
    assert verdicts[("60^\\circ", "30^\\circ")] == verdicts[("90^\\circ", "180^\\circ")] == "wrong"


def test_only_an_unparseable_ground_truth_is_bad() -> None:
    table = pa.table(
        {
            "answer": ["\\boxed{(0,1]}", "\\boxed{1}", "\\boxed{[2,3)}", "\\boxed{2}"],
            "ground_truth": ["(0, 1]", "\\frac{1}{", "[2, 3)", "\\sqrt{"],
        }
    )
    out = verify_answer(table, VerifyAnswerConfig(keep=ALL))
    assert out.column("verify_status").to_pylist() == ["verified", "unverifiable", "verified", "unverifiable"]
    assert out.column("verify_detail").to_pylist()[1] == out.column("verify_detail").to_pylist()[3]
    assert out.column("verify_detail").to_pylist()[1] == "bad_ground_truth"


def test_the_trainer_rewards_every_rl_row_right() -> None:
    """verl's rule-based reward, for the data_source each row is routed to, gives 1.0 to a response stating the
    ground truth in the R1 format and nothing (0.0, or math_dapo's -1.0) to every labelled different answer."""
    from verl.utils.reward_score import default_compute_score

    table = pa.table(
        {
            "id": [f"q{k}" for k in range(len(CASES))],
            "text": [f"Problem {k}" for k in range(len(CASES))],
            "source": ["labelled"] * len(CASES),
            "line": list(range(1, len(CASES) + 1)),
            "ground_truth": [case.truth for case in CASES],
        }
    )
    rows = rl_rows(table, RlSetConfig()).to_pylist()
    routed = Counter(row["data_source"] for row in rows)
    assert routed["lighteval/MATH"] > 0 and routed["math_dapo"] == sum(case.kind == "units" for case in CASES)

    def reward(row: dict, answer: str) -> float:
        response = f"<think>\nworking\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."
        score = default_compute_score(row["data_source"], response, row["reward_model"]["ground_truth"])
        return score["score"] if isinstance(score, dict) else score

    wrong = []
    for row, case in zip(rows, CASES, strict=True):
        if reward(row, case.truth) != 1.0:
            wrong.append((row["data_source"], case.truth, "truth"))
        wrong += [(row["data_source"], case.truth, d) for d in case.different if reward(row, d) > 0]
    assert not wrong, wrong


@pytest.mark.parametrize("truth", ["5\\text{ cm}", "12 meters", "7\\,\\mathrm{kg}"])
def test_a_ground_truth_with_a_unit_goes_to_a_reward_that_keeps_units(truth: str) -> None:
    table = pa.table({"id": ["a"], "text": ["p"], "source": ["s"], "line": [1], "ground_truth": [truth]})
    assert rl_rows(table, RlSetConfig()).column("data_source").to_pylist() == ["math_dapo"]
    assert rl_rows(table, RlSetConfig(units_data_source=None)).column("data_source").to_pylist() == ["lighteval/MATH"]


@pytest.mark.parametrize(
    ("answer", "truth", "status"),
    [
        ("\\frac{3}{4}", "4", "wrong"),  # an r1_zero <answer> holding a bare expression is the expression
        ("\\frac{3}{4}", "\\frac{3}{4}", "verified"),
        ("x^2+1", "x^2+1", "verified"),
        ("(1,2)", "(1,2)", "verified"),
        ("Thus x = - 3", "3", "wrong"),  # the right side of a last "=", its sign kept
        ("x = 10^5", "5", "wrong"),
        ("\\boxed {x+1}", "1", "wrong"),  # a space before the box's brace
        ("We need to answer a.", "A", "unverifiable"),  # a choice is a capital letter standing alone
        ("A. We compute 3+4 = 7", "A", "wrong"),
        ("Answer: (C)", "C", "verified"),
        ("5 meters", "5\\text{ cm}", "wrong"),  # the last number keeps the word after it
        ("The mass is 5 grams", "5\\text{ kg}", "wrong"),
        ("It comes to 5 million", "5", "wrong"),
        ("It comes to 5 million", "5000000", "verified"),
        ("Thus x != 5", "5", "unverifiable"),  # a relation is not a value
        ("Hence x <= 5", "5", "unverifiable"),
        ("Values are 1-5", "-5", "wrong"),  # a dash after a number is not a sign
        ("\\boxed{5" + " " * 4990 + "x}", "5", "unverifiable"),  # too long to judge
    ],
)
def test_extraction_without_a_box(answer: str, truth: str, status: str) -> None:
    out = verify_answer(pa.table({"answer": [answer], "ground_truth": [truth]}), VerifyAnswerConfig(keep=ALL))
    assert out.column("verify_status").to_pylist() == [status], out.to_pylist()
