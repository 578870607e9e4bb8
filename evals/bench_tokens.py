"""``reasoner bench tokens``: token-level speculative decoding against plain decoding, side by side in one run.

Batch 1, greedy and temperature 0.7, whole toy solutions: our plain loop; what a transformers user would pick
instead (``generate`` plain, with ``assistant_model=`` the draft, with ``prompt_lookup_num_tokens=``); each of our
drafters. Then best-of-N (N = 8 rows decoded together, T = 0.7) with no speculation, an n-gram pool per
trajectory, and one pool shared by the trajectories. Stateful drafters (pools, tables, suffix caches) start
fresh and are warmed up on other problems before each timed pass, so no pass sees its own problems twice (STAND's
pools are per problem: the warm-up gives them nothing). ``--repeat`` warms them up on the timed problems themselves
instead: a workload of repeated requests, where retrieval (suffix, rasd) finds the earlier outputs.
Each configuration is timed ``--rounds`` times, interleaved, and its fastest pass is kept (the machine is shared).
Writes ``bench.json`` (one row per configuration), ``bench.md`` and ``bench.png``.
``--online-stream N`` runs only Online Speculative Decoding (``online_stream``): the acceptance rate of the draft over a
stream of N toy problems, first 100 vs last 100, with the draft frozen and updated online, on the same stream.
``--pair qwen-coder --data FILE`` runs the real pair instead (Qwen2.5-Coder-1.5B verifying, -0.5B drafting, issue
16) on the GSM8K-style problems of a local JSONL file, with the qwen-math prompt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path

import torch

import prompts as templates
from reasoner.backends import SamplingParams, load_lm, resolve_path
from reasoner.backends.speculative import build_drafter
from reasoner.recipe import SuiteConfig
from reasoner.specdec.config import OnlineDistillation
from reasoner.toy import Difficulty, generate_problems
from verifiers.math import extract_answer

from .args import check_pair_data, count, finite, numbers
from .report import pyplot
from .suites import load_suite

# pair: (target, draft, prompt template); a real pair's problems come from --data
PAIRS = {
    "toy": ("toy:target", "toy:draft", "toy"),
    "qwen-coder": ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct", "qwen-math"),
}

OURS = [
    ("prompt_lookup", {"method": "prompt_lookup", "num_tokens": 8}),
    ("suffix", {"method": "suffix"}),
    ("recycling", {"method": "recycling"}),
    ("goose", {"method": "goose"}),
    ("ngram_pool", {"method": "ngram_pool"}),
    ("draft_model chain k=4", {"method": "draft_model", "draft": "toy:draft", "num_tokens": 4}),
    ("draft_model chain k=8", {"method": "draft_model", "draft": "toy:draft", "num_tokens": 8}),
    (
        "draft_model tree 16",
        {"method": "draft_model", "draft": "toy:draft", "tree": "dynamic", "num_tokens": 8, "nodes": 16},
    ),
    (
        "draft_model tree 16, traversal",
        {
            "method": "draft_model",
            "draft": "toy:draft",
            "tree": "dynamic",
            "num_tokens": 8,
            "nodes": 16,
            "verification": "traversal",
        },
    ),
    # RASD: the draft model's tree fused with suffix-tree retrieval pruned by the draft's confidence
    ("rasd chain k=4", {"method": "rasd", "draft": "toy:draft", "num_tokens": 4}),
    ("rasd tree 16", {"method": "rasd", "draft": "toy:draft", "tree": "dynamic", "num_tokens": 8, "nodes": 16}),
    (
        "draft_model chain k=8, SpecDec++ head",
        {"method": "draft_model", "draft": "toy:draft", "num_tokens": 8, "acceptance_head": "toy"},
    ),
    # SWIFT: the target drafts with half of its middle sublayers skipped (no draft model); the layer set is
    # searched during the warm-up problems
    (
        "swift (self-speculation)",
        {"method": "swift", "skip_ratio": 0.5, "num_tokens": 8, "search_budget": 60, "context_window": 16},
    ),
    ("goose, adaptive", {"method": "goose", "adaptive": True}),
    (
        "draft_model chain k=8, adaptive",
        {"method": "draft_model", "draft": "toy:draft", "num_tokens": 8, "adaptive": True},
    ),
    # a CPU option: the draft's linear layers in int8, the target verifying in float32 (lossless)
    (
        "draft_model chain k=8, int8 draft",
        {"method": "draft_model", "draft": "toy:draft", "num_tokens": 8, "draft_quantize": "int8"},
    ),
    # Judge Decoding (lossy: compare its accuracy): the toy judge reads toy:target's hidden states, so toy pair only
    ("draft_model chain k=8, judge", {"method": "draft_model", "draft": "toy:draft", "num_tokens": 8, "judge": "toy"}),
    (
        "draft_model chain k=8, judge 0.2",
        {"method": "draft_model", "draft": "toy:draft", "num_tokens": 8, "judge": "toy", "judge_threshold": 0.2},
    ),
]
HF = ["hf generate", "hf assisted (draft)", "hf prompt lookup"]


def _prompts(lm, n: int, seed: int, difficulty: str, pair: str = "toy", data: str | None = None) -> list[list[int]]:
    """``n`` prompts: toy problems of ``seed``, or (``data``) the file's problems from the ``seed``-th on."""
    template = templates.load(PAIRS[pair][2])
    if data:
        questions = [p.text for p in load_suite(SuiteConfig(name="gsm8k", data=data))][seed : seed + n]
    else:
        questions = [p.question for p in generate_problems(n, seed=seed, difficulty=Difficulty.parse(difficulty))]
    return [lm.encode(template.prompt(lm.tokenizer, q)) for q in questions]


