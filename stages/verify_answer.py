"""The verify_answer stage: extract each final answer and compare it with the ground truth.

Mathematics goes through math-verify (symbolic equivalence: ``\\frac{1}{2}`` equals ``0.5``); other answers by
normalised string match. math-verify bounds its work with SIGALRM, which only works in a process's main thread,
not in a Dask worker's task threads; and Dask's worker processes are daemons, which may not start
multiprocessing children. So each worker keeps one helper started with ``subprocess`` (``serve`` below), which
judges one pair at a time in its main thread, where math-verify's alarms work; the worker also waits for each
verdict with a deadline and, should the helper hang, kills it, counts the pair as ``timeout`` and starts anew.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys

import numpy as np
import pyarrow as pa

from schemas.document import DROP_REASON
from schemas.stages import VerifyAnswerConfig
from stages.answer_units import unexplained_word, units_differ, without_unit
from stages.answers import (
    DEGREES,
    MAX_ANSWER_CHARS,
    PERCENT,
    UnbalancedBoxError,
    canonical,
    closed_at_infinity,
    extract_answer,
    in_radians,
    looks_like_math,
    normalize,
    parse_dropped_tail,
    percent_twice,
    spaced_digits,
    structures_differ,
    without_percent,
)

_helper: subprocess.Popen | None = None
#: What math-verify lets pass that a grader would not; each makes a pair wrong before math-verify is asked.
CHECKS = ((units_differ, "units"), (structures_differ, "set_or_tuple"),
          (closed_at_infinity, "interval_closed_at_infinity"), (percent_twice, "percent_twice"),
          (unexplained_word, "unexplained_words"))  # fmt: skip


def _start_helper() -> subprocess.Popen:
    global _helper
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    _helper = subprocess.Popen(
        [sys.executable, "-c", "from stages.verify_answer import serve; serve()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env,
    )  # fmt: skip
    atexit.register(_helper.kill)
    return _helper


def _kill_helper() -> None:
    global _helper
    if _helper is not None:
        _helper.kill()
        _helper.wait()
    _helper = None


def serve() -> None:
    """The helper's loop: one JSON pair per line in, one JSON verdict per line out."""
    for line in sys.stdin:
        request = json.loads(line)
        verdict = judge(request["answer"], request["truth"], request["timeout"], request.get("degrees", "strict"))
        print(json.dumps(verdict), flush=True)


def judge(answer: str, truth: str, timeout: int, degrees: str = "strict") -> tuple[str, str]:
    """``(status, detail)`` for one pair; runs in the child process's main thread. ``degrees``: "strict" (60° is
    60, not π/3) or "radians" (60° also equals π/3). Before math-verify, the checks it lacks: units that differ,
    a set against a tuple or interval, an interval closed at infinity, digits left apart by spaces."""
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    if truth.count("{") != truth.count("}"):  # brackets may be unbalanced on purpose: (0, 1] is an interval
        return "unverifiable", "bad_ground_truth"
    if len(answer) > MAX_ANSWER_CHARS:
        return "unverifiable", "answer_too_long"
    answer, truth = canonical(answer), canonical(truth)
    for check, why in CHECKS:
        if check(answer, truth):
            return "wrong", why
    answer, truth = without_unit(answer), without_unit(truth)  # the units agree, or one side names none
    try:
        gold = parse(f"${truth}$", parsing_timeout=timeout, raise_on_error=True) if looks_like_math(truth) else []
        if looks_like_math(truth) and (not gold or parse_dropped_tail(truth, str(gold[-1]))):
            return "unverifiable", "bad_ground_truth"
        if not gold:
            return ("verified", "string") if normalize(answer) == normalize(truth) else ("wrong", "string")
        target = parse(f"${answer}$", parsing_timeout=timeout, raise_on_error=True)
        if not target:
            return ("verified", "string") if normalize(answer) == normalize(truth) else ("wrong", "string")
        if spaced_digits(answer):
            return "wrong", "spaced_digits"
        if parse_dropped_tail(answer, str(target[-1])):
            return "wrong", "dropped_by_parser"
        if verify(gold, target, timeout_seconds=timeout, raise_on_error=True):
            return "verified", "math"
        return _verify_rewritten(answer, truth, timeout, degrees)
    except TimeoutException:
        return "timeout", "timeout"
    except Exception as error:  # a sympy failure on one pair is that pair's verdict, not the batch's
        return "unverifiable", f"math_error:{type(error).__name__}"


