"""Evals on Ray (``reasoner eval --ray``), on a real Ray of 2 CPUs on this machine that the module starts and stops:
2 replicas give the local eval's results; a replica killed mid-run (``ray.kill``) loses and duplicates nothing; a
driver killed with SIGKILL leaves no replica behind, and its rerun resumes without duplicates; a replica whose
models cannot load stops the run with its error; a run without Ray never imports it. Skipped where ray is not
installed (``pip install -e '.[ray]'``)."""

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from evals import scale  # noqa: E402
from evals.runner import evaluate  # noqa: E402
from reasoner.recipe import Recipe  # noqa: E402

SUITE = ["suite.difficulty=ops=1-2,digits=1", "suite.size=16"]
RAY = ["scale.engine=ray", "scale.replicas=2", "scale.num_cpus=1"]
COSTS = ("wall_s", "s_per_problem", "busy_s", "forward_passes")  # shared by the problems solved together
CACHED = ("prefill_tokens", "prefix_cached_tokens")  # how a prompt's tokens split depends on what ran before it


@pytest.fixture(scope="module")
def cluster():
    """A local Ray of 2 CPUs for the module; its address, for drivers in other processes."""
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same suite evaluated locally (one process, no Ray)."""
    out = tmp_path_factory.mktemp("local")
    return evaluate(Recipe.load("toy-cot", SUITE), out, progress=False), out


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def results(out: Path) -> dict:
    """What a run found per problem, less its times and its batch's costs (which depend on the machine's load and
    on how problems were grouped); a prompt's tokens counted whole, however many the replica's prefix cache held."""

    def found(x):
        if isinstance(x, dict):
            kept = {k: found(v) for k, v in x.items() if k not in ("batch", "seconds", "wall_s", *CACHED)}
            return kept | ({"prompt_tokens": sum(x.get(k, 0) for k in CACHED)} if CACHED[0] in x else {})
        return [found(v) for v in x] if isinstance(x, list) else x

    return {r["id"]: found(r) for r in rows_of(out)}


def without_costs(summary: dict) -> dict:
    """A summary less the costs problems solved together share (they depend on how the problems were grouped), with
    prompt tokens counted whole (each replica has its own prefix cache)."""
    per_problem = {k: v for k, v in summary["per_problem"].items() if k not in ("forward_passes", "prefill_tokens")}
    prompts = {r: sum(summary.get(k, {}).get(r, 0) for k in CACHED) for r in summary["prefill_tokens"]}
    kept = {k: v for k, v in summary.items() if k not in COSTS + CACHED}
    return kept | {"per_problem": per_problem, "prompt_tokens": prompts}


def replicas_alive() -> list[str]:
    return [a for a in ray.util.list_named_actors() if a.startswith("reasoner-eval-")]


def wait_for_rows(out: Path, n: int, proc=None, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and (proc is None or proc.poll() is None):
        if (out / "results.jsonl").exists() and len(rows_of(out)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{out} never reached {n} rows")


def cpus_free(want: float = 2.0, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ray.available_resources().get("CPU", 0) >= want:
            return True
        time.sleep(0.2)
    return False


def test_two_replicas_give_the_local_eval_results(cluster, reference, tmp_path):
    summary, local = reference
    on_ray = evaluate(Recipe.load("toy-cot", SUITE + RAY), tmp_path, progress=False)
    assert results(tmp_path) == results(local)
    assert without_costs(on_ray) == without_costs(summary)
    # units of 2 from the queue, solved by the replicas (on a loaded machine the first replica up may solve all 16
    # while the second still loads its models: the queue does not wait for it)
    assert {r["batch"]["size"] for r in rows_of(tmp_path)} == {scale.last_run["unit"]} == {2}
    assert {r["batch"]["replica"] for r in rows_of(tmp_path)} <= {0, 1} and scale.last_run["lost"] == 0
    assert not replicas_alive() and cpus_free()  # the replicas end with the run


def test_a_replica_killed_mid_run_loses_and_duplicates_nothing(cluster, reference, tmp_path, caplog):
    summary, local = reference
    recipe = Recipe.load("toy-cot", SUITE + RAY)
    caplog.set_level(logging.WARNING, logger="evals.scale")
    outcome = {}
    run = threading.Thread(
        target=lambda: outcome.update(summary=evaluate(recipe, tmp_path, batch_size=2, progress=False))
    )
    run.start()
    wait_for_rows(tmp_path, 2)
    # the replica that wrote the first rows took its next unit before they were written; more units are queued
    working = rows_of(tmp_path)[0]["batch"]["replica"]
    victim = next(a for a in replicas_alive() if a.endswith(f"-{working}"))
    ray.kill(ray.get_actor(victim))
    run.join(timeout=600)
    assert "summary" in outcome, "the run did not finish after a replica died"
    ids = [r["id"] for r in rows_of(tmp_path)]
    assert len(ids) == len(set(ids)) == 16  # each problem exactly once
    assert results(tmp_path) == results(local)
    assert without_costs(outcome["summary"]) == without_costs(summary)
    assert "problems are re-queued to the others" in caplog.text  # it died with work in flight
    assert scale.last_run["lost"] == 1 and scale.last_run["requeued"] >= 1
    assert not replicas_alive() and cpus_free()


def test_a_driver_killed_with_sigkill_resumes_without_duplicates(cluster, reference, tmp_path):
    summary, local = reference
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reasoner", "eval", "--recipe", "toy-cot", "--out", str(out), "--no-progress"]
    cmd += [x for p in SUITE + ["scale.num_cpus=1"] for x in ("--set", p)] + ["--batch-size", "2", "--ray", cluster]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(out, 2, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert proc.returncode == -9, "the run finished before it could be killed: " + proc.stderr.read()[-2000:]
    written = rows_of(out)
    assert len(written) < 16
    # the cluster ends a dead driver's replicas: their CPUs are free again for the rerun (or for anyone)
    assert cpus_free(), f"the killed driver's replicas still hold CPUs: {ray.available_resources()}"
    assert not replicas_alive()
    done = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = [r["id"] for r in rows_of(out)]
    assert len(ids) == len(set(ids)) == 16 and rows_of(out)[: len(written)] == written  # resumed, not redone
    assert results(out) == results(local)
    assert without_costs(json.loads((out / "summary.json").read_text())) == without_costs(summary)
    assert json.loads(done.stdout)["n"] == 16


def test_a_replica_whose_models_cannot_load_stops_the_run_with_its_error(cluster, tmp_path):
    recipe = Recipe.load("toy-cot", SUITE + RAY + [f"models.target.path={tmp_path}/no-model"])
    with pytest.raises(ValueError, match="a Ray replica could not start: .*no-model"):  # not: every replica died
        evaluate(recipe, tmp_path / "run", progress=False)
    assert not replicas_alive() and cpus_free()


def test_an_eval_without_ray_never_imports_it(finished_run):
    probe = (
        "import sys; from reasoner.cli import main; "
        "assert main(['eval', '--recipe', 'toy-cot', '--limit', '2', '--no-progress', '--json']) == 0; "
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_vllm_placement_goes_into_the_replicas_engines_and_their_placement_groups():
    """GPU placement is not runnable here (no GPU): what the recipe asks for reaches vLLM's engine_args and Ray's
    bundles."""
    vllm = {"models.target.backend": "vllm", "scale.engine": "ray", "scale.num_cpus": 2}
    mp = Recipe.load("toy-cot", vllm | {"scale.vllm.tensor_parallel_size": 2, "scale.num_gpus": 2})
    assert scale.replica_recipe(mp)["models"]["target"]["engine_args"] == {
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 1,
    }
    assert scale.placement_bundles(mp.scale) is None  # the replica's own processes use its 2 GPUs
    on_ray = Recipe.load(
        "toy-cot",
        vllm
        | {
            "scale.vllm.tensor_parallel_size": 2,
            "scale.vllm.pipeline_parallel_size": 2,
            "scale.vllm.distributed_executor_backend": "ray",
        },
    )
    assert scale.replica_recipe(on_ray)["models"]["target"]["engine_args"]["distributed_executor_backend"] == "ray"
    assert scale.placement_bundles(on_ray.scale) == [{"CPU": 2.0}] + [{"GPU": 1.0}] * 4