def _accuracy(lm, outs: list[list[int]], answers: list[int] | None) -> float | None:
    """Fraction of toy solutions ``outs`` whose boxed answer is right (None off the toy pair)."""
    if answers is None:
        return None
    return round(sum(extract_answer(lm.decode(o)) == str(a) for o, a in zip(outs, answers)) / len(answers), 3)


class ForwardCounter:
    """Counts a model's forward calls (for transformers' own generate, which has no Stats)."""

    def __init__(self, model):
        self.calls = 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def _ours(lm, prompts, temperature, max_tokens, seed):

    before = lm.stats.snapshot()
    start = time.perf_counter()
    outs = [
        lm.generate([p], SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed + i))[0][0].token_ids
        for i, p in enumerate(prompts)
    ]
    wall = time.perf_counter() - start
    spent = lm.stats.since(before)
    c, role = spent.counters, spent.roles["target"]
    forwards = c.get("token_spec.verify_forwards") or role.forward_passes
    drafter = spent.roles["drafter"].forward_passes if "drafter" in spent.roles else 0
    # draft tokens the target verified, and of them the ones it rejected (thrown away)
    drafted = {"drafted": c.get("token_spec.drafted_tokens", 0)}
    drafted["rejected"] = drafted["drafted"] - c.get("token_spec.accepted_tokens", 0)
    return outs, wall, role.generated_tokens / max(forwards, 1), drafter, drafted


def _hf(lm, draft, counter, prompts, kind, temperature, max_tokens, seed):
    extra = (
        {"assistant_model": draft}
        if kind == "hf assisted (draft)"
        else {"prompt_lookup_num_tokens": 10}
        if kind == "hf prompt lookup"
        else {}
    )
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
        if temperature > 0
        else {"do_sample": False}
    )
    counter.calls = 0
    outs, start = [], time.perf_counter()
    for i, p in enumerate(prompts):
        torch.manual_seed(seed + i)
        ids = torch.tensor([p], device=lm.device)
        out = lm.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            eos_token_id=sorted(lm.eos_ids),
            pad_token_id=lm.pad_id,
            **sampling,
            **extra,
        )
        outs.append(out[0, len(p) :].tolist())
    wall = time.perf_counter() - start
    tokens = sum(len(o) for o in outs)
    return outs, wall, tokens / max(counter.calls - len(prompts), 1), 0, {}  # one prefill per prompt


