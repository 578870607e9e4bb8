"""The eval runner: solve a suite with a recipe, one JSON line per problem, then a summary.

Crash-safe and resumable: every finished problem is appended to ``results.jsonl`` as one line, flushed and
fsynced, by one writer (the main process). A run pointed at an ``--out`` folder that holds results of the same
recipe and suite skips the problems already there (a line cut short by a crash is dropped and redone) and
summarises every line, so a killed run, restarted, ends with each problem exactly once.

One writer per folder: an eval holds an exclusive lock on ``eval.lock`` while it runs, and a second eval into the
same folder stops at once, naming the holder's pid. ``run.json`` is the run's identity: the recipe with its
overrides and the sha256 of the data file's bytes; results continue only a run with the same identity, so neither
a changed recipe nor a file changed under the same path mixes its problems into earlier results.

Problems in flight: batches of ``batch_size`` problems. With one worker each batch is streamed
(``Reasoner.solve_stream``): a finished problem is written at once, and its row carries the span of the run that
ended with it (``batch``: wall time, forward passes, busy time; ``size`` 1); the spans add up to the run. With
``workers > 1`` batches go to worker processes, each with its own models (and ``cpu_count / workers`` torch
threads), and each row carries its batch's costs (``size``: the batch's problems); the workers die
with the main process.

On Ray (the recipe's ``scale.engine: ray``, ``reasoner eval --ray``), units of problems go to replicas, each a
Ray actor with its own models, from one queue (``evals/scale.py``, imported only then); their rows come back to this
process's one writer, so everything above holds for them too. Where a run solves (``scale``) is not part of its
identity: a run started locally can be resumed on Ray and the other way round.

Problems with tests (code suites) are checked in the sandbox (``verifiers.code``): every candidate, for pass@k.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from reasoner.api import Reasoner
from reasoner.core.errors import PromptTooLong
from reasoner.core.logs import quiet_libraries
from reasoner.core.types import Problem
from reasoner.recipe import Recipe
from verifiers.code import check_many, extract_code
from verifiers.math import is_equivalent

from .metrics import sample_metrics, speedup, vote_correct
from .suites import load_suite

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 10.0  # per candidate program
LOCK_FILE = "eval.lock"  # flock'ed by the one eval writing the folder
RUN_FILE = "run.json"  # the run's identity: the recipe with its overrides and the sha256 of the data file


def evaluate(
    recipe: Recipe,
    out: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    workers: int = 1,
    baseline: str | Path | None = None,
    window: bool = False,
) -> dict:
    """Run ``recipe`` on its suite (``recipe.suite``); returns the summary (also written to ``out``).
    ``baseline``: a finished run's folder; the summary then holds the speedup against it. ``window``: keep
    ``batch_size`` problems in flight (a sliding window, one worker) instead of batches. Bad arguments, data or
    folders are a ``ValueError`` raised before anything is written."""
    for name, value in (("limit", limit), ("batch_size", batch_size), ("workers", workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if recipe.scale.engine == "ray" and (workers > 1 or window):
        raise ValueError(
            "--workers and the sliding window are for a local run: on Ray set the replicas (scale.replicas) instead"
        )
    base = _read_summary(baseline) if baseline else None
    problems = load_suite(recipe.suite)  # bad data fails here, before any folder is made
    identity = {"recipe": recipe.model_dump(mode="json"), "data_sha256": problems.sha256}
    if limit is not None:
        problems = problems[:limit]
    with _cluster(recipe):  # Ray joined (or started) before any folder is made: a bad address writes nothing
        if not out:
            return _run(recipe, problems, None, {}, batch_size, progress, workers, baseline, base, window)
        out = Path(out)
        _make_folder(out)
        with _run_lock(out):
            _check_same_run(out, recipe, identity)
            (out / "recipe.yaml").write_text(recipe.to_yaml())
            (out / RUN_FILE).write_text(json.dumps(identity, indent=1) + "\n")
            done = read_results(out / "results.jsonl", repair=True)
            return _run(recipe, problems, out, done, batch_size, progress, workers, baseline, base, window)


@contextmanager
def _cluster(recipe: Recipe):
    """The Ray cluster of a Ray run for as long as it lasts (``evals/scale.py``); nothing, and no ``ray`` import,
    for a local one."""
    if recipe.scale.engine != "ray":
        yield
        return
    from .scale import cluster

    with cluster(recipe.scale):
        yield


def _run(recipe, problems, out, done, batch_size, progress, workers, baseline, base, window=False) -> dict:
    """Solve what is not ``done`` yet (appending each row to ``out/results.jsonl``), then summarise every row."""
    todo = [p for p in problems if p.id not in done]
    rows = [done[p.id] for p in problems if p.id in done]
    if todo:
        sink = open(out / "results.jsonl", "a") if out else None
        bar = _progress(len(problems), len(rows), enabled=progress)
        try:
            for row in _solve(recipe, todo, batch_size, workers, window):
                rows.append(row)
                if sink:
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                    os.fsync(sink.fileno())
                bar.update(1)
                bar.set_postfix(accuracy=f"{sum(bool(r['correct']) for r in rows) / len(rows):.3f}")
        finally:
            bar.close()
            if sink:
                sink.close()
    summary = summarize(rows, recipe)
    if base:
        summary["speedup"] = speedup(summary, base) | {"baseline_dir": str(baseline)}
    if out:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ----------------------------------------------------------------------------------------------------------
# solving (in this process or in workers)

_worker: dict = {}


def _solve(recipe: Recipe, todo: list[Problem], batch_size: int, workers: int, window: bool = False):
    """Rows as problems finish: batches of ``batch_size`` problems, each batch streamed (a row is written when its
    problem ends), in this process with one worker, across worker processes with several; with ``window``, one
    stream with ``batch_size`` problems in flight.

    Batches by default, not the window: on this CPU the window ran target CoT at 0.64-0.77x and every speculative
    configuration slower too (docs/benchmarks.md, "The batch barrier"): prompts admitted one by one into a running
    batch cost more than the tail of a batch does.

    On Ray (``recipe.scale``), units of problems go to the replicas from one queue (``evals/scale.py``)."""
    if recipe.scale.engine == "ray":
        from .scale import solve_on_ray

        yield from solve_on_ray(recipe, todo, batch_size, solve_batch)
        return
    if workers == 1 or len(todo) <= batch_size:
        reasoner, step = Reasoner(recipe), len(todo) if window else batch_size
        for start in range(0, len(todo), step):
            batch = todo[start : start + step]
            for i, solution, span in reasoner.solve_stream(batch, window=min(batch_size, len(batch))):
                if isinstance(solution, PromptTooLong):
                    yield error_row(batch[i], solution)
                else:
                    yield scored_row(solution, {"size": 1, "in_flight": min(batch_size, len(batch))} | _costs(span))
        return
    import multiprocessing as mp

    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    with mp.get_context("spawn").Pool(
        min(workers, len(batches)), initializer=_init_worker, initargs=(recipe.model_dump(), threads)
    ) as pool:
        for rows in pool.imap_unordered(_solve_in_worker, batches):
            yield from rows


def _init_worker(recipe: dict, threads: int) -> None:
    import ctypes
    import signal

    import torch

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the main process
    torch.set_num_threads(threads)

    quiet_libraries()
    _worker["reasoner"] = Reasoner(Recipe.validated(recipe))


def _solve_in_worker(batch: list[Problem]) -> list[dict]:
    return solve_batch(_worker["reasoner"], batch)


def solve_batch(reasoner, batch: list[Problem]) -> list[dict]:
    """Solve a batch together and score it: one result row per problem. A prompt too long for a model fails its
    batch; the batch is then solved problem by problem, and each problem that fails alone is a row with its
    ``error`` (the run goes on)."""
    try:
        solutions = reasoner.solve_many(batch)
    except PromptTooLong as e:
        if len(batch) > 1:
            return [row for problem in batch for row in solve_batch(reasoner, [problem])]
        return [error_row(batch[0], e)]
    shared = {"size": len(batch)} | _costs(reasoner.last_run)
    return [scored_row(s, shared) for s in solutions]


def _costs(run) -> dict:
    """The costs that problems solved together share: wall time, forward passes, each model's busy time."""
    return {
        "wall_s": round(run.wall_s, 4),
        "forward_passes": {k: r.forward_passes for k, r in run.roles.items()},
        "busy_s": {k: round(r.wall_s, 4) for k, r in run.roles.items()},  # each model computing
        # score forwards that rode in a decode forward instead (``scheduler.mix_scores``)
        **({"score_forwards_saved": int(saved)} if (saved := run.counters.get("score_forwards_saved")) else {}),
    }