def _verify_rewritten(answer: str, truth: str, timeout: int, degrees: str) -> tuple[str, str]:
    """The policies: a percentage's number stands for it (truth 12.5\\%, answer 12.5; an answer with its own
    % is judged as written, so 0.25\\% is not 0.25), and with ``degrees="radians"`` 60^\\circ is also π/3."""
    from math_verify import parse, verify

    rewrites = []
    if PERCENT.search(truth) and not PERCENT.search(answer):
        rewrites.append((without_percent(truth), answer))
    if degrees == "radians" and DEGREES.search(answer + truth):
        rewrites.append((in_radians(truth), in_radians(answer)))
    for new_truth, new_answer in rewrites:
        gold = parse(f"${new_truth}$", parsing_timeout=timeout)
        target = parse(f"${new_answer}$", parsing_timeout=timeout)
        if gold and target and verify(gold, target, timeout_seconds=timeout, raise_on_error=True):
            return "verified", "math"
    return "wrong", "math"


def verify_pairs(pairs: list[tuple[str, str]], timeout: int, degrees: str = "strict") -> list[tuple[str, str]]:
    """Verdicts from the helper process, each awaited at most ``3 x timeout + 10`` seconds."""
    results: list[tuple[str, str]] = []
    for answer, truth in pairs:
        helper = _helper if _helper is not None and _helper.poll() is None else _start_helper()
        request = {"answer": answer, "truth": truth, "timeout": timeout, "degrees": degrees}
        helper.stdin.write(json.dumps(request) + "\n")
        helper.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(helper.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=3 * timeout + 10)
        line = helper.stdout.readline() if ready else ""
        if not line:
            _kill_helper()
            results.append(("timeout", "helper_timeout"))
            continue
        status, detail = json.loads(line)
        results.append((status, detail))
    return results


def verify_answer(table: pa.Table, config: VerifyAnswerConfig) -> pa.Table:
    answers = table.column("answer").to_pylist() if "answer" in table.column_names else table.column("text").to_pylist()
    truths = table.column(config.ground_truth_field).to_pylist()
    n = len(answers)
    status = np.full(n, "unverifiable", dtype=object)
    detail = np.full(n, "", dtype=object)
    extracted: list[str | None] = [None] * n
    method = ["none"] * n
    pending: list[int] = []
    for i, (text, truth) in enumerate(zip(answers, truths, strict=True)):
        if truth is None or not str(truth).strip():
            detail[i] = "missing_ground_truth"
            continue
        try:
            extracted[i], method[i] = extract_answer(text or "")
        except UnbalancedBoxError:
            detail[i] = "unbalanced_boxed"
            continue
        if extracted[i] is None or not extracted[i].strip():
            detail[i] = "no_answer"
            continue
        if "\\boxed" in extracted[i]:  # a box inside the final box hedges between answers
            detail[i] = "nested_boxed"
            continue
        pending.append(i)
    for i, (verdict, why) in zip(
        pending,
        verify_pairs([(extracted[i], str(truths[i])) for i in pending], config.timeout_seconds, config.degrees),
        strict=True,
    ):
        status[i], detail[i] = verdict, why
    drop = np.array([s not in config.keep for s in status])
    reason = [f"verify_answer:{detail[i] if status[i] == 'unverifiable' else status[i]}" if drop[i] else None
              for i in range(n)]  # fmt: skip
    table = table.append_column("extracted_answer", pa.array(extracted, pa.string()))
    table = table.append_column("answer_method", pa.array(method, pa.string()))
    table = table.append_column("verify_status", pa.array(status.tolist(), pa.string()))
    table = table.append_column("verify_detail", pa.array(detail.tolist(), pa.string()))
    return table.append_column(DROP_REASON, pa.array(reason, pa.string()))
