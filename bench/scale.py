"""Time to add one rank to a running deployment, against the bare-Ray floor for creating that one rank.

    uv run python bench/scale.py [--runs 5]

Starts its own local cluster (head + 5 worker nodes of 4 simulated GPUs), launches a TP 2 demo deployment
(init_seconds 0) of dp 8, then alternates: `dpctl scale --dp 9` (whole process, timed), a bare Ray
script (whole process, timed) that creates the same one placement group (bundles pinned to the node the
dry run names) with one engine and two workers and waits for them, and `dpctl scale --dp 8` (not timed).
Then the same with a deployment of dp 2 (2 -> 3), to show the cost does not grow with the deployment.
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

from _common import cluster_down, dpctl

BARE = r"""
import json, sys
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

rank = json.loads(sys.argv[2])
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0, num_gpus=1)
class Worker:
    def ready(self):
        return ray.get_runtime_context().get_accelerator_ids()["GPU"]

@ray.remote(num_cpus=1)
class Engine:
    def ready(self):
        return True

bundles = rank["bundles"]
pg = placement_group([b["resources"] for b in bundles], strategy=rank["strategy"],
                     bundle_label_selector=[{"ray.io/node-id": b["node"]} for b in bundles])
n = len(bundles) - 1
actors = [Engine.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, n)).remote()]
actors += [Worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote() for i in range(n)]
ray.get([a.ready.remote() for a in actors])
"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def measure(
    env: dict[str, str], ray_env: dict[str, str], address: str, tmp: Path, dp: int, runs: int
) -> tuple[list[float], list[float]]:
    config = tmp / f"bench-{dp}.yaml"
    config.write_text(
        f"name: bench{dp}\nplacement: {{dp: {dp}, tp: 2, pack: strict}}\nengine: {{kind: demo, init_seconds: 0}}\n"
    )
    name = f"bench{dp}"
    dpctl(env, "up", "-f", str(config))
    delta = json.loads(dpctl(env, "scale", name, "--dp", str(dp + 1), "--dry-run", "-o", "json").stdout)
    rank = json.dumps(delta["added"][0])
    bare = tmp / "bare.py"
    bare.write_text(BARE)
    dpctl_times, bare_times = [], []
    try:
        for i in range(runs + 1):  # the first round warms up and is not counted
            t_dpctl = timed([sys.executable, "-m", "dpctl_ray", "scale", name, "--dp", str(dp + 1)], env)
            dpctl(env, "scale", name, "--dp", str(dp))
            time.sleep(1)
            t_bare = timed([sys.executable, str(bare), address, rank], ray_env)
            time.sleep(1)
            if i:
                dpctl_times.append(t_dpctl)
                bare_times.append(t_bare)
    finally:
        dpctl(env, "down", name)
    return dpctl_times, bare_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dpctl-bench-") as name:
        tmp = Path(name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONDONTWRITEBYTECODE"}
        env["DPCTL_HOME"] = str(tmp / "home")
        dpctl(env, "cluster", "up", "--nodes", "5", "--gpus-per-node", "4", "--cpus-per-node", "4")
        try:
            state = json.loads((tmp / "home" / "local-cluster.json").read_text())
            ray_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state["token_file"]}
            results = {dp: measure(env, ray_env, state["address"], tmp, dp, args.runs) for dp in (8, 2)}
        finally:
            cluster_down(env)
    print(f"adding one TP 2 rank (1 engine + 2 workers), demo engine init_seconds 0; {args.runs} interleaved runs\n")
    print("| running deployment | `dpctl scale --dp N+1` | bare Ray, one rank | ratio |")
    print("|---|---:|---:|---:|")
    for dp, (d, b) in results.items():
        ratio = statistics.median([x / y for x, y in zip(d, b, strict=True)])
        print(f"| dp {dp} -> {dp + 1} | {statistics.median(d):.2f} s | {statistics.median(b):.2f} s | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
