"""``reasoner bench serve``: per-request SLOs under load. The SLO attainment and goodput of ``reasoner serve`` when
a freed running slot goes to the waiting request with the earliest deadline (``--slo-order slo``), against first
come, first served (``fifo``), on the same seeded arrival trace.

    reasoner bench serve --recipe toy-likelihood --requests 120 --rate 6 --out runs/bench-serve
    reasoner bench serve --recipe toy-cot,toy-cot-specdec,toy-cot-specdec-tree,toy-cot-adaserve --orders slo

For each order a server is started (``reasoner serve`` in a process of its own, on a free loopback port) with two
SLO classes, ``tight`` and ``loose`` (a TPOT each, in ms a completion token), and ``--max-running`` slots. A client
sends ``--requests`` chat completions, one toy problem each, at Poisson arrivals (``--rate`` a second, seeded),
``--tight-share`` of them in the tight class. For each request it records the latency from sending to the last
byte, the completion tokens, and TPOT = latency / tokens, which is how the server counts it (from arrival). A
request met its SLO if its TPOT is at most its class's. Reported per order and class: attainment; goodput (the
completion tokens a second of the requests that met their SLO, AdaServe's measure); throughput; and p50 / p90
latency. Writes ``bench_serve.json`` and ``bench_serve.md``.

Several comma-separated recipes are served one after another on the same trace: e.g. no token speculation, a
fixed chain, a fixed tree, and AdaServe's SLO-customized trees (``token_speculation.slo_trees``, Li et al. 2025:
each request's tree sized to its TPOT inside the verification batch). ``--tight-threshold`` gives the tight class
its own step-speculation threshold where a recipe speculates steps.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from reasoner.toy import generate_problems

from .args import count


def add_arguments(p) -> None:
    p.add_argument(
        "--recipe",
        default="toy-likelihood",
        help="the served recipe, or several comma-separated, each served on the same trace (default toy-likelihood)",
    )
    p.add_argument("--requests", type=count(1, 100_000, "requests in the trace"), default=120, help="default 120")
    p.add_argument("--rate", type=float, default=6.0, help="mean arrivals a second (Poisson; default 6)")
    p.add_argument("--tight-share", type=float, default=0.3, help="share of requests in the tight class (0.3)")
    p.add_argument("--tight-ms", type=float, default=40.0, help="the tight class's TPOT in ms (default 40)")
    p.add_argument("--loose-ms", type=float, default=400.0, help="the loose class's TPOT in ms (default 400)")
    p.add_argument(
        "--tight-threshold",
        type=float,
        default=None,
        help="the tight class's step-speculation threshold (default: the recipe's)",
    )
    p.add_argument(
        "--max-running", type=count(1, 4096, "running slots"), default=4, help="the server's running slots (default 4)"
    )
    p.add_argument("--orders", default="slo,fifo", help="comma-separated admission orders (default slo,fifo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrivals, classes and problems")
    p.add_argument("--out", default="runs/bench-serve", help="folder for bench_serve.json and bench_serve.md")


def main(args) -> dict:
    orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    bad = [o for o in orders if o not in ("slo", "fifo")]
    if bad or not orders:
        raise ValueError(f"--orders {args.orders!r}: use slo, fifo or both (comma-separated)")
    if not 0 <= args.tight_share <= 1 or args.rate <= 0 or args.tight_ms <= 0 or args.loose_ms <= 0:
        raise ValueError("--tight-share must be in [0, 1], and --rate, --tight-ms, --loose-ms above 0")
    recipes = [r.strip() for r in args.recipe.split(",") if r.strip()]
    if not recipes:
        raise ValueError(f"--recipe {args.recipe!r}: give a recipe name or path (several: comma-separated)")
    trace = make_trace(args.requests, args.rate, args.tight_share, args.seed)
    runs = {}
    for recipe in recipes:
        for order in orders:
            run = order if len(recipes) == 1 else f"{recipe} {order}"
            with Server(args, order, recipe) as server:
                runs[run] = asyncio.run(replay(server, trace))
            print(f"{run}: " + ", ".join(f"{k} {v}" for k, v in summarize(runs[run], args)["all"].items()), flush=True)
    summary = {
        "recipe": args.recipe,
        "requests": args.requests,
        "rate": args.rate,
        "tight_share": args.tight_share,
        "slo_ms": {"tight": args.tight_ms, "loose": args.loose_ms},
        "tight_threshold": args.tight_threshold,
        "max_running": args.max_running,
        "seed": args.seed,
        "orders": {order: summarize(rows, args) for order, rows in runs.items()},
        "rows": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_serve.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "bench_serve.md").write_text(table(summary))
    print(table(summary))
    return summary


def make_trace(n: int, rate: float, tight_share: float, seed: int) -> list[dict]:
    """The requests: arrival second, class and problem, the same for every order."""
    rng = random.Random(seed)
    problems = generate_problems(n, seed=seed + 1)
    t, trace = 0.0, []
    for p in problems:
        t += rng.expovariate(rate)
        trace.append({"at": t, "slo": "tight" if rng.random() < tight_share else "loose", "question": p.question})
    return trace


class Server:
    """``reasoner serve`` in a process of its own on a free loopback port, for one recipe and admission order."""

    def __init__(self, args, order: str, recipe: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        tight = f"tight={args.tight_ms:g}" + (f":{args.tight_threshold:g}" if args.tight_threshold is not None else "")
        self.command = [
            sys.executable, "-m", "reasoner", "serve", "--recipe", recipe, "--port", str(self.port),
            "--max-running", str(args.max_running), "--max-queue", str(max(64, args.requests)),
            "--slo-class", tight, "--slo-class", f"loose={args.loose_ms:g}", "--slo-order", order,
        ]  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        import httpx

        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"reasoner serve exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    self.model = httpx.get(self.url + "/v1/models", timeout=5).json()["data"][0]["id"]
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.process.kill()
        raise RuntimeError("reasoner serve did not answer /health within 300 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def replay(server: Server, trace: list[dict]) -> list[dict]:
    """Send the trace (after two warm-up requests) and record each request's outcome."""
    import httpx

    async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:

        async def one(item: dict, start: float) -> dict:
            await asyncio.sleep(max(0.0, start + item["at"] - time.perf_counter()))
            sent = time.perf_counter()
            body = {"model": server.model, "messages": [{"role": "user", "content": item["question"]}]}
            r = await client.post("/v1/chat/completions", json=body | {"slo": item["slo"]})
            latency = time.perf_counter() - sent
            tokens = r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0
            return {"slo": item["slo"], "status": r.status_code, "latency_s": latency, "tokens": tokens}

        warm = {"model": server.model, "messages": [{"role": "user", "content": trace[0]["question"]}]}
        await asyncio.gather(*(client.post("/v1/chat/completions", json=warm) for _ in range(2)))
        start = time.perf_counter()
        rows = await asyncio.gather(*(one(item, start) for item in trace))
        wall = time.perf_counter() - start
    for row in rows:
        row["wall_s"] = wall
    return list(rows)