def scored_row(solution, shared: dict) -> dict:
    """A solution's result row, checked against its reference (code in the sandbox, math by math-verify)."""
    row = solution.to_dict() | {"batch": shared}
    if solution.problem.tests is not None:
        score_code(row, solution.problem)
    else:
        score_math(row, solution.problem)
    return row


def error_row(problem: Problem, error: Exception) -> dict:
    """The result of a problem that could not be attempted: what it was, and why (no answer, not correct, no cost)."""
    return {
        "id": problem.id,
        "problem": problem.text,
        "reference": problem.answer,
        "answer": None,
        "correct": False,
        "error": str(error),
    }


def score_math(row: dict, problem: Problem) -> None:
    """Sample counts for pass@k, and the majority / weighted votes over all candidates."""

    candidates = row["candidates"]
    row["n_samples"] = len(candidates)
    row["n_correct"] = (
        sum(is_equivalent(c["answer"], problem.answer) for c in candidates) if problem.answer is not None else 0
    )
    if len(candidates) > 1:
        row["maj_correct"] = vote_correct(candidates, problem.answer, "majority")
        if any(c.get("score") is not None for c in candidates):
            row["weighted_correct"] = vote_correct(candidates, problem.answer, "weighted")


def score_code(row: dict, problem: Problem) -> None:
    """Extract each candidate's program and run the problem's tests on it in the sandbox; the answer is the
    chosen candidate's program, correct when it passes."""

    prompt, entry = problem.meta.get("prompt"), problem.meta.get("entry_point")
    texts = ["\n\n".join(s["text"] for s in c["steps"]) for c in row["candidates"]]
    programs = [extract_code(t, prompt, entry) for t in texts]
    start = time.perf_counter()
    results = check_many([(p, problem.tests) for p in programs if p is not None], CHECK_TIMEOUT_S, workers=4)
    verdicts = iter(results)
    for c, program in zip(row["candidates"], programs):
        r = next(verdicts) if program is not None else None
        c["program"], c["passed"], c["reason"] = (
            program,
            bool(r and r.passed),
            r.reason if r else "no code in the answer",
        )
    chosen = next(
        (c for c, t in zip(row["candidates"], texts) if t == row["text"]),
        row["candidates"][0] if row["candidates"] else None,
    )
    row["answer"] = chosen["program"] if chosen else None
    row["correct"] = bool(chosen and chosen["passed"])
    row["reason"] = chosen["reason"] if chosen else "no candidates"
    row["check_s"] = round(time.perf_counter() - start, 4)
    row["n_samples"] = len(row["candidates"])
    row["n_correct"] = sum(c["passed"] for c in row["candidates"])