def run(
    out: Path,
    problems: int = 12,
    warmup: int = 5,
    max_tokens: int = 200,
    rounds: int = 2,
    best_of: int = 8,
    best_of_problems: int = 8,
    seed: int = 1234,
    difficulty: str = "medium",
    temperatures=(0.0, 0.7),
    progress: bool = True,
    only: tuple[str, ...] = (),
    pair: str = "toy",
    data: str | None = None,
    repeat: bool = False,
    hf: bool = True,
) -> list[dict]:
    """``only``: run just the configurations whose name contains one of these strings (plus the baselines);
    ``repeat``: warm the drafters up on the timed problems themselves (repeated requests); ``hf``: also time
    transformers' own options (off: no draft model is loaded unless a drafter needs it).
    ``pair``: the models (``PAIRS``); a real pair reads its problems from ``data`` (the first ``problems`` timed,
    the next ``warmup`` to warm up, then the best-of-N problems)."""
    from transformers import AutoModelForCausalLM

    check_pair_data(pair, data)
    torch.set_num_threads(1)  # two threads on a shared 2-core machine are many times slower
    out.mkdir(parents=True, exist_ok=True)
    target_path, draft_path, _ = PAIRS[pair]
    lm = load_lm("transformers", target_path, "target", seed=seed)
    draft = AutoModelForCausalLM.from_pretrained(resolve_path(draft_path)).eval() if hf else None
    counter = ForwardCounter(lm.model)
    first = 0 if data else seed  # a file's problems are numbered from its first line
    test = _prompts(lm, problems, first, difficulty, pair, data)
    warm = _prompts(lm, warmup, first + problems if data else seed + 1, difficulty, pair, data)
    answers = None if data else [p.answer for p in generate_problems(problems, seed, Difficulty.parse(difficulty))]

    def ours(config, temperature):
        if config and "draft" in config:
            config = {**config, "draft": draft_path}
        lm.drafter = build_drafter(config, lm) if config else None
        if config:  # warm up the drafter's state on other problems (repeat: on these)
            _ours(lm, test if repeat else warm, temperature, max_tokens, seed + 10_000)
        return _ours(lm, test, temperature, max_tokens, seed)

    _ours(lm, warm[:2], 0.0, max_tokens, seed)  # warm up torch
    rows = []
    for temperature in temperatures:
        configs = [("plain", None)] + [
            (name, c)
            for name, c in OURS
            # the toy heads (SpecDec++'s, the judge) read toy models' hidden states: toy pair only
            if _picked(name, only) and (pair == "toy" or (c.get("acceptance_head") != "toy" and "judge" not in c))
        ]
        best: dict[str, tuple] = {}
        for r in range(rounds):
            for name, config in configs:
                result = ours(config, temperature)
                if name not in best or result[1] < best[name][1]:
                    best[name] = result
                if progress:
                    print(
                        f"T={temperature} round {r + 1}: {name:<24} {sum(map(len, result[0])) / result[1]:7.1f} "
                        "tokens/s",
                        flush=True,
                    )
            lm.drafter = None
            for name in HF if hf else []:
                result = _hf(lm, draft, counter, test, name, temperature, max_tokens, seed)
                if name not in best or result[1] < best[name][1]:
                    best[name] = result
                if progress:
                    print(
                        f"T={temperature} round {r + 1}: {name:<24} {sum(map(len, result[0])) / result[1]:7.1f} "
                        "tokens/s",
                        flush=True,
                    )
        plain_tps = sum(map(len, best["plain"][0])) / best["plain"][1]
        hf_best = max((sum(map(len, best[n][0])) / best[n][1] for n in HF if hf), default=None)
        for name, _ in configs + [(n, None) for n in HF if hf]:
            outs, wall, mean_accepted, drafter_forwards, drafted = best[name]
            tps = sum(map(len, outs)) / wall
            rows.append(
                {
                    "section": "batch 1",
                    "method": name,
                    "temperature": temperature,
                    "problems": len(test),
                    "tokens": sum(map(len, outs)),
                    "wall_s": round(wall, 3),
                    "tokens_per_s": round(tps, 1),
                    "mean_accepted": round(mean_accepted, 2),
                    "drafter_forwards": drafter_forwards,
                    "drafted_tokens": drafted.get("drafted"),
                    "rejected_drafts": drafted.get("rejected"),
                    "speedup_vs_plain": round(tps / plain_tps, 2),
                    "speedup_vs_best_hf": round(tps / hf_best, 2) if hf_best else None,
                    "identical_to_plain": (outs == best["plain"][0]) if temperature == 0 else None,
                    "accuracy": _accuracy(lm, outs, answers),
                }
            )
    if best_of_problems:
        rows += best_of_n(
            lm,
            _prompts(lm, best_of_problems, first + problems + warmup if data else seed + 2, difficulty, pair, data),
            warm,
            best_of,
            max_tokens,
            rounds,
            seed,
            progress,
            only,
        )
    lm.drafter = None
    (out / "bench.json").write_text(json.dumps(rows, indent=1))
    (out / "bench.md").write_text(
        table(
            rows,
            {"problems": problems, "best_of": best_of, "max_tokens": max_tokens, "rounds": rounds}
            | ({"warm-up": "the timed problems (repeated requests)"} if repeat else {}),
            pair,
            data,
        )
    )
    plot(rows, out / "bench.png")
    return rows


