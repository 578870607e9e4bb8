"""``python -m evals.fit_stand``: STAND's tree shape, fitted offline as the paper does (Song et al. 2025).

Best-of-N on toy problems (N rows of a problem decoded together, sharing the problem's n-gram pool) with the pool
drafting a wide exploratory tree; every verification says, per depth and rank, which children were tried (their
parent accepted, the ranks before them rejected) and which one was accepted. ``fit_shape`` turns these counts
into the ``--nodes`` slots most likely to be accepted. Writes JSON: the shape, the counts and the setup; the
shipped ``toy`` shape (``reasoner/toy/models/stand_shape.json``) is this command's output with its defaults.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import prompts as templates
from reasoner.backends import SamplingParams, load_lm
from reasoner.specdec.drafters.ngram_pool import NgramPool, fit_shape
from reasoner.specdec.drafters.recycling import rank_template
from reasoner.toy import generate_problems

from .args import count

SHIPPED = Path(__file__).parent.parent / "reasoner" / "toy" / "models" / "stand_shape.json"


def counts(verdicts, depth: int, top_k: int, accepted: list[list[float]], tried: list[list[float]]) -> None:
    """Add one forward's verdicts to the per-(depth, rank) counts of children tried and accepted."""
    for v in verdicts:
        kids, levels = v.tree.children(), v.tree.depths()
        chain = [-1] + list(v.path)
        for i, node in enumerate(chain):
            children = kids[node + 1]
            d = (levels[node] if node >= 0 else 0) if children else None
            if d is None or d >= depth:
                continue
            chosen = chain[i + 1] if i + 1 < len(chain) else None
            for rank, child in enumerate(children[:top_k]):
                tried[d][rank] += 1
                if child == chosen:
                    accepted[d][rank] += 1
                    break


def fit(
    problems: int = 12,
    n: int = 8,
    temperature: float = 0.7,
    nodes: int = 24,
    depth: int = 6,
    top_k: int = 4,
    max_tokens: int = 200,
    seed: int = 7,
) -> dict:
    import torch

    torch.set_num_threads(1)
    lm = load_lm("transformers", "toy:target", "target", seed=seed)
    template = templates.load("toy")
    wide = rank_template(4 * nodes, top_k, depth)  # exploratory: many more slots than the fitted tree keeps
    drafter = NgramPool(num_tokens=depth, nodes=len(wide), top_k=top_k, shape=wide, seed=seed)
    accepted = [[0.0] * top_k for _ in range(depth)]
    tried = [[0.0] * top_k for _ in range(depth)]
    update = drafter.update

    def counted(seqs, verdicts):
        counts(verdicts, depth, top_k, accepted, tried)
        return update(seqs, verdicts)

    drafter.update = counted
    lm.drafter = drafter
    for i, p in enumerate(generate_problems(problems, seed=seed)):
        prompt = template.prompt(lm.tokenizer, p.question)
        lm.generate([prompt], SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed + i))
    return {
        "shape": fit_shape(accepted, tried, nodes),
        "accepted": accepted,
        "tried": tried,
        "setup": {
            "model": "toy:target",
            "problems": problems,
            "n": n,
            "temperature": temperature,
            "nodes": nodes,
            "depth": depth,
            "top_k": top_k,
            "max_tokens": max_tokens,
            "seed": seed,
        },
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m evals.fit_stand", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(SHIPPED), help="the shape file to write (default: the shipped toy shape)")
    p.add_argument("--problems", type=count(1, 100_000), default=12, help="toy problems decoded (default 12)")
    p.add_argument("--n", type=count(1, 256), default=8, help="trajectories per problem (default 8)")
    p.add_argument("--nodes", type=count(1, 256), default=24, help="slots in the fitted shape (default 24)")
    p.add_argument("--depth", type=count(1, 64), default=6, help="deepest slot (default 6)")
    p.add_argument("--top-k", type=count(1, 32), default=4, help="most children per slot (default 4)")
    p.add_argument("--max-tokens", type=count(1, 131072), default=200, help="tokens per trajectory (default 200)")
    args = p.parse_args(argv)
    result = fit(args.problems, args.n, 0.7, args.nodes, args.depth, args.top_k, args.max_tokens)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}: {len(result['shape'])} slots")


if __name__ == "__main__":
    main()
