"""Evals on Ray (``reasoner eval --ray``, a recipe's ``scale: {engine: ray}``): replicas, each a Ray actor holding
one ``Reasoner`` (its models loaded once), take problems from one queue on the driver, a unit at a time, so a slow
replica takes fewer and never holds the run. Rows come back to the driver, whose one writer (evals/runner.py)
appends them, so resume, ``summary.json`` and reports work as for a local eval. A replica that dies has its unit
put back at the head of the queue for the others: each problem ends up exactly once in ``results.jsonl``. A row's
``batch.replica`` names the replica that solved it (0 to replicas - 1).

Imported only for a Ray run: every other run never imports ``ray``. docs/scale.md.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from contextlib import contextmanager

from reasoner.core.logs import quiet_libraries
from reasoner.recipe import ROLES, Recipe, ScaleConfig

log = logging.getLogger(__name__)
UNITS_PER_REPLICA = 4  # at least: units small enough that the run's tail (the last unit of each replica) is short
CONNECT_TIMEOUT_S = 5.0  # a head that does not accept a TCP connection in this long is not there
last_run: dict = {}  # what the last ``solve_on_ray`` measured (reasoner bench scale reads it)


def import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(
            "scale.engine=ray (--ray) needs the ray package: pip install 'spec-reasoner[ray]' (or pip install ray)"
        ) from None
    return ray


@contextmanager
def cluster(scale: ScaleConfig):
    """Ray for one run: the Ray this process already runs (a test's, a notebook's), the cluster at ``scale.address``
    joined, or, without an address, a Ray started here and stopped after the run. An address nobody answers at is a
    ``ValueError`` at once, before ``ray`` is imported (Ray itself would retry for minutes)."""
    if scale.address not in (None, "auto", "local"):
        _reachable(scale.address)
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    start = time.perf_counter()
    try:
        if scale.address is None:
            ray.init(include_dashboard=False)
        else:
            ray.init(address=scale.address)
    except ConnectionError as e:
        raise ValueError(
            f"cannot join the Ray cluster at {scale.address} ({e}): start one (`ray start --head`) or leave the "
            "address out for a Ray started here"
        ) from None
    last_run["init_s"] = round(time.perf_counter() - start, 3)
    try:
        if scale.address is None:
            _fits(ray.cluster_resources(), scale)
        yield
    finally:
        ray.shutdown()


def _reachable(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ValueError(
            f"no Ray cluster answers at {address} ({e.strerror or e}): start its head there (`ray start --head "
            f"--port {port}`) or leave the address out for a Ray started here"
        ) from None


def _fits(resources: dict, scale: ScaleConfig) -> None:
    """A replica of ``scale`` fits the Ray started here (else its actor would wait forever); fewer than all of
    them fitting at once is only a warning: the queue runs on those that start."""
    for name, each in (("CPU", scale.num_cpus), ("GPU", scale.num_gpus)):
        have = resources.get(name, 0.0)
        if each > have:
            raise ValueError(
                f"a replica asks for scale.num_{name.lower()}s={each:g} and this machine's Ray has {have:g} "
                f"{name}s: lower scale.num_{name.lower()}s or join a cluster that has them (--ray ADDRESS)"
            )
        if each and scale.replicas * each > have:
            log.warning(
                "%d replicas of %g %ss need %g; this machine's Ray has %g: %d of them run",
                scale.replicas,
                each,
                name,
                scale.replicas * each,
                have,
                int(have // each),
            )


def replica_recipe(recipe: Recipe) -> dict:
    """The recipe a replica builds its ``Reasoner`` from: ``scale.vllm`` merged into every vllm model's
    engine_args."""
    data = recipe.model_dump()
    placement = recipe.scale.vllm
    for role in ROLES:
        model = data["models"][role]
        if placement is not None and model is not None and model["backend"] == "vllm":
            model["engine_args"] = {**model["engine_args"], **placement.engine_args()}
    return data


def placement_bundles(scale: ScaleConfig) -> list[dict] | None:
    """With vLLM's Ray executor, one replica's placement group: the actor's own bundle, then one GPU per vLLM
    worker (vLLM finds the group it is created in and places its workers in the GPU bundles)."""
    placement = scale.vllm
    if placement is None or placement.distributed_executor_backend != "ray":
        return None
    own = {"CPU": scale.num_cpus} | ({"GPU": scale.num_gpus} if scale.num_gpus else {})
    return [own] + [{"GPU": 1.0} for _ in range(placement.world_size)]


def actor_options(scale: ScaleConfig, name: str, groups: list) -> dict:
    """``Replica.options(...)``: its resources, or its bundle of a placement group made for it (appended to
    ``groups``, to be removed after the run); no restarts (a replica that dies is replaced by the others taking its
    work)."""
    options = {"name": name, "num_cpus": scale.num_cpus, "num_gpus": scale.num_gpus, "max_restarts": 0}
    bundles = placement_bundles(scale)
    if bundles is None:
        return options
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group(bundles, strategy="PACK", name=name)
    groups.append(group)
    strategy = PlacementGroupSchedulingStrategy(
        group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
    )
    return options | {"scheduling_strategy": strategy}


class Replica:
    """One replica: a ``Reasoner`` with its models, loaded once, solving the units the driver hands it.
    ``solve_batch`` is evals.runner's, passed in (the runner imports this module, not the other way round)."""

    def __init__(self, recipe: dict, threads: int, solve_batch):
        import torch

        torch.set_num_threads(threads)
        quiet_libraries()
        from reasoner.api import Reasoner

        self.reasoner = Reasoner(Recipe.validated(recipe))
        self.solve_batch = solve_batch

    def ready(self) -> int:
        return os.getpid()

    def solve(self, batch) -> tuple[list[dict], float, float]:
        """The unit's rows, the seconds this took here (the rest of its round trip is Ray's) and the CPU seconds
        this process got meanwhile (on a shared machine, less than the seconds times its threads)."""
        start, cpu = time.perf_counter(), time.process_time()
        rows = self.solve_batch(self.reasoner, batch)
        return rows, time.perf_counter() - start, time.process_time() - cpu


