"""Math answers: extraction (last ``\\boxed{}``) and equivalence (math-verify), safe to call from any thread.

math-verify bounds its own work with SIGALRM, which works only in the main thread; elsewhere we turn its
timeouts off and bound the call ourselves (a daemon thread we stop waiting for).
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache

log = logging.getLogger(__name__)

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_answer(text: str | None) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces allowed), or ``None`` when there is none. In a reasoning
    model's text (R1-Distill, QwQ) only the answer after the last ``</think>`` counts: a value boxed while thinking
    is not the answer given."""
    if not text:
        return None
    text = text.rsplit("</think>", 1)[-1]
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None


def _normalise(answer: str) -> str:
    s = re.sub(r"\\[,!;: ]|\s+|\$", "", answer)
    s = re.sub(r"\\(?:text|mathrm)\{([^}]*)\}", r"\1", s)
    return s.rstrip(".")


def is_equivalent(pred: str | None, gold: str | None, timeout_s: float = 5.0) -> bool:
    """Whether ``pred`` is mathematically the same answer as ``gold`` (strings as found inside ``\\boxed{}``)."""
    if pred is None or gold is None:
        return False
    pred, gold = str(pred).strip(), str(gold).strip()
    if not pred:
        return False
    if _normalise(pred) == _normalise(gold):
        return True
    return _verify(pred, gold, timeout_s)


@lru_cache(maxsize=65536)
def _verify(pred: str, gold: str, timeout_s: float) -> bool:
    if threading.current_thread() is threading.main_thread():
        return _math_verify(pred, gold, timeout_s)
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(_math_verify(pred, gold, None)), daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not result:
        log.warning(
            "math-verify gave no verdict within %.1fs for %r vs %r; counted as not equivalent", timeout_s, pred, gold
        )
        return False
    return result[0]


def _math_verify(pred: str, gold: str, timeout_s: float | None) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    seconds = None if timeout_s is None else max(1, int(round(timeout_s)))
    try:
        gold_parsed = parse(f"\\boxed{{{gold}}}", extraction_config=config, parsing_timeout=seconds)
        pred_parsed = parse(f"\\boxed{{{pred}}}", extraction_config=config, parsing_timeout=seconds)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=seconds))
    except Exception as e:  # math-verify raises on pathological input; a wrong answer, not a crash
        log.debug("math-verify failed on %r vs %r: %s", pred, gold, e)
        return False
