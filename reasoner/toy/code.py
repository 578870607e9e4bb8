"""The toy world's code task and its model, so the code path (code extraction, sandboxed tests, pass@k)
runs end to end with a real model on a CPU.

A problem asks for a function built from a chain of operations in words; the solution builds the
expression one operation per step, then writes the function in a fenced block::

    Write f(x): take x, add 3, multiply by 2, subtract 4.

    x+3

    (x+3)*2

    (x+3)*2-4

    ```python
    def f(x):
        return (x+3)*2-4
    ```

Its tests call ``f`` on a few inputs (the first is the public one, shown to searches that use execution
feedback). ``python -m reasoner.toy.code --out DIR`` retrains ``toy:code`` (Llama 2 x 128, 0.57 M
parameters, the toy tokenizer; seeded, one thread; two phases, 1700 steps: 48 minutes on this project's
2-core CPU while it was shared with other jobs).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ..types import Problem

WORDS = {"+": "add {}", "-": "subtract {}", "*": "multiply by {}"}
TEST_INPUTS = (1, 0, 7, 12)


@dataclass(frozen=True)
class CodeTask:
    operations: tuple[tuple[str, int], ...]  # (operator, operand) applied left to right to x

    @property
    def expression(self) -> str:
        return self.steps_expressions()[-1]

    def steps_expressions(self) -> list[str]:
        expr, top_level_sum, out = "x", False, []
        for op, n in self.operations:
            if op == "*" and top_level_sum:
                expr = f"({expr})"
            expr, top_level_sum = f"{expr}{op}{n}", op in "+-"
            out.append(expr)
        return out

    @property
    def question(self) -> str:
        words = ", ".join(WORDS[op].format(n) for op, n in self.operations)
        return f"Write f(x): take x, {words}."

    @property
    def solution(self) -> str:
        return "\n\n".join(self.steps_expressions() + [f"```python\ndef f(x):\n    return {self.expression}\n```"])

    def value(self, x: int) -> int:
        for op, n in self.operations:
            x = x + n if op == "+" else x - n if op == "-" else x * n
        return x

    def tests(self) -> str:
        return "".join(f"assert f({x}) == {self.value(x)}\n" for x in TEST_INPUTS)

    def public_test(self) -> str:
        return f"assert f({TEST_INPUTS[0]}) == {self.value(TEST_INPUTS[0])}\n"


def generate_task(rng: random.Random, min_ops: int = 1, max_ops: int = 4) -> CodeTask:
    return CodeTask(tuple((rng.choice("+-*"), rng.randint(2, 9)) for _ in range(rng.randint(min_ops, max_ops))))


def code_problems(n: int, seed: int = 1234) -> list[Problem]:
    """The ``toy-code`` suite: ``n`` seeded tasks as problems with tests (``meta``: entry point, public test)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = generate_task(rng)
        out.append(
            Problem(
                t.question,
                tests=t.tests(),
                id=f"toy-code-{seed}-{i}",
                meta={"entry_point": "f", "public_tests": t.public_test()},
            )
        )
    return out


# ----------------------------------------------------------------------------------------------------------
# the model

LAYERS, HIDDEN, HEADS, FFN, BATCH = 2, 128, 4, 512, 32
PHASES = ((900, 2e-3), (800, 1e-3))  # (steps, peak lr); phase 2 continues phase 1 with fresh data (seed + 1)


def train_code_model(out: Path, seed: int = 0, start: Path | None = None) -> dict:
    """Train ``toy:code`` on generated tasks and save it to ``out``. ``start``: a phase-1 model to continue
    with phase 2 only (how the shipped model was made; the full command runs both phases the same way)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prompts import load

    from . import model_path
    from .train import ModelSpec, collate, make_model, save, train

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
    from . import MODELS_DIR

    parser = argparse.ArgumentParser(
        prog="python -m reasoner.toy.code", description="retrain the toy code model (toy:code), seeded"
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
