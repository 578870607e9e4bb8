"""The ``reasoner`` command: solve one problem, evaluate a recipe on a suite, and the toy world's tools."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from .recipe import Recipe

EXAMPLE = "Compute ((17+25)*3-48)*2+5."


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", "-r", help="recipe YAML path or a name in recipes/ (default: chain of thought with toy:target)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field, e.g. search.n=8 (repeatable)")


def cmd_solve(args) -> int:
    from .api import Reasoner
    from .types import Problem

    problem = Problem(args.problem)
    recipe = Recipe.load(args.recipe, args.overrides)
    solution = Reasoner(recipe).solve(problem)
    exact = _toy_exact(args.problem) if recipe.prompt == "toy" else None
    if exact is not None:
        from verifiers.math import is_equivalent

        solution.correct = is_equivalent(solution.answer, str(exact))
    if args.json:
        print(json.dumps(solution.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"[bold]{args.problem}[/]  [dim](recipe {recipe.name}: {recipe.search.method}, n={recipe.search.n})[/]")
    for i, step in enumerate(solution.steps, 1):
        scores = "  ".join(f"{k}={v:.3f}" for k, v in step.scores.items())
        console.print(f"  [dim]{i:>2}[/] [cyan]{step.source:<7}[/] {step.text}" + (f"  [dim]{scores}[/]" if scores else ""))
    verdict = "" if solution.correct is None else ("  [green]correct[/]" if solution.correct else f"  [red]wrong (exact: {exact})[/]")
    console.print(f"answer: [bold]{solution.answer}[/]{verdict}")
    if len(solution.candidates) > 1:
        answers = [c.answer for c in solution.candidates]
        console.print(f"[dim]{len(answers)} candidates: {', '.join(str(a) for a in answers)}[/]")
    table = Table(title=None, box=None, pad_edge=False)
    for col in ("role", "prefill tokens", "generated tokens", "forward passes", "seconds"):
        table.add_column(col, justify="right" if col != "role" else "left")
    for role, r in sorted(solution.stats.roles.items()):
        table.add_row(role, str(r.prefill_tokens), str(r.generated_tokens), str(r.forward_passes), f"{r.wall_s:.2f}")
    console.print(table)
    console.print(f"[dim]wall time {solution.stats.wall_s:.2f}s[/]")
    return 0


def _toy_exact(text: str) -> int | None:
    import re

    from .toy import evaluate_expression

    m = re.fullmatch(r"\s*Compute\s+(.+?)\.?\s*", text)
    try:
        return evaluate_expression(m.group(1)) if m else None
    except ValueError:
        return None


def cmd_eval(args) -> int:
    from evals.runner import evaluate

    overrides = list(args.overrides)
    if args.suite:
        overrides.insert(0, f"suite.name={args.suite}")
    recipe = Recipe.load(args.recipe, overrides)
    summary = evaluate(recipe, args.out, limit=args.limit, batch_size=args.batch_size, progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{recipe.name} on {recipe.suite.name} ({recipe.suite.difficulty}, seed {recipe.suite.seed})")
    for col in ("n", "accuracy", "wall s", "s/problem", *[f"{k} tokens" for k in summary["tokens"]]):
        table.add_column(col, justify="right")
    table.add_row(
        str(summary["n"]), f"{summary['accuracy']:.3f}", f"{summary['wall_s']:.1f}", f"{summary['s_per_problem']:.3f}", *[str(v) for v in summary["tokens"].values()]
    )
    Console().print(table)
    if args.out:
        print(f"wrote {args.out}/results.jsonl and {args.out}/summary.json")
    return 0


def cmd_toy_train(args) -> int:
    from .toy.train import main

    main(args.rest)
    return 0


def cmd_toy_report(args) -> int:
    from .toy.report import main

    main(args.rest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasoner", description="Test-time-scaling reasoning with speculative reasoning.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("solve", help="solve one problem and show the steps, which model wrote each, the answer and the cost")
    p.add_argument("problem", nargs="?", default=EXAMPLE, help=f"the problem text (default: {EXAMPLE!r})")
    _recipe_args(p)
    p.add_argument("--json", action="store_true", help="print the whole solution as JSON")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("eval", help="evaluate a recipe on a suite: progress bar, summary table, results.jsonl + summary.json")
    _recipe_args(p)
    p.add_argument("--suite", help="suite name (default: the recipe's suite.name, toy); suite.seed / suite.difficulty / suite.size via --set")
    p.add_argument("--limit", type=int, help="only the first N problems")
    p.add_argument("--out", help="folder for results.jsonl and summary.json (a re-run continues where it stopped)")
    p.add_argument("--batch-size", type=int, default=16, help="problems solved together (default 16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_eval)

    toy = sub.add_parser("toy", help="the embedded toy world").add_subparsers(dest="toy_command", required=True)
    # their own options are parsed by their own parsers (reasoner toy train --help)
    p = toy.add_parser("train", help="retrain the toy models from scratch, seeded", add_help=False)
    p.set_defaults(func=cmd_toy_train, passthrough=True)
    p = toy.add_parser("report", help="measure the toy models: accuracy by difficulty, judge quality, size, speed", add_help=False)
    p.set_defaults(func=cmd_toy_report, passthrough=True)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as e:  # user errors: one line, no trace
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except ImportError:
        pass
    logging.getLogger("math_verify").setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
