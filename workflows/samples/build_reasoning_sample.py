"""Rebuild ``workflows/samples/reasoning/qa.jsonl``: problems and ground truths generated offline by reasoning-gym
(Apache-2.0: gsm_symbolic, basic_arithmetic, simple_equations, fraction_simplification), with responses written
here in DeepSeek-R1's format: correct ones, wrong ones, equivalent forms, and malformed traces.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import reasoning_gym

OUT = Path(__file__).parent / "reasoning" / "qa.jsonl"


def equivalent(answer: str) -> str:
    numbers = re.findall(r"-?\d+", answer)
    if ("/" in answer or "frac" in answer) and len(numbers) == 2:
        return f"{numbers[0]}/{numbers[1]}" if "frac" in answer else f"\\frac{{{numbers[0]}}}{{{numbers[1]}}}"
    return answer


def wrong(answer: str) -> str:
    numbers = re.findall(r"-?\d+", answer)
    if ("/" in answer or "frac" in answer) and len(numbers) == 2:
        return f"{int(numbers[0]) + 1}/{numbers[1]}"
    return str(int(float(answer)) + 1)


def main() -> None:
    rows = []
    for task in ("gsm_symbolic", "basic_arithmetic", "simple_equations", "fraction_simplification"):
        for i, entry in enumerate(reasoning_gym.create_dataset(task, size=10, seed=11)):
            q, a = entry["question"], entry["answer"]
            think = "<think>\nI will work through the problem step by step and check the result.\n</think>\n\n"
            kind = ("correct", "equivalent", "wrong", "correct", "malformed")[i % 5]
            if kind == "correct":
                response = f"{think}The answer is \\boxed{{{a}}}."
            elif kind == "equivalent":
                response = f"{think}So the final answer is {equivalent(a)}."
            elif kind == "wrong":
                response = f"{think}The answer is \\boxed{{{wrong(a)}}}."
            else:
                response = ("<think>\nI started but the trace was cut", "<think>a</think><think>b</think> 1",
                            f"{think}The answer is \\boxed{{{a}")[i % 3]  # fmt: skip
            rows.append({"id": f"{task}-{i}", "prompt": q, "response": response, "ground_truth": a, "kind": kind})
    # a duplicated prompt, a whitespace-only response, a ground truth that does not parse
    rows.append({**rows[0], "id": "duplicate-prompt"})
    rows.append({"id": "blank-response", "prompt": "What is 2 + 2?", "response": "   ", "ground_truth": "4"})
    half = "<think>\nhalf\n</think>\n\n\\boxed{0.5}"
    rows.append({"id": "bad-truth", "prompt": "What is half of one?", "response": half, "ground_truth": "\\frac{1}{"})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


if __name__ == "__main__":
    main()
