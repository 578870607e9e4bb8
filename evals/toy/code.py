"""Training the toy code task's model ``toy:code`` (the task: ``reasoner/toy/code.py``).

``python -m evals.toy.code --out DIR`` retrains it (Llama 2 x 128, 0.57 M parameters, the toy tokenizer;
seeded, one thread; two phases, 1700 steps: 48 minutes on this project's 2-core CPU while it was shared with
other jobs).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prompts import load
from reasoner.toy import MODELS_DIR, model_path
from reasoner.toy.code import CodeTask, generate_task

from .train import ModelSpec, collate, make_model, save, train

LAYERS, HIDDEN, HEADS, FFN, BATCH = 2, 128, 4, 512, 32
PHASES = ((900, 2e-3), (800, 1e-3))  # (steps, peak lr); phase 2 continues phase 1 with fresh data (seed + 1)


def train_code_model(out: Path, seed: int = 0, start: Path | None = None) -> dict:
    """Train ``toy:code`` on generated tasks and save it to ``out``. ``start``: a phase-1 model to continue
    with phase 2 only (how the shipped model was made; the full command runs both phases the same way)."""
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_path("target"))
    template = load("toy")

    def example(task: CodeTask):
        prompt = tokenizer(template.prompt(tokenizer, task.question), add_special_tokens=False)["input_ids"]
        answer = tokenizer(task.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return prompt + answer, [0.0] * len(prompt) + [1.0] * len(answer)

    def batches(rng: random.Random):
        while True:
            n = rng.randint(1, 4)  # one operation count per batch: little padding
            yield collate([example(generate_task(rng, n, n)) for _ in range(BATCH)], tokenizer.pad_token_id)

    if start is None:
        torch.manual_seed(seed)
        model = make_model(ModelSpec(layers=LAYERS, hidden=HIDDEN, heads=HEADS, ffn=FFN, steps=0, lr=0), tokenizer)
        phases = list(enumerate(PHASES))
    else:
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
        phases = list(enumerate(PHASES))[1:]
    secs = json.loads((Path(start) / "training.json").read_text())["train_seconds"] if start else 0
    for i, (steps, lr) in phases:
        torch.manual_seed(seed + i)
        secs += train(
            model, batches(random.Random(seed + i)), steps, lr, f"code phase {i + 1}", warmup=100 if i == 0 else 20
        )
    meta = {
        "spec": {"layers": LAYERS, "hidden": HIDDEN, "heads": HEADS, "ffn": FFN, "batch": BATCH, "phases": PHASES},
        "seed": seed,
        "train_seconds": round(secs),
        "threads": 1,
    }
    save(model, tokenizer, out, meta)
    return meta


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m evals.toy.code", description="retrain the toy code model (toy:code), seeded"
    )
    parser.add_argument("--out", default=str(MODELS_DIR / "code"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", help="a phase-1 model folder: run phase 2 only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    start = time.time()
    meta = train_code_model(Path(args.out), args.seed, Path(args.start) if args.start else None)
    print(json.dumps(meta), f"{time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