def online_stream(
    out: Path,
    stream: int = 500,
    window: int = 100,
    difficulty: str = "ops=9-10,digits=2",
    temperatures=(0.0,),
    seed: int = 1234,
    online: dict | None = None,
    max_tokens: int = 200,
    progress: bool = True,
    modes: tuple[str, ...] = ("frozen", "online"),
    pool: int = 0,
) -> list[dict]:
    """Online Speculative Decoding on a stream of ``stream`` toy problems (``difficulty``: by default longer than
    the draft was trained on, where it disagrees with the target most), decoded one after another at batch 1 with
    toy:draft drafting a chain of 4 for toy:target: once with the draft frozen, once with ``online``
    (``token_speculation.online`` keys) updating it. Reports each run's acceptance rate (accepted / drafted
    tokens) and tokens per target forward over the first and the last ``window`` problems, and whether the two
    runs' outputs are identical (greedy: both equal plain decoding; each row also has a hash of its outputs, to
    compare runs made apart: ``modes`` runs only some of them). ``pool``: the stream draws (seeded, with
    replacement) from this many distinct problems, as traffic where queries recur (0: every problem new). Writes
    ``online.json`` and ``online.md``."""
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    online = OnlineDistillation(**(online or {})).model_dump(exclude_none=True)
    window = min(window, stream)
    lm = load_lm("transformers", "toy:target", "target", seed=seed)
    problems = generate_problems(pool or stream, seed=seed, difficulty=Difficulty.parse(difficulty))
    prompts = _prompts(lm, pool or stream, seed, difficulty)
    if pool:
        draw = random.Random(seed)
        order = [draw.randrange(pool) for _ in range(stream)]
        problems, prompts = [problems[i] for i in order], [prompts[i] for i in order]
    rows = []
    for temperature in temperatures:
        outputs = {}
        for mode in modes:
            spec = {"method": "draft_model", "draft": "toy:draft", "num_tokens": 4}
            lm.drafter = build_drafter({**spec, "online": online} if mode == "online" else spec, lm)
            per, outs, start = [], [], time.perf_counter()
            log = out / f"online-{mode}-T{temperature}.jsonl"  # per problem, as it goes
            log.write_text("")
            for i, p in enumerate(prompts):
                before = lm.stats.snapshot()
                outs.append(
                    lm.generate([p], SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed + i))[0][
                        0
                    ].token_ids
                )
                c = lm.stats.since(before).counters
                per.append(
                    (c["token_spec.accepted_tokens"], c["token_spec.drafted_tokens"], c["token_spec.verify_forwards"])
                )
                with log.open("a") as f:
                    f.write(json.dumps({"problem": i, "counts": per[-1], "tokens": len(outs[-1])}) + "\n")
                if progress and (i + 1) % window == 0:
                    print(f"T={temperature} {mode}: {i + 1}/{stream} problems", flush=True)
            wall = time.perf_counter() - start
            outputs[mode] = outs
            ends = {"first": per[:window], "last": per[-window:]}
            rate = {k: sum(a for a, _, _ in v) / max(sum(d for _, d, _ in v), 1) for k, v in ends.items()}
            tokens = {k: sum(map(len, outs[:window] if k == "first" else outs[-window:])) for k in ends}
            rows.append(
                {
                    "mode": mode,
                    "temperature": temperature,
                    "difficulty": difficulty,
                    "stream": stream,
                    "pool": pool or None,
                    "window": window,
                    "acceptance_first": round(rate["first"], 3),
                    "acceptance_last": round(rate["last"], 3),
                    "per_forward_first": round(tokens["first"] / max(sum(f for *_, f in ends["first"]), 1), 2),
                    "per_forward_last": round(tokens["last"] / max(sum(f for *_, f in ends["last"]), 1), 2),
                    "updates": lm.drafter.online.updates if mode == "online" else 0,
                    "wall_s": round(wall, 1),
                    "accuracy": _accuracy(lm, outs, [q.answer for q in problems]),
                    "online": online if mode == "online" else None,
                    "outputs_sha1": hashlib.sha1(json.dumps(outs).encode()).hexdigest(),
                }
            )
        same = outputs["frozen"] == outputs["online"] if len(outputs) == 2 else None
        for r in rows[-len(modes) :]:
            r["identical_outputs"] = same
    lm.drafter = None
    (out / "online.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# Online Speculative Decoding on the toy models",
        "",
        f"A stream of {stream} toy problems ({difficulty}"
        + (f", drawn from {pool} distinct ones" if pool else "")
        + "), batch 1, "
        "toy:draft drafting a chain of 4 for toy:target, "
        f"frozen vs updated online ({', '.join(f'{k} {v}' for k, v in online.items())}). acceptance = accepted / "
        f"drafted tokens; per forward = tokens per target forward; first / last {window} problems of the stream.",
        "",
        "| draft | T | acceptance first | acceptance last | per forward first | per forward last | updates | "
        "identical outputs | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['temperature']} | {r['acceptance_first']} | {r['acceptance_last']} | "
            f"{r['per_forward_first']} | {r['per_forward_last']} | {r['updates']} | "
            f"{'' if r['identical_outputs'] is None else 'yes' if r['identical_outputs'] else 'no'} | {r['wall_s']} |"
        )
    (out / "online.md").write_text("\n".join(lines) + "\n")
    return rows


