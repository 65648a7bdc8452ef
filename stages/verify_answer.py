"""The verify_answer stage: extract each final answer and compare it with the ground truth.

Mathematics goes through math-verify (symbolic equivalence: ``\\frac{1}{2}`` equals ``0.5``); other answers by
normalised string match. math-verify bounds its work with SIGALRM, which only works in a process's main thread
and so not in a Dask worker's task threads. Here each batch is verified in a child process, in its main thread,
where those alarms work; the parent also bounds the whole batch and, if the child hangs, kills it and counts the
unfinished items as ``timeout``.
"""

from __future__ import annotations

import atexit
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import pyarrow as pa

from schemas.document import DROP_REASON
from schemas.stages import VerifyAnswerConfig
from stages.answers import UnbalancedBoxError, extract_answer, looks_like_math, normalize

DROP_NAMES = {"wrong": "wrong", "unverifiable": "unverifiable", "timeout": "timeout"}
_pool: ProcessPoolExecutor | None = None


def _executor() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        atexit.register(_pool.shutdown, wait=False, cancel_futures=True)
    return _pool


def _reset_executor() -> None:
    global _pool
    if _pool is not None:
        for process in list(getattr(_pool, "_processes", {}).values()):
            process.kill()
        _pool.shutdown(wait=False, cancel_futures=True)
    _pool = None


def judge(answer: str, truth: str, timeout: int) -> tuple[str, str]:
    """``(status, detail)`` for one pair; runs in the child process's main thread."""
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    if truth.count("{") != truth.count("}") or truth.count("(") != truth.count(")"):
        return "unverifiable", "bad_ground_truth"
    try:
        gold = parse(f"${truth}$", parsing_timeout=timeout, raise_on_error=True) if looks_like_math(truth) else []
        if looks_like_math(truth) and not gold:
            return "unverifiable", "bad_ground_truth"
        if gold:
            target = parse(f"${answer}$", parsing_timeout=timeout, raise_on_error=True)
            if target and verify(gold, target, timeout_seconds=timeout, raise_on_error=True):
                return "verified", "math"
            if not target:
                return ("verified", "string") if normalize(answer) == normalize(truth) else ("wrong", "string")
            return "wrong", "math"
    except TimeoutException:
        return "timeout", "timeout"
    except Exception as error:  # a sympy failure on one pair is that pair's verdict, not the batch's
        return "unverifiable", f"math_error:{type(error).__name__}"
    return ("verified", "string") if normalize(answer) == normalize(truth) else ("wrong", "string")


def judge_batch(pairs: list[tuple[str, str]], timeout: int) -> list[tuple[str, str]]:
    return [judge(answer, truth, timeout) for answer, truth in pairs]


def verify_pairs(pairs: list[tuple[str, str]], timeout: int) -> list[tuple[str, str]]:
    if not pairs:
        return []
    future = _executor().submit(judge_batch, pairs, timeout)
    try:
        return future.result(timeout=len(pairs) * 3 * timeout + 60)
    except FutureTimeout:
        _reset_executor()
        return [("timeout", "batch_timeout")] * len(pairs)


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
        if extracted[i] is None:
            detail[i] = "no_answer"
            continue
        pending.append(i)
    for i, (verdict, why) in zip(
        pending, verify_pairs([(extracted[i], str(truths[i])) for i in pending], config.timeout_seconds), strict=True
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
