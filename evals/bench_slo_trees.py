"""AdaServe's SLO trees inside one verification batch (``python -m evals.bench_slo_trees``): the same toy problems
decoded twice in one batch, one copy as tight rows (a TPOT no step can meet, so they always need their whole
candidate tree) and one as loose rows (no SLO), by the toy pair with a fixed DySpec tree and with
``token_speculation.slo_trees``. Per class: tokens emitted per verification step (load-independent), TPOT (the
row's seconds from the start of the call to its end over its tokens; on a loaded machine compare within a run),
and the draft tokens verified per step. Plain decoding is the baseline row."""

from __future__ import annotations

import argparse
import time

import torch

from reasoner.backends import SamplingParams, load_lm
from reasoner.backends.speculative import build_drafter
from reasoner.core.stats import RoleStats
from reasoner.toy import generate_problems

TREE = {"method": "draft_model", "draft": "toy:draft", "tree": "dynamic"}


def decode(lm, prompts: list[list[int]], tpot_ms: tuple, max_tokens: int) -> list[dict]:
    """Each row's tokens, verification steps and seconds until it finished."""
    params = SamplingParams(max_tokens=max_tokens, tpot_ms=tpot_ms)
    counters = lm.stats.counters
    before = counters.get("token_spec.verify_forwards", 0), counters.get("token_spec.drafted_tokens", 0)
    rows: list[dict] = [{} for _ in prompts]
    start = time.perf_counter()
    if lm.drafter is None:  # plain decoding: one forward a token, every row alike
        out = lm.generate(prompts, params)
        seconds = time.perf_counter() - start
        return [{"tokens": len(g[0].token_ids), "steps": len(g[0].token_ids), "seconds": seconds} for g in out]
    with lm._account() as call:
        for slot, gen in lm._speculative_chunk(prompts, params, call, [RoleStats() for _ in prompts], lm.drafter):
            steps = counters.get("token_spec.verify_forwards", 0) - before[0]
            rows[slot] = {"tokens": len(gen.token_ids), "steps": steps, "seconds": time.perf_counter() - start}
    rows[0]["drafted"] = counters.get("token_spec.drafted_tokens", 0) - before[1]
    rows[0]["all_steps"] = counters.get("token_spec.verify_forwards", 0) - before[0]
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", type=int, default=4, help="toy problems; each is a tight and a loose row (4)")
    p.add_argument("--nodes", type=int, default=16, help="the fixed tree's nodes, the SLO trees' candidates (16)")
    p.add_argument("--depth", type=int, default=8, help="the trees' depth bound, num_tokens (8)")
    p.add_argument("--budgets", default="8,4", help="slo_budget values to run, comma-separated (8,4)")
    p.add_argument("--max-tokens", type=int, default=96)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from prompts import load

    lm = load_lm("transformers", "toy:target", "target", seed=0)
    template = load("toy")
    questions = [q.question for q in generate_problems(args.problems, seed=11)]
    prompts = [lm.encode(template.prompt(lm.tokenizer, q)) for q in questions] * 2
    k = args.problems
    tpot = tuple([0.001] * k + [None] * k)  # tight rows first, then the same problems loose
    tree = {**TREE, "nodes": args.nodes, "num_tokens": args.depth}
    runs = {"plain": None, f"fixed tree, {args.nodes} nodes": tree}
    for b in args.budgets.split(","):
        runs[f"slo_trees, budget {b}/row"] = {**tree, "slo_trees": True, "slo_budget": int(b)}
    lines = [
        "| run | class | tokens / step | TPOT (ms) | draft tokens verified / step (batch) |",
        "|---|---|---|---|---|",
    ]
    for name, config in runs.items():
        lm.drafter = build_drafter(config, lm) if config else None
        decode(lm, prompts[:2], tpot[:1] + tpot[-1:], 8)  # warm-up (and the SLO trees' first measured steps)
        rows = decode(lm, prompts, tpot, args.max_tokens)
        per_step = (rows[0].get("drafted", 0) / rows[0]["all_steps"]) if config else 0.0
        for cls, mine in (("tight", rows[:k]), ("loose", rows[k:])):
            tokens = sum(r["tokens"] for r in mine)
            steps = sum(r["steps"] for r in mine)
            tpot_ms = 1000 * sum(r["seconds"] for r in mine) / tokens
            lines.append(f"| {name} | {cls} | {tokens / steps:.2f} | {tpot_ms:.1f} | {per_step:.1f} |")
        print(lines[-2] + "\n" + lines[-1], flush=True)
    lm.drafter = None
    print("\n".join(lines))


if __name__ == "__main__":
    main()
