"""Time from `dpctl up` to every rank ready, against a bare Ray script that creates the same objects in bulk.

    uv run python bench/launch.py [--runs 7]

Starts its own local cluster (head + 4 worker nodes of 4 simulated GPUs, in a temporary DPCTL_HOME),
then alternates two whole processes: `dpctl up -o json` of dp 8, TP 2, demo engine with init_seconds 0,
and a bare script that creates the same 8 placement groups (bundles pinned to the same nodes) and the
same actors - one engine per rank on its control bundle and one worker per device bundle - all at once,
then waits for every one of them. Between runs, dpctl's deployment is removed (not timed). Also reports
readiness latency: an engine's "ready" event to the CLI seeing it, from `up -o json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BARE = r"""
import json, sys, time
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

plan = json.load(open(sys.argv[2]))
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0, num_gpus=1)
class Worker:
    def ready(self):
        return ray.get_runtime_context().get_accelerator_ids()["GPU"]

@ray.remote(num_cpus=1)
class Engine:
    def ready(self):
        return True

groups, actors = [], []
for rank in plan["ranks"]:
    bundles = rank["bundles"]
    pg = placement_group([b["resources"] for b in bundles], strategy=rank["strategy"],
                         bundle_label_selector=[{"ray.io/node-id": b["node"]} for b in bundles])
    groups.append(pg)
for pg, rank in zip(groups, plan["ranks"]):
    n = len(rank["bundles"]) - 1
    actors.append(Engine.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, n)).remote())
    actors += [Worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote() for i in range(n)]
ray.get([a.ready.remote() for a in actors])
print(len(actors))
"""


def dpctl(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dpctl_ray", *args], capture_output=True, text=True, env=env, check=False
    )
    if check and result.returncode != 0:
        sys.exit(f"dpctl {' '.join(args)} failed:\n{result.stderr}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dpctl-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONDONTWRITEBYTECODE"}
        env["DPCTL_HOME"] = str(Path(tmp) / "home")
        config = Path(tmp) / "bench.yaml"
        config.write_text(
            "name: bench\n"
            "cluster: {local: {nodes: 4, gpus_per_node: 4, cpus_per_node: 4}}\n"
            "placement: {dp: 8, tp: 2, pack: strict}\n"
            "engine: {kind: demo, init_seconds: 0}\n"
        )
        dpctl(env, "cluster", "up", "-f", str(config))
        try:
            state = json.loads((Path(env["DPCTL_HOME"]) / "local-cluster.json").read_text())
            ray_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state["token_file"]}
            plan_file = Path(tmp) / "plan.json"
            dpctl(env, "plan", "-f", str(config), "--out", str(plan_file))
            bare = Path(tmp) / "bare.py"
            bare.write_text(BARE)
            # Warm-up: each side once (bytecode caches, Ray's first-job costs), not counted.
            dpctl(env, "up", "-f", str(config))
            dpctl(env, "down", "bench")
            subprocess.run(
                [sys.executable, str(bare), state["address"], str(plan_file)],
                env=ray_env,
                check=True,
                capture_output=True,
            )
            dpctl_times, bare_times, latencies = [], [], []
            for _ in range(args.runs):
                start = time.perf_counter()
                result = dpctl(env, "up", "-f", str(config), "-o", "json")
                dpctl_times.append(time.perf_counter() - start)
                doc = json.loads(result.stdout)
                latencies += [v for v in doc["launch"]["ready_latency_ms"].values() if v is not None]
                dpctl(env, "down", "bench")
                time.sleep(1)
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, str(bare), state["address"], str(plan_file)],
                    env=ray_env,
                    check=True,
                    capture_output=True,
                )
                bare_times.append(time.perf_counter() - start)
                time.sleep(1)
        finally:
            dpctl(env, "cluster", "down", check=False)
    ratios = [d / b for d, b in zip(dpctl_times, bare_times, strict=True)]
    print(
        f"dp 8 x TP 2 (8 engines + 16 workers) on 4 local nodes, demo engine init_seconds 0; {args.runs} "
        "interleaved runs\n"
    )
    print("| whole process | median | min | max |")
    print("|---|---:|---:|---:|")
    for name, values in (("`dpctl up`", dpctl_times), ("bare Ray script", bare_times)):
        print(f"| {name} | {statistics.median(values):.2f} s | {min(values):.2f} s | {max(values):.2f} s |")
    print(f"| ratio (median of per-run ratios) | {statistics.median(ratios):.2f}x | target 1.25x | |")
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(
        f"\nreadiness latency, engine ready -> CLI ({len(latencies)} events): "
        f"p50 {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms"
    )


if __name__ == "__main__":
    main()
