"""Rebuild the toy world's models from scratch: ``python -m evals.toy.train --out DIR`` (or ``reasoner toy train``).

Seeded and CPU-only (under an hour on a 2-core CPU: the README's table has the measured times). Three stages:

1. ``toy-target`` (Llama, 4 layers x 192): trained on generated problems with their exact solutions, and on
   judge examples (SpecReason's format: problem, steps, candidate step, judge turn, one digit; 9 for a
   correct candidate, 0 for a corrupted one), so the judge code path runs on a real model.
2. ``toy-draft`` (Llama, 2 layers x 128) pre-trained on the same generated solutions, then
3. distilled: fine-tuned on the target's own greedy solutions of fresh problems (FastDraft's recipe in
   miniature: pre-train, then align to the target's outputs).

Batches hold one (kind, operations, digits) combination each, so padding costs little. Weights are saved in
fp16 (half the disk) and computed in fp32 (bf16 matmuls are slow on CPUs).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from prompts import load
from reasoner.backends.sources import save_tokenizer
from reasoner.toy.problems import ANSWER_TEMPLATE, Difficulty, Operation, ToyProblem, generate_problem
from verifiers.math import extract_answer

from .tokenizer import build_tokenizer

log = logging.getLogger(__name__)

JUDGE_CORRECT, JUDGE_WRONG = 9, 0


@dataclass
class ModelSpec:
    layers: int
    hidden: int
    heads: int
    ffn: int
    steps: int
    lr: float
    judge_fraction: float = 0.0  # share of batches that are judge examples
    distill_steps: int = 0  # fine-tuning steps on the target's own solutions
    distill_problems: int = 0


TARGET = ModelSpec(layers=4, hidden=192, heads=4, ffn=768, steps=5000, lr=1.5e-3, judge_fraction=0.2)
DRAFT = ModelSpec(layers=2, hidden=128, heads=4, ffn=512, steps=2500, lr=2e-3, distill_steps=400, distill_problems=3200)
TRAIN_OPS = (1, 7)  # operation counts seen in training (the 'hard' preset uses 5-7)
DIGIT_MIX = {1: 0.25, 2: 0.75}
BATCH = 32


# ----------------------------------------------------------------------------------------------------------
# examples


def _render(tokenizer, template, question: str, steps: list[str]) -> str:
    return template.prompt(tokenizer, question, steps)


def corrupt_step(rng: random.Random, problem: ToyProblem, index: int) -> str:
    """A wrong candidate for step ``index`` (the kinds of mistakes a small model makes)."""
    ops = problem.operations
    if index == len(ops):  # the answer line: a wrong number, or one more invented operation
        if rng.random() < 0.7:
            return ANSWER_TEMPLATE.format(_perturb(rng, problem.answer))
        return Operation(problem.answer, rng.choice("+-*"), rng.randint(2, 9)).step()
    o = ops[index]
    kind = rng.random()
    if kind < 0.12:  # answering before the last operation
        return ANSWER_TEMPLATE.format(o.left if rng.random() < 0.5 else o.result)
    if kind < 0.6:  # right operands, wrong result
        return f"{o.left}{o.op}{o.right}={_perturb(rng, o.result)}"
    if kind < 0.75:  # wrong left operand, consistent result
        wrong = Operation(_perturb(rng, o.left), o.op, o.right)
    elif kind < 0.9:  # wrong right operand
        wrong = Operation(
            o.left,
            o.op,
            _perturb(rng, o.right) if o.op != "*" else rng.choice([k for k in range(2, 10) if k != o.right]),
        )
    else:  # wrong operator
        wrong = Operation(o.left, rng.choice([x for x in "+-*" if x != o.op]), o.right)
    return wrong.step() if wrong.result >= 0 else f"{o.left}{o.op}{o.right}={_perturb(rng, o.result)}"


def _perturb(rng: random.Random, value: int) -> int:
    """A nearby wrong non-negative number: off by a small amount, one digit changed, or two digits swapped."""
    for _ in range(20):
        s = str(value)
        kind = rng.random()
        if kind < 0.4:
            new = value + rng.choice([-1, 1]) * rng.choice([1, 1, 2, 10, 10, 100, rng.randint(1, 50)])
        elif kind < 0.8:
            i = rng.randrange(len(s))
            new = int(s[:i] + str(rng.choice([d for d in "0123456789" if d != s[i]])) + s[i + 1 :])
        elif len(s) > 1:
            i = rng.randrange(len(s) - 1)
            new = int(s[:i] + s[i + 1] + s[i] + s[i + 2 :])
        else:
            new = value + rng.randint(1, 9)
        if new >= 0 and new != value:
            return new
    return value + 1


def solve_example(tokenizer, template, problem: ToyProblem) -> tuple[list[int], list[float]]:
    prompt = tokenizer(_render(tokenizer, template, problem.question, []), add_special_tokens=False)["input_ids"]
    answer = tokenizer(problem.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt + answer, [0.0] * len(prompt) + [1.0] * len(answer)


def judge_example(tokenizer, template, rng: random.Random, problem: ToyProblem, digit_weight: float = 8.0):
    steps = problem.steps
    index = rng.randrange(len(steps))
    correct = rng.random() < 0.5
    candidate = steps[index] if correct else corrupt_step(rng, problem, index)
    text = template.judge_prompt(tokenizer, problem.question, steps[:index], candidate)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = tokenizer(str(JUDGE_CORRECT if correct else JUDGE_WRONG), add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    return prompt + answer, [0.0] * len(prompt) + [digit_weight, 1.0]


def collate(examples, pad_id: int):
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    weights = torch.zeros((len(examples), width))
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, w) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        weights[i, : len(w)] = torch.tensor(w)
        mask[i, : len(x)] = 1
    return ids, mask, weights


def _difficulty(rng: random.Random) -> Difficulty:
    digits = rng.choices(list(DIGIT_MIX), weights=list(DIGIT_MIX.values()))[0]
    n = rng.randint(*TRAIN_OPS)
    return Difficulty(n, n, digits)


def batches(tokenizer, template, rng: random.Random, judge_fraction: float):
    """Endless batches of generated examples, one (kind, ops, digits) combination per batch."""
    while True:
        difficulty = _difficulty(rng)
        problems = [generate_problem(rng, difficulty) for _ in range(BATCH)]
        if rng.random() < judge_fraction:
            examples = [judge_example(tokenizer, template, rng, p) for p in problems]
        else:
            examples = [solve_example(tokenizer, template, p) for p in problems]
        yield collate(examples, tokenizer.pad_token_id)


# ----------------------------------------------------------------------------------------------------------
# training


def make_model(spec: ModelSpec, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.ffn,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def weighted_loss(model, ids, mask, weights):
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    w = weights[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none")
    return (nll * w.reshape(-1)).sum() / w.sum()


def train(
    model,
    data,
    steps: int,
    lr: float,
    name: str,
    probe=None,
    probe_every: int = 1000,
    warmup: int = 200,
    compile: bool = False,
):
    """AdamW (betas 0.9/0.98, wd 0.1), grad clip 1, linear warmup then cosine to 10% of ``lr``.
    ``compile`` runs the forward through ``torch.compile`` (about 20% faster per step on a CPU, after ~2 min
    of compiling)."""
    forward = torch.compile(model, dynamic=True) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))),
    )
    model.train()
    start, running = time.time(), None
    for step in range(1, steps + 1):
        ids, mask, weights = next(data)
        loss = weighted_loss(forward, ids, mask, weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0:
            log.info(
                "%s step %d/%d loss %.4f lr %.2e %.0fs",
                name,
                step,
                steps,
                running,
                sched.get_last_lr()[0],
                time.time() - start,
            )
        if probe and (step % probe_every == 0 or step == steps):
            model.eval()
            log.info("%s step %d probe: %s", name, step, probe(model))
            model.train()
    model.eval()
    return time.time() - start


@torch.no_grad()
def greedy_solutions(
    model, tokenizer, template, problems: list[ToyProblem], batch: int = 64, max_new_tokens: int = 96
) -> list[str]:
    """The model's greedy solutions (plain HF generate with left padding; used for probes and distillation data)."""
    out = []
    for i in range(0, len(problems), batch):
        texts = [_render(tokenizer, template, p.question, []) for p in problems[i : i + batch]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


def make_probe(tokenizer, template, seed: int, n: int = 64):

    problems = [generate_problem(random.Random(seed + i), Difficulty(2, 6, 2)) for i in range(n)]

    def probe(model):
        texts = greedy_solutions(model, tokenizer, template, problems)
        right = sum(extract_answer(t) == str(p.answer) for t, p in zip(texts, problems))
        return f"exact match {right}/{n} (ops 2-6, digits 2)"

    return probe


def save(model, tokenizer, path: Path, meta: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.generation_config.do_sample = False
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.half().save_pretrained(path, safe_serialization=True)
    model.float()
    save_tokenizer(tokenizer, path)
    (path / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv=None) -> None:

    parser = argparse.ArgumentParser(prog="reasoner toy train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "models"), help="folder for target/ and draft/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--only", choices=["target", "draft"], help="train one model (draft needs a trained target in --out)"
    )
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip torch.compile (slower steps, no compile time)"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every step count (e.g. 0.05 for a smoke run)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    tokenizer = build_tokenizer(args.seed)
    template = load("toy")
    probe = make_probe(tokenizer, template, seed=10_000 + args.seed)
    scaled = lambda n: max(1, int(n * args.scale))  # noqa: E731

    if args.only != "draft":
        torch.manual_seed(args.seed)
        rng = random.Random(args.seed)
        target = make_model(TARGET, tokenizer)
        secs = train(
            target,
            batches(tokenizer, template, rng, TARGET.judge_fraction),
            scaled(TARGET.steps),
            TARGET.lr,
            "target",
            probe,
            compile=args.compile,
        )
        save(
            target,
            tokenizer,
            out / "target",
            {
                "spec": asdict(TARGET),
                "seed": args.seed,
                "train_seconds": round(secs),
                "threads": torch.get_num_threads(),
            },
        )
    if args.only != "target":
        from transformers import AutoModelForCausalLM

        target = AutoModelForCausalLM.from_pretrained(out / "target", dtype=torch.float32).eval()
        torch.manual_seed(args.seed + 1)
        rng = random.Random(args.seed + 1)
        draft = make_model(DRAFT, tokenizer)
        secs = train(
            draft,
            batches(tokenizer, template, rng, 0.0),
            scaled(DRAFT.steps),
            DRAFT.lr,
            "draft",
            probe,
            compile=args.compile,
        )
        # distillation: the target's greedy solutions to fresh problems become the draft's training data
        t0 = time.time()
        problems = [generate_problem(rng, _difficulty(rng)) for _ in range(scaled(DRAFT.distill_problems))]
        problems.sort(key=lambda p: len(p.operations))
        solutions = greedy_solutions(target, tokenizer, template, problems)
        log.info("distillation data: %d target solutions in %.0fs", len(solutions), time.time() - t0)
        secs += time.time() - t0
        secs += train(
            draft,
            distill_batches(tokenizer, template, rng, problems, solutions),
            scaled(DRAFT.distill_steps),
            DRAFT.lr / 4,
            "draft-distill",
            probe,
            warmup=50,
            compile=args.compile,
        )
        save(
            draft,
            tokenizer,
            out / "draft",
            {
                "spec": asdict(DRAFT),
                "seed": args.seed,
                "train_seconds": round(secs),
                "threads": torch.get_num_threads(),
            },
        )


def distill_batches(tokenizer, template, rng: random.Random, problems: list[ToyProblem], solutions: list[str]):
    """Batches of (problem, target solution) pairs; problems are sorted by length so a batch pads little."""
    examples = []
    for p, s in zip(problems, solutions):
        prompt = tokenizer(_render(tokenizer, template, p.question, []), add_special_tokens=False)["input_ids"]
        answer = tokenizer(s, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        examples.append((prompt + answer, [0.0] * len(prompt) + [1.0] * len(answer)))
    starts = list(range(0, len(examples), BATCH))
    while True:
        rng.shuffle(starts)
        for s in starts:
            yield collate(examples[s : s + BATCH], tokenizer.pad_token_id)


if __name__ == "__main__":
    main()
