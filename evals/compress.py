"""The A*-Thought compression job (``reasoner compress``): read finished traces, compress them with
``search.astar_thought.AStarThought`` and write the compressed traces and a summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm.auto import tqdm

import prompts
from reasoner.backends import load_lm
from search.astar_thought import AStarThought, CompressConfig, Compressed, Trace, split_trace
from verifiers.math import is_equivalent

log = logging.getLogger(__name__)


def read_traces(path: str | Path, delimiter: str = "\n\n", limit: int | None = None) -> tuple[list[Trace], list[dict]]:
    """Traces from a JSONL file: the ``results.jsonl`` of ``reasoner eval`` (problem, reference, answer and the
    chosen trajectory's ``steps``) or plain lines ``{"problem", "steps" | "text", "answer"?, "reference"?}``.
    ``answer`` is the trace's own answer (used when the trace has no ``\\boxed{}``); the gold answer is
    ``reference`` (or ``gold``). Returns the traces and the skipped lines (no final answer: nothing to keep; or a
    result row with an ``error``: a problem eval could not attempt)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"trace file {path} not found: give the results.jsonl of `reasoner eval --out DIR` or a JSONL of "
            '{"problem", "steps" or "text", "answer"} lines'
        )
    fix = 'each line needs "problem" and "steps" (a list of strings or of {"text"}) or "text"'
    traces, skipped = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(traces) + len(skipped) >= limit:
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n} is not valid JSON ({e.msg}): fix or remove that line") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {n} is a JSON {type(row).__name__}, not an object: {fix}")
            if row.get("error"):  # a problem eval could not attempt (e.g. its prompt was too long): no trace
                skipped.append({"line": n, "id": row.get("id"), "reason": str(row["error"])})
                continue
            problem = row.get("problem")
            if not isinstance(problem, str) or not problem.strip():
                raise ValueError(f'{path} line {n} has no "problem" text: {fix}')
            steps = _steps_of(row, delimiter)
            if steps is None:
                raise ValueError(f'{path} line {n} has neither "steps" nor "text": {fix}')
            if not steps:
                raise ValueError(
                    f"{path} line {n} is an empty trace (no steps, no text): compress only finished traces; remove "
                    "that line"
                )
            thought, solution, answer = split_trace(steps, _str(row.get("answer")), delimiter)
            if answer is None:
                skipped.append({"line": n, "id": row.get("id"), "reason": "no final answer"})
                continue
            reference = _str(row.get("reference", row.get("gold")))
            traces.append(Trace(problem, thought, solution, answer, reference, _str(row.get("id")) or f"line-{n}", n))
    if not traces and not skipped:
        raise ValueError(f"trace file {path} has no traces: {fix}")
    return traces, skipped


def _steps_of(row: dict, delimiter: str) -> list[str] | None:
    steps = row.get("steps")
    if isinstance(steps, list):
        out = [s.get("text", "") if isinstance(s, dict) else str(s) for s in steps]
        return [s for s in out if s.strip()]
    text = row.get("text")
    if isinstance(text, str):
        return [s for s in text.split(delimiter) if s.strip()]
    return None


def _str(value) -> str | None:
    return None if value is None else str(value)