def solve_on_ray(recipe: Recipe, todo: list, batch_size: int, solve_batch):
    """Rows as units finish, from ``recipe.scale.replicas`` replicas on the Ray this process is connected to
    (``cluster``). A unit is up to ``batch_size`` problems, fewer when that leaves a replica under
    ``UNITS_PER_REPLICA`` of them. A replica gets work once it has loaded its models (one that never starts takes
    none) and its next unit as soon as it hands one back. The replicas are killed when the run ends, however it
    ends."""
    ray = import_ray()
    from ray.exceptions import RayActorError

    scale = recipe.scale
    size = max(1, min(batch_size, math.ceil(len(todo) / (UNITS_PER_REPLICA * scale.replicas))))
    queue = deque(todo[i : i + size] for i in range(0, len(todo), size))
    run = f"reasoner-eval-{uuid.uuid4().hex[:8]}"
    remote = ray.remote(Replica)
    data = replica_recipe(recipe)
    start, groups = time.perf_counter(), []
    actors = [
        remote.options(**actor_options(scale, f"{run}-{i}", groups)).remote(data, scale.threads, solve_batch)
        for i in range(scale.replicas)
    ]
    starting = {actor.ready.remote(): i for i, actor in enumerate(actors)}
    working: dict = {}  # unit's ref -> (replica, unit, when it was handed out)
    idle: list[int] = []
    stats = {"replicas": scale.replicas, "unit": size, "lost": 0, "requeued": 0, "started_s": []}
    stats |= {"units": 0, "busy_s": 0.0, "cpu_s": 0.0, "overhead_s": 0.0}  # replicas solving; round trips less that
    stats["finished"] = []  # (seconds since the start, problems, replica, its seconds) of each unit, as it came back
    last_run.update(stats)

    def hand_out(i: int) -> None:
        unit = queue.popleft()
        working[actors[i].solve.remote(unit)] = (i, unit, time.perf_counter())

    try:
        while queue or working:
            while idle and queue:
                hand_out(idle.pop())
            if not starting and not working:
                raise ConnectionError(
                    f"every Ray replica died ({stats['lost']} of {scale.replicas}), {sum(map(len, queue))} problems "
                    "unsolved: rerun the same command to resume where it stopped"
                )
            ref = ray.wait([*starting, *working], num_returns=1)[0][0]
            if ref in starting:
                i = starting.pop(ref)
                try:
                    ray.get(ref)
                except RayActorError as e:
                    if e.actor_init_failed:  # its models did not load: nor would any other replica's
                        raise ValueError(f"a Ray replica could not start: {_last_line(e)}") from None
                    stats["lost"] += 1
                    log.warning("Ray replica %d died while starting (%s)", i, _last_line(e))
                    continue
                stats["started_s"].append(round(time.perf_counter() - start, 3))
                idle.append(i)
                continue
            i, unit, sent = working.pop(ref)
            try:
                rows, busy, cpu = ray.get(ref)
            except RayActorError as e:
                queue.appendleft(unit)  # its problems go to the next replica free
                stats["lost"] += 1
                stats["requeued"] += len(unit)
                log.warning(
                    "Ray replica %d died (%s): its %d problems are re-queued to the others",
                    i,
                    _last_line(e),
                    len(unit),
                )
                continue
            stats["units"] += 1
            stats["finished"].append((round(time.perf_counter() - start, 3), len(unit), i, round(busy, 3)))
            stats["busy_s"] += busy
            stats["cpu_s"] += cpu
            stats["overhead_s"] += time.perf_counter() - sent - busy
            if queue:
                hand_out(i)  # before the rows are written: the replica does not wait for the driver's disk
            else:
                idle.append(i)
            for row in rows:
                if "batch" in row:  # which replica solved it (a problem that could not be attempted has no batch)
                    row["batch"]["replica"] = i
            yield from rows
    finally:
        for actor in actors:
            ray.kill(actor)
        for group in groups:
            ray.util.remove_placement_group(group)
        stats.update({k: round(stats[k], 3) for k in ("busy_s", "cpu_s", "overhead_s")})
        last_run.update(stats, solve_s=round(time.perf_counter() - start, 3))


def _last_line(error: Exception) -> str:
    """The last line of a Ray error (its cause: Ray's message runs over many lines of traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