# ----------------------------------------------------------------------------------------------------------
# results on disk


def read_results(path: Path, repair: bool = False) -> dict[str, dict]:
    """Result rows by problem id (first occurrence wins). With ``repair``, a last line cut short by a crash is
    cut off the file, so appended rows start on a line of their own."""
    rows: dict[str, dict] = {}
    if not path.is_file():
        return rows
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        log.warning("%s ends in a line cut short (a run was interrupted while writing it); it will be redone", path)
        if repair:
            with open(path, "r+b") as f:
                f.truncate(complete)
    for i, line in enumerate(data[:complete].decode("utf-8", "replace").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not valid JSON; that problem will be redone", path, i + 1)
            continue
        rows.setdefault(row["id"], row)
    return rows


def _read_summary(folder: str | Path) -> dict:
    path = Path(folder) / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(
            f"baseline {folder}: cannot read {path} ({e}): point --baseline at a finished run's --out folder"
        ) from None


def _make_folder(out: Path) -> None:
    """``out`` as a folder this process can write to, or a ``ValueError`` saying why not (before anything is
    written)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: give a folder for results.jsonl and summary.json")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"cannot make the --out folder {out} ({e.strerror or e}): give a folder you can write to"
        ) from None


@contextmanager
def _run_lock(out: Path):
    """One writer per run folder: an exclusive ``flock`` on ``out/eval.lock``, held while the run lasts (the kernel
    drops it when the process ends, however it ends). The file holds the holder's pid while it runs, so a second eval
    can say whom it waits for; it is emptied again when the run ends (and never removed: removing a lock file lets
    two processes lock two different files)."""
    path = out / LOCK_FILE
    try:
        f = open(path, "a+")
    except OSError as e:
        raise ValueError(f"--out {out} is not writable ({e.strerror or e}): give a folder you can write to") from None
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"--out {out} is in use by another eval (pid {_holder(path)}): wait for it to end or give another "
                "--out folder"
            ) from None
        try:
            f.truncate(0)
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield
        finally:
            f.truncate(0)
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()


def _holder(path: Path) -> str:
    """The pid in a held lock file (its holder writes it right after locking: wait a moment for it)."""
    for _ in range(20):
        try:
            pid = path.read_text().strip()
        except OSError:
            pid = ""
        if pid:
            return pid
        time.sleep(0.05)
    return "unknown"


def _check_same_run(out: Path, recipe: Recipe, identity: dict) -> None:
    """Results in ``out`` continue only a run of the same recipe (overrides applied) on the same data: the same
    file path and the same bytes (``run.json`` holds their sha256; folders of older versions have only
    ``recipe.yaml``)."""
    if not (out / "results.jsonl").is_file():
        return
    run, saved = out / RUN_FILE, out / "recipe.yaml"
    if run.is_file():
        try:
            theirs = json.loads(run.read_text())
            their_recipe = Recipe.validated(theirs["recipe"]).model_dump()
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{run} cannot be read ({e}): use another --out folder") from None
        their_data = theirs.get("data_sha256")
    elif saved.is_file():
        their_recipe, their_data = Recipe.load(saved).model_dump(), identity["data_sha256"]
    else:
        return
    mine = recipe.model_dump(exclude={"scale"})  # where a run solves is not what it solves
    their_recipe.pop("scale", None)
    if mine != their_recipe:
        changed = [k for k in mine if mine[k] != their_recipe.get(k)]
        raise ValueError(
            f"{out} holds results of a different recipe (sections differ: {', '.join(changed)}): use another "
            "--out folder"
        )
    if their_data != identity["data_sha256"]:
        raise ValueError(
            f"{out} holds results of {recipe.suite.data} as it was (sha256 {str(their_data)[:12]}), and the file "
            f"has changed since (sha256 {str(identity['data_sha256'])[:12]}): use another --out folder"
        )


def summarize(rows: list[dict], recipe: Recipe) -> dict:
    """Accuracy, sample metrics and cost over result lines (the one place the summary is built). Wall time and
    forward passes are each batch's, shared evenly; every ``Stats`` counter of the solutions is summed. Problems that
    could not be attempted (rows with an ``error``) count as not solved in accuracy and pass@k, as they would in a
    benchmark, and are left out of the costs (nothing was spent on them); ``errors`` says how many there are."""

    n = len(rows)
    correct = sum(bool(r["correct"]) for r in rows)
    failed = sum(1 for r in rows if r.get("error"))
    rows = [r for r in rows if not r.get("error")]  # the problems that ran: their costs
    ran = len(rows)
    tokens, prefill, forwards, cached = defaultdict(int), defaultdict(int), defaultdict(float), defaultdict(int)
    busy = defaultdict(float)
    wall = saved = 0.0
    for r in rows:
        for role, s in r["stats"]["roles"].items():
            tokens[role] += s["generated_tokens"]
            prefill[role] += s["prefill_tokens"]
            cached[role] += s.get("prefix_cached_tokens", 0)  # served by a prefix KV cache, not in prefill_tokens
        wall += r["batch"]["wall_s"] / r["batch"]["size"]
        for role, f in r["batch"]["forward_passes"].items():
            forwards[role] += f / r["batch"]["size"]
        for role, b in r["batch"].get("busy_s", {}).items():
            busy[role] += b / r["batch"]["size"]
        saved += r["batch"].get("score_forwards_saved", 0) / r["batch"]["size"]
    counters = defaultdict(float)
    for r in rows:
        for k, v in r["stats"].get("counters", {}).items():
            counters[k] += v
    per = lambda d: {k: round(v / ran, 2) for k, v in sorted(d.items())} if ran else {}  # noqa: E731
    return {
        "recipe": recipe.name,
        "suite": recipe.suite.model_dump(),
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "errors": failed,
        "metrics": sample_metrics(rows, failed=failed),
        "wall_s": round(wall, 3),
        "s_per_problem": round(wall / ran, 4) if ran else 0.0,
        "tokens": dict(sorted(tokens.items())),
        "prefill_tokens": dict(sorted(prefill.items())),
        **({"prefix_cached_tokens": dict(sorted(cached.items()))} if any(cached.values()) else {}),
        "forward_passes": {k: round(v) for k, v in sorted(forwards.items())},
        **({"score_forwards_saved": round(saved)} if saved else {}),
        "busy_s": {k: round(v, 3) for k, v in sorted(busy.items())},
        "per_problem": {"tokens": per(tokens), "prefill_tokens": per(prefill), "forward_passes": per(forwards)},
        "counters": {k: round(v, 6) for k, v in sorted(counters.items())},
        **_kv_summary(rows),
        **{k: int(counters[k]) for k in ("steps_accepted", "steps_total") if k in counters},  # step speculation
    }


def _kv_summary(rows: list[dict]) -> dict:
    """KV retained by a tree search (``search/kv.py``), where it was measured: the per-problem peak and mean,
    each averaged over the problems."""
    kv = [r["stats"]["counters"] for r in rows if "kv_tokens_peak" in r["stats"].get("counters", {})]
    if not kv:
        return {}
    keys = ("kv_tokens_peak", "kv_tokens_mean") + tuple(
        k for k in ("kv_bytes_peak", "kv_bytes_mean") if all(k in c for c in kv)
    )
    return {k: round(sum(c[k] for c in kv) / len(kv), 2) for k in keys}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="eval", unit="problem", disable=not enabled, dynamic_ncols=True)
