"""What Ray Serve adds to a request, on loopback: the same FastAPI endpoint (a 1 KB JSON body, echoed) behind plain
uvicorn in a process of its own and behind Ray Serve (its HTTP proxy, then a replica actor), side by side; median and
90th-percentile latency of sequential requests, and requests per second with 16 clients at once. The evidence for
docs/scale.md's "Serving on Ray" decision (what the hop costs next to a request's solve); needs Ray Serve
(``pip install 'ray[serve]'``).

    python -m evals.bench_serve_ray --requests 300 --out runs/bench-serve-ray
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BODY = {"model": "toy-cot", "messages": [{"role": "user", "content": "Compute ((17+25)*3-48)*2+5. " * 30}]}


def _app():
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/echo")
    async def echo(body: dict):
        return body

    return app


def _plain(port: int) -> None:
    import uvicorn

    uvicorn.run(_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, client, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if client.post(url, json=BODY).status_code == 200:
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def measure(url: str, requests: int, clients: int = 16) -> dict:
    import httpx

    with httpx.Client(timeout=60) as client:
        _wait(url, client)
        for _ in range(20):  # warm-up
            client.post(url, json=BODY)
        latencies = []
        for _ in range(requests):
            start = time.perf_counter()
            assert client.post(url, json=BODY).status_code == 200
            latencies.append(time.perf_counter() - start)
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda _: client.post(url, json=BODY).status_code, range(requests)))
        concurrent_s = time.perf_counter() - start
    latencies.sort()
    return {
        "median_ms": round(1000 * statistics.median(latencies), 2),
        "p90_ms": round(1000 * latencies[int(0.9 * len(latencies))], 2),
        "requests_per_s_16_clients": round(requests / concurrent_s, 1),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m evals.bench_serve_ray", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--out", default="runs/bench-serve-ray")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    plain = mp.get_context("spawn").Process(target=_plain, args=(port,), daemon=True)
    plain.start()
    try:
        rows = {"plain uvicorn": measure(f"http://127.0.0.1:{port}/v1/echo", args.requests)}
    finally:
        plain.terminate()
        plain.join()

    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        app = _app()

        @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1})
        @serve.ingress(app)
        class Echo:
            pass

        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Echo.bind(), route_prefix="/")
        rows["Ray Serve (proxy + 1 replica)"] = measure(f"http://127.0.0.1:{port}/v1/echo", args.requests)
        serve.shutdown()
    finally:
        ray.shutdown()
    result = {"requests": args.requests, "load_average": os.getloadavg(), "rows": rows}
    (out / "bench_serve_ray.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