def summarize(rows: list[dict], args) -> dict:
    slo_ms = {"tight": args.tight_ms, "loose": args.loose_ms}
    wall = rows[0]["wall_s"] if rows else 0.0
    out = {}
    for name in ("tight", "loose", "all"):
        mine = [r for r in rows if name == "all" or r["slo"] == name]
        if not mine:
            continue
        ok = [r for r in mine if r["status"] == 200 and r["tokens"]]
        met = [r for r in ok if 1000 * r["latency_s"] / r["tokens"] <= slo_ms[r["slo"]]]
        latencies = sorted(r["latency_s"] for r in ok) or [0.0]
        out[name] = {
            "requests": len(mine),
            "errors": len(mine) - len(ok),
            "attainment": round(len(met) / len(mine), 3),
            "goodput_tok_s": round(sum(r["tokens"] for r in met) / wall, 1) if wall else 0.0,
            "throughput_tok_s": round(sum(r["tokens"] for r in ok) / wall, 1) if wall else 0.0,
            "p50_s": round(statistics.median(latencies), 2),
            "p90_s": round(latencies[int(0.9 * (len(latencies) - 1))], 2),
        }
    return out


def table(s: dict) -> str:
    lines = [
        f"{s['requests']} requests of {s['recipe']} at {s['rate']:g}/s (Poisson, seed {s['seed']}), "
        f"{100 * s['tight_share']:.0f} % tight (TPOT {s['slo_ms']['tight']:g} ms) and the rest loose "
        f"({s['slo_ms']['loose']:g} ms), {s['max_running']} running slots\n",
        "| run | class | requests | attainment | goodput (tok/s) | throughput (tok/s) | p50 latency (s) | p90 (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for order, classes in s["orders"].items():
        for name, c in classes.items():
            lines.append(
                f"| {order} | {name} | {c['requests']} | {100 * c['attainment']:.1f} % | {c['goodput_tok_s']} | "
                f"{c['throughput_tok_s']} | {c['p50_s']} | {c['p90_s']} |"
            )
    return "\n".join(lines) + "\n"