def _picked(name: str, only) -> bool:
    return not only or any(o in name for o in only)


def best_of_n(lm, prompts, warm, n, max_tokens, rounds, seed, progress, only=()) -> list[dict]:
    """N trajectories per problem decoded together at T = 0.7: no speculation, a pool per trajectory, the pool of
    the problem shared by its trajectories (STAND)."""

    configs = [
        ("best-of-8: none", None),
        ("best-of-8: ngram_pool per trajectory", {"method": "ngram_pool", "shared": False}),
        ("best-of-8: ngram_pool shared", {"method": "ngram_pool", "shared": True}),
        ("best-of-8: ngram_pool shared, adaptive", {"method": "ngram_pool", "shared": True, "adaptive": True}),
        ("best-of-8: ngram_pool shared, fitted shape", {"method": "ngram_pool", "shared": True, "shape": "toy"}),
    ]
    configs = [c for c in configs if c[1] is None or _picked(c[0], only)]
    params = lambda i: SamplingParams(n=n, temperature=0.7, max_tokens=max_tokens, seed=seed + i)  # noqa: E731
    best = {}
    for r in range(rounds):
        for name, config in configs:
            lm.drafter = build_drafter(config, lm) if config else None
            if config:
                for i, p in enumerate(warm[:4]):
                    lm.generate([p], params(10_000 + i))
            before = lm.stats.snapshot()
            start = time.perf_counter()
            tokens = sum(len(g.token_ids) for i, p in enumerate(prompts) for g in lm.generate([p], params(i))[0])
            wall = time.perf_counter() - start
            spent = lm.stats.since(before)
            forwards = spent.counters.get("token_spec.verify_forwards") or spent.roles["target"].forward_passes
            steps = spent.roles["target"].forward_passes  # every forward advances all live rows
            result = (tokens, wall, tokens / max(forwards, 1) / n, steps)
            if name not in best or wall < best[name][1]:
                best[name] = result
            if progress:
                print(f"best-of-{n} round {r + 1}: {name:<40} {tokens / wall:7.1f} tokens/s", flush=True)
    base = best[configs[0][0]][0] / best[configs[0][0]][1]
    rows = []
    for name, _ in configs:
        tokens, wall, per_row, steps = best[name]
        rows.append(
            {
                "section": f"best-of-{n}",
                "method": name,
                "temperature": 0.7,
                "problems": len(prompts),
                "tokens": tokens,
                "wall_s": round(wall, 3),
                "tokens_per_s": round(tokens / wall, 1),
                "mean_accepted": round(per_row, 2),
                "target_forwards": steps,
                "speedup_vs_plain": round(tokens / wall / base, 2),
                "identical_to_plain": None,
            }
        )
    return rows