def summarize(results: list[Compressed], skipped: list[dict] | None = None) -> dict:
    """Mean tokens before/after, their ratio, and how often answers still hold (trace's answer, gold answer)."""
    n = len(results)
    mean = lambda xs: round(sum(xs) / len(xs), 2) if xs else 0.0
    before, after = mean([r.tokens_before for r in results]), mean([r.tokens_after for r in results])
    t_before, t_after = (
        mean([r.thought_tokens_before for r in results]),
        mean([r.thought_tokens_after for r in results]),
    )
    gold = [r for r in results if r.correct is not None]
    reasons: dict[str, int] = {}
    for r in results:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    return {
        "n": n,
        "skipped": len(skipped or []),
        "compressed": sum(r.validated and len(r.kept) < len(r.trace.steps) for r in results),
        "tokens_before": before,
        "tokens_after": after,
        "ratio": round(after / before, 4) if before else 1.0,
        "thought_tokens_before": t_before,
        "thought_tokens_after": t_after,
        "thought_ratio": round(t_after / t_before, 4) if t_before else 1.0,
        "steps_before": mean([len(r.trace.steps) for r in results]),
        "steps_after": mean([len(r.kept) for r in results]),
        "answer_holds": round(sum(r.answer_holds for r in results) / n, 4) if n else 0.0,
        "gold_correct_before": round(sum(_gold(r.trace) for r in gold) / len(gold), 4) if gold else None,
        "gold_correct_after": round(sum(bool(r.correct) for r in gold) / len(gold), 4) if gold else None,
        "iterations": mean([r.iterations for r in results]),
        "reasons": reasons,
    }


def _gold(trace: Trace) -> bool:
    return is_equivalent(trace.answer, trace.reference)


def compress_file(
    path: str | Path,
    out: str | Path,
    compressor: AStarThought,
    limit: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """Compress the traces in ``path`` into ``out`` (JSONL, one line per trace, in input order); the summary is
    returned and written next to it (``<out>.summary.json``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    delimiter = compressor.template.step_delimiter
    traces, skipped = read_traces(path, delimiter, limit)
    for s in skipped:
        log.warning('%s line %d has no final answer (no \\boxed{} and no "answer"); skipped', path, s["line"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[Compressed] = []
    bar = tqdm(total=len(traces), desc="compress", unit="trace", disable=not progress, dynamic_ncols=True)
    try:
        with open(out, "w", encoding="utf-8") as f:
            for start in range(0, len(traces), batch_size):
                batch = compressor.compress(traces[start : start + batch_size], progress=bar)
                f.writelines(json.dumps(r.to_dict(delimiter)) + "\n" for r in batch)
                f.flush()
                results += batch
                done = summarize(results)
                bar.set_postfix(ratio=f"{done['ratio']:.2f}", holds=f"{done['answer_holds']:.2f}")
    finally:
        bar.close()
    summary = summarize(results, skipped) | {"input": str(path), "out": str(out)}
    roles = {**compressor.scorer.stats.roles, **compressor.validator.stats.roles}
    summary["cost"] = {
        k: {
            "prefill_tokens": r.prefill_tokens,
            "generated_tokens": r.generated_tokens,
            "forward_passes": r.forward_passes,
        }
        for k, r in sorted(roles.items())
    }
    summary_path = out.with_name(out.name.removesuffix(".jsonl") + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    summary["summary_path"] = str(summary_path)
    return summary


def from_recipe(
    recipe,
    config: CompressConfig | None = None,
    validator: str | None = None,
    scorer: str | None = None,
    prompt: str | None = None,
) -> AStarThought:
    """An ``AStarThought`` from a recipe: the validator is the recipe's policy model (``validator``: another
    path, transformers backend), the scorer the same weights through transformers (``scorer``: another path),
    the template the recipe's prompt (``prompt``: another)."""
    spec = getattr(recipe.models, recipe.search.policy)
    if validator:
        spec = spec.model_copy(
            update={"path": validator, "gguf_file": None, "backend": "transformers", "engine_args": {}, "base_url": []}
        )
    options = {"dtype": spec.dtype, "device": spec.device, "max_batch_size": spec.max_batch_size}
    lm = load_lm(
        spec.backend,
        spec.path,
        "validator",
        seed=recipe.seed,
        gguf_file=spec.gguf_file,
        **options,
        **spec.backend_options(),
    )
    if scorer is None and spec.backend == "transformers":
        score_lm = lm
    else:
        gguf = None if scorer else spec.gguf_file
        score_lm = load_lm("transformers", scorer or spec.path, "scorer", seed=recipe.seed, gguf_file=gguf, **options)
    return AStarThought(lm, prompts.load(prompt or recipe.prompt), config, scorer=score_lm)
