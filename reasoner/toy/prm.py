"""The toy PRM: a process reward model for the toy world, so PRM-guided search runs on a real trained model.

``python -m reasoner.toy.prm --out DIR`` (seeded, CPU, a few minutes). Like real PRMs it starts from a policy
model's weights (Qwen2.5-Math-PRM from Qwen2.5-Math-Instruct): ``toy:target``'s body, with a fresh scalar
value head (``LlamaForTokenClassification``, one label), in the Skywork-o1-Open-PRM input format with the
toy step token ``"\\n\\n"`` (``verifiers.prm.SkyworkPRM``). Step labels come from the generator's exact
answers: a step is good while every step up to it equals the reference solution's (so every step after the
first mistake is bad, as in Math-Shepherd and Qwen's PRM data). Wrong trajectories are reference solutions
with one step corrupted the way small models err (``train.corrupt_step``), continued consistently from the
wrong value, as a model would continue.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .problems import ANSWER_TEMPLATE, Difficulty, ToyProblem, apply, generate_problem

log = logging.getLogger(__name__)

STEP_TOKEN = "\n\n"
STEPS, LR, BATCH, SEED = 400, 5e-4, 32, 0
_OPERATION = re.compile(r"^(\d+)([-+*])(\d+)=(-?\d+)$")


def label_steps(problem: ToyProblem, steps: list[str]) -> list[int]:
    """1 for each step while the path still equals the reference solution, 0 from the first mistake on."""
    reference, labels, ok = problem.steps, [], True
    for i, step in enumerate(steps):
        ok = ok and i < len(reference) and step.strip() == reference[i]
        labels.append(int(ok))
    return labels


def trajectory(rng: random.Random, problem: ToyProblem) -> list[str]:
    """The reference solution, or (half the time) one with a corrupted step, continued from the wrong value."""
    from .train import corrupt_step

    steps = problem.steps
    if rng.random() < 0.5:
        return steps
    j = rng.randrange(len(steps))
    wrong = corrupt_step(rng, problem, j)
    out = steps[:j] + [wrong]
    m = _OPERATION.match(wrong)
    if m is None:  # a (wrong or early) answer line ends the trajectory
        return out
    value = int(m.group(4))
    for o in problem.operations[j + 1 :]:
        nxt = apply(value, o.op, o.right)
        out.append(f"{value}{o.op}{o.right}={nxt}")
        value = nxt
    return out + [ANSWER_TEMPLATE.format(value)]


def batches(fmt, rng: random.Random):
    """Endless (ids, mask, position/label) batches, one (operations, digits) combination per batch."""
    pad = fmt.tokenizer.pad_token_id
    while True:
        n = rng.randint(1, 7)
        difficulty = Difficulty(n, n, rng.choices([1, 2], weights=[0.25, 0.75])[0])
        rows = []
        for _ in range(BATCH):
            p = generate_problem(rng, difficulty)
            steps = trajectory(rng, p)
            ids, positions = fmt.build(p.question, steps)
            rows.append((ids, positions, label_steps(p, steps)))
        width = max(len(r[0]) for r in rows)
        ids = torch.full((BATCH, width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        target = torch.full((BATCH, width), -1.0)
        for i, (x, pos, lab) in enumerate(rows):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
            target[i, pos] = torch.tensor(lab, dtype=torch.float)
        yield ids, mask, target


def train(out: Path, steps: int = STEPS, seed: int = SEED, lr: float = LR, init: str | None = None) -> dict:
    """Fine-tune ``toy:target``'s body with a value head (or continue from the PRM at ``init``)."""
    from transformers import AutoTokenizer, LlamaForTokenClassification

    from verifiers.prm import SkyworkPRM

    from . import model_path
    from .tokenizer import save_tokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    source = init or model_path("target")
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = LlamaForTokenClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    before = json.loads((Path(init) / "training.json").read_text()) if init else None
    fmt = SkyworkPRM(tokenizer, STEP_TOKEN)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.1, 1 - s / steps))
    data = batches(fmt, rng)
    model.train()
    start, running = time.time(), None
    for step in range(1, steps + 1):
        ids, mask, target = next(data)
        logits = model(input_ids=ids, attention_mask=mask).logits[..., 0]
        keep = target >= 0
        loss = F.binary_cross_entropy_with_logits(logits[keep], target[keep])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 50 == 0:
            log.info("prm step %d/%d loss %.4f %.0fs", step, steps, running, time.time() - start)
    secs = time.time() - start
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)
    meta = {"init": "toy:target", "format": "skywork", "step_token": STEP_TOKEN, "steps": steps, "lr": lr, "batch": BATCH, "seed": seed, "train_seconds": round(secs), "threads": torch.get_num_threads()}
    if before:  # a continued run: keep the earlier phase's record
        before.pop("measured", None)
        meta = {**meta, "init": "a previous phase", "previous": before}
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def measure(path: str = "toy:prm", n: int = 100, samples: int = 4, difficulty: str = "hard", seed: int = 4321) -> dict:
    """Step-level ROC-AUC of the PRM on real ``toy:draft`` samples (T = 0.8) of ``n`` problems, labelled from
    the exact answers, and on as many synthetic trajectories (reference solutions with one corrupted step)."""
    from sklearn.metrics import roc_auc_score

    from reasoner.backends import SamplingParams, load_lm
    from verifiers.prm import PRMVerifier
    import prompts

    prm = PRMVerifier(path, family="skywork", step_token=STEP_TOKEN)
    rng = random.Random(seed)
    problems = [generate_problem(rng, Difficulty.parse(difficulty)) for _ in range(n)]
    # real samples: whole solutions written by the draft, split at the step delimiter
    draft = load_lm("transformers", "toy:draft", "draft", seed=seed)
    template = prompts.load("toy")
    gens = draft.generate([template.prompt(draft.tokenizer, p.question) for p in problems], SamplingParams(n=samples, temperature=0.8, max_tokens=160))
    real = [(p, g.text.split(STEP_TOKEN)) for p, gs in zip(problems, gens) for g in gs]
    synthetic = [(p, trajectory(rng, p)) for p in problems]
    result = {"path": path, "difficulty": difficulty, "problems": n}
    for name, pairs in (("draft_samples", real), ("synthetic", synthetic)):
        scores = prm.score_steps([p.question for p, _ in pairs], [s for _, s in pairs])
        labels = [lab for p, s in pairs for lab in label_steps(p, s)]
        flat = [x for row in scores for x in row]
        result[name] = {"steps": len(labels), "bad_steps": labels.count(0), "roc_auc": round(float(roc_auc_score(labels, flat)), 4)}
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reasoner.toy.prm", description="Train (seeded) and measure the toy PRM.")
    parser.add_argument("--out", default=str(Path(__file__).parent / "models" / "prm"))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--init", help="continue training the PRM in this folder (a second phase)")
    parser.add_argument("--measure-only", action="store_true", help="only measure the PRM at --out")
    parser.add_argument("--n", type=int, default=100, help="problems for the measurement")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    if not args.measure_only:
        train(Path(args.out), args.steps, args.seed, args.lr, args.init)
    result = measure(args.out, n=args.n)
    print(json.dumps(result, indent=2))
    meta_path = Path(args.out) / "training.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        meta["measured"] = result
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