def table(rows: list[dict], setup: dict, pair: str = "toy", data: str | None = None) -> str:
    target, draft, _ = PAIRS[pair]
    lines = [
        "# Token-level speculative decoding on " + ("the toy models" if pair == "toy" else f"the {pair} pair"),
        "",
        "Setup: "
        + ", ".join(f"{k} {v}" for k, v in setup.items())
        + (f"; problems of {Path(data).name}" if data else "")
        + f"; {target} verifies, {draft} drafts where a draft model is used; "
        "1 torch thread; fastest of the rounds. mean accepted = tokens per target forward (1.00 for plain decoding; "
        "best-of-N: per row). accuracy = right final answers on the timed toy problems (a lossy method: the judge).",
        "",
        "| section | method | T | tokens/s | mean accepted | speedup vs plain | vs best HF | identical to plain | "
        "accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        same = "" if r["identical_to_plain"] is None else ("yes" if r["identical_to_plain"] else "NO")
        lines.append(
            f"| {r['section']} | {r['method']} | {r['temperature']} | {r['tokens_per_s']} | {r['mean_accepted']:.2f} | "
            f"{r['speedup_vs_plain']:.2f}x | "
            f"{(r.get('speedup_vs_best_hf') and str(r['speedup_vs_best_hf']) + 'x') or ''} | {same} | "
            f"{'' if r.get('accuracy') is None else r['accuracy']} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:

    plt = pyplot()
    groups = [
        ("batch 1, greedy", [r for r in rows if r["section"] == "batch 1" and r["temperature"] == 0]),
        ("batch 1, T = 0.7", [r for r in rows if r["section"] == "batch 1" and r["temperature"] > 0]),
        ("best-of-8, T = 0.7", [r for r in rows if r["section"] != "batch 1"]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.5), gridspec_kw={"width_ratios": [4, 4, 1.6]})
    for ax, (title, rs) in zip(axes, groups):
        colors = [
            "tab:gray"
            if r["method"] == "plain" or r["method"].endswith("none")
            else "tab:orange"
            if r["method"].startswith("hf")
            else "tab:blue"
            for r in rs
        ]
        ax.barh([r["method"].replace("best-of-8: ", "") for r in rs], [r["speedup_vs_plain"] for r in rs], color=colors)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("speedup vs plain decoding (tokens/s)")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for bench.json, bench.md and bench.png")
    p.add_argument(
        "--problems",
        type=count(1, 100_000, "each problem runs every configuration"),
        default=12,
        help="toy problems timed at batch 1 (default 12)",
    )
    p.add_argument(
        "--best-of-problems",
        type=count(0, 100_000, "each problem runs every configuration"),
        default=8,
        help="problems for the best-of-8 comparison (default 8; 0: none)",
    )
    p.add_argument(
        "--rounds",
        type=count(1, 100, "each round times every configuration"),
        default=2,
        help="timed passes per configuration; the fastest is kept (default 2)",
    )
    p.add_argument(
        "--max-tokens",
        type=count(1, 131072, "no model's context holds more"),
        default=200,
        help="tokens per solution at most (default 200)",
    )
    p.add_argument(
        "--seed", type=count(0, 2**63 - 1, "64-bit seeds"), default=1234, help="toy suite seed (default 1234)"
    )
    p.add_argument(
        "--difficulty",
        default=None,
        help="toy difficulty preset or spec (default medium; --online-stream: ops=9-10,digits=2)",
    )
    p.add_argument(
        "--pair",
        choices=list(PAIRS),
        default="toy",
        help="toy: the toy models on toy problems; qwen-coder: the real Qwen2.5-Coder pair on --data (default toy)",
    )
    p.add_argument("--data", default=None, help="a local JSONL file of GSM8K-style problems (required for a real pair)")
    p.add_argument(
        "--temperatures", default="0,0.7", help="comma-separated sampling temperatures at batch 1 (default 0,0.7)"
    )
    p.add_argument(
        "--online-stream",
        type=count(0, 100_000, "each problem is decoded twice, one after another"),
        default=0,
        metavar="N",
        help="run only Online Speculative Decoding: acceptance over a stream of N toy problems (first vs last 100), "
        "frozen vs online draft, at each --temperatures; --difficulty defaults to ops=9-10,digits=2 here (0: off)",
    )
    p.add_argument(
        "--online-pool",
        type=count(0, 100_000, "problems are generated up front"),
        default=0,
        metavar="K",
        help="--online-stream: draw the stream from K distinct problems, as traffic where queries recur (default 0: "
        "every problem new)",
    )
    p.add_argument(
        "--online-window",
        type=count(1, 100_000, "a window is a count of problems"),
        default=100,
        help="--online-stream: problems in the first and last windows compared (default 100)",
    )
    p.add_argument(
        "--online-lr",
        type=finite,
        default=None,
        help="--online-stream: token_speculation.online.lr (default: the recipe default)",
    )
    p.add_argument("--no-progress", action="store_true", help="no per-configuration lines")
    p.add_argument(
        "--repeat",
        action="store_true",
        help="warm the drafters up on the timed problems themselves: repeated requests, whose earlier outputs "
        "retrieval (suffix, rasd) finds",
    )
    p.add_argument(
        "--warmup",
        type=count(0, 100_000, "each warm-up problem runs every stateful configuration"),
        default=5,
        help="problems each stateful drafter (pools, tables, SWIFT's layer search) runs before it is timed (default 5)",
    )
    p.add_argument("--no-hf", action="store_true", help="skip transformers' own generate, assisted and prompt lookup")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the configurations whose name contains TEXT (repeatable; plain decoding, best-of-8 without "
        "speculation and transformers' own always run)",
    )


def main(args) -> None:
    if args.online_stream:
        if args.pair != "toy":
            raise ValueError("--online-stream runs on the toy pair: drop --pair")
        rows = online_stream(
            Path(args.out),
            args.online_stream,
            difficulty=args.difficulty or "ops=9-10,digits=2",
            temperatures=_temperatures(args.temperatures),
            seed=args.seed,
            max_tokens=args.max_tokens,
            progress=not args.no_progress,
            window=args.online_window,
            pool=args.online_pool,
            online={} if args.online_lr is None else {"lr": args.online_lr},
        )
        print((Path(args.out) / "online.md").read_text())
        return
    rows = run(
        Path(args.out),
        args.problems,
        max_tokens=args.max_tokens,
        rounds=args.rounds,
        best_of_problems=args.best_of_problems,
        seed=args.seed,
        difficulty=args.difficulty or "medium",
        temperatures=_temperatures(args.temperatures),
        progress=not args.no_progress,
        only=tuple(args.only),
        pair=args.pair,
        data=args.data,
        repeat=args.repeat,
        warmup=args.warmup,
        hf=not args.no_hf,
    )
    print(table(rows, {"problems": args.problems, "rounds": args.rounds}, args.pair, args.data))
    print(f"wrote {args.out}/bench.json, bench.md, bench.png")


def _temperatures(text: str) -> tuple[float, ...]:
    values = tuple(numbers(text, "--temperatures", "0,0.7"))
    if any(not 0 <= t <= 10 for t in values):
        raise ValueError(f"--temperatures {text!r}: each temperature is in [0, 10]")
    return values
