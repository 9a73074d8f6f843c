"""Time from `dpctl up` (per_node bundles) to every rank ready, against two bare Ray scripts: the seed's layout
and one bundle per node.

    uv run python bench/launch.py [--runs 3] [--only tp2|tp4]

For each shape it starts its own local cluster (in a temporary DPCTL_HOME) and alternates three whole
processes, each creating the same ranks on the same nodes and waiting until every one is up:

- `dpctl up -o json`, demo engine with init_seconds 0, `bundles: per_node`: a placement group of one
  `{GPU: tp, CPU: 1}` bundle per rank, and one engine host per rank claiming its GPUs;
- the seed's layout, bare: per rank `tp` bundles of `{GPU: 1}` and a `{CPU: 1}` bundle, an engine actor
  on the CPU bundle and a worker actor on each GPU bundle (what vLLM's Ray backend creates);
- one bundle per node, bare: the same groups as dpctl's, one actor per rank with `num_gpus=tp`.

Shapes: dp 8 x TP 2 on 4 nodes of 4 simulated GPUs, and dp 8 x TP 4 on 4 nodes of 8. Between runs each
side's objects are removed (not timed). Also reports the Ray processes per rank and their memory (RSS of
the actor processes, read on this machine), and dpctl's readiness latency.
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

SHAPES = {
    "tp2": {"nodes": 4, "gpus": 4, "cpus": 4, "dp": 8, "tp": 2},
    "tp4": {"nodes": 4, "gpus": 8, "cpus": 4, "dp": 8, "tp": 4},
}

BARE = r"""
import json, os, sys
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

address, plan_path, layout = sys.argv[1:4]
plan = json.load(open(plan_path))
ray.init(address=address, logging_level="ERROR", log_to_driver=False)

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

@ray.remote(num_cpus=0, num_gpus=1)
class Worker:
    def ready(self):
        return os.getpid(), rss_kb(), ray.get_runtime_context().get_accelerator_ids()["GPU"]

@ray.remote(num_cpus=1)
class Engine:
    def ready(self):
        return os.getpid(), rss_kb(), ray.get_runtime_context().get_accelerator_ids()["GPU"]

groups = []
for rank in plan["ranks"]:
    bundles = rank["bundles"]
    groups.append(placement_group([b["resources"] for b in bundles], strategy=rank["strategy"],
                                  bundle_label_selector=[{"ray.io/node-id": b["node"]} for b in bundles]))
actors = []
for pg, rank in zip(groups, plan["ranks"]):
    bundles = rank["bundles"]
    if layout == "per_device":  # the seed: an engine on the CPU bundle, a worker per device bundle
        n = len(bundles) - 1
        actors.append(Engine.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, n)).remote())
        actors += [Worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote()
                   for i in range(n)]
    else:  # one bundle per node: one actor claiming the rank's devices
        (bundle,) = bundles
        actors.append(Engine.options(num_gpus=bundle["resources"]["GPU"],
                                     scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote())
print(json.dumps(ray.get([a.ready.remote() for a in actors])))
"""


def dpctl(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dpctl_ray", *args], capture_output=True, text=True, env=env, check=False
    )
    if check and result.returncode != 0:
        sys.exit(f"dpctl {' '.join(args)} failed:\n{result.stderr}")
    return result


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def dpctl_processes(env: dict[str, str], address: str, name: str) -> list[tuple[int, int]]:
    """(pid, RSS kB) of every Ray process a running deployment owns: its hosts and their device workers."""
    probe = (
        "import json, sys, ray\n"
        "ray.init(address=sys.argv[1], namespace='dpctl', logging_level='ERROR', log_to_driver=False)\n"
        "hosts = [a['name'] for a in ray.util.list_named_actors(all_namespaces=True)\n"
        "         if a['name'].startswith('dpctl/' + sys.argv[2] + '/engine-')]\n"
        "reports = ray.get([ray.get_actor(h, namespace='dpctl').health.remote() for h in hosts])\n"
        "print(json.dumps([p for r in reports for p in (r.pid, *r.worker_pids)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, address, name], env=env, capture_output=True, text=True, check=True
    ).stdout
    return [(pid, rss_kb(pid)) for pid in json.loads(out)]


def run_shape(key: str, runs: int) -> dict[str, object]:
    shape = SHAPES[key]
    with tempfile.TemporaryDirectory(prefix="dpctl-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONDONTWRITEBYTECODE"}
        env["DPCTL_HOME"] = str(Path(tmp) / "home")
        config = Path(tmp) / "bench.yaml"
        config.write_text(
            "name: bench\n"
            f"cluster: {{local: {{nodes: {shape['nodes']}, gpus_per_node: {shape['gpus']}, "
            f"cpus_per_node: {shape['cpus']}}}}}\n"
            f"placement: {{dp: {shape['dp']}, tp: {shape['tp']}, pack: strict, bundles: per_node}}\n"
            "engine: {kind: demo, init_seconds: 0}\n"
        )
        dpctl(env, "cluster", "up", "-f", str(config))
        try:
            state = json.loads((Path(env["DPCTL_HOME"]) / "local-cluster.json").read_text())
            ray_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state["token_file"]}
            plans = {}
            for layout in ("per_device", "per_node"):
                plans[layout] = Path(tmp) / f"{layout}.json"
                dpctl(env, "plan", "-f", str(config), "--bundles", layout, "--out", str(plans[layout]))
            bare = Path(tmp) / "bare.py"
            bare.write_text(BARE)

            def run_bare(layout: str) -> tuple[float, list[list[object]]]:
                start = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, str(bare), state["address"], str(plans[layout]), layout],
                    env=ray_env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                return time.perf_counter() - start, json.loads(out)

            # Warm-up, not counted: each side once (bytecode caches, Ray's first-job costs); count processes.
            dpctl(env, "up", "-f", str(config))
            owned = dpctl_processes(ray_env, state["address"], "bench")
            dpctl(env, "down", "bench")
            procs = {"dpctl": owned}
            for layout in ("per_device", "per_node"):
                _, actors = run_bare(layout)
                procs[layout] = [(int(a[0]), int(a[1])) for a in actors]  # type: ignore[call-overload]
            times: dict[str, list[float]] = {"dpctl": [], "per_device": [], "per_node": []}
            latencies: list[float] = []
            for _ in range(runs):
                start = time.perf_counter()
                result = dpctl(env, "up", "-f", str(config), "-o", "json")
                times["dpctl"].append(time.perf_counter() - start)
                doc = json.loads(result.stdout)
                latencies += [v for v in doc["launch"]["ready_latency_ms"].values() if v is not None]
                dpctl(env, "down", "bench")
                time.sleep(1)
                for layout in ("per_device", "per_node"):
                    times[layout].append(run_bare(layout)[0])
                    time.sleep(1)
        finally:
            dpctl(env, "cluster", "down", check=False)
    return {"shape": shape, "times": times, "procs": procs, "latencies": latencies}


def report(result: dict[str, object], runs: int) -> None:
    shape: dict[str, int] = result["shape"]  # type: ignore[assignment]
    times: dict[str, list[float]] = result["times"]  # type: ignore[assignment]
    procs: dict[str, list[tuple[int, int]]] = result["procs"]  # type: ignore[assignment]
    dp, tp = shape["dp"], shape["tp"]
    print(
        f"\n### dp {dp} x TP {tp} on {shape['nodes']} local nodes of {shape['gpus']} simulated GPUs "
        f"({runs} interleaved runs)\n"
    )
    print("| side | Ray processes per rank | RSS per rank | median | min | max | dpctl / side |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    names = {
        "dpctl": "`dpctl up`, per_node",
        "per_node": "bare Ray, one bundle per node",
        "per_device": "bare Ray, the seed's layout",
    }
    for side in ("dpctl", "per_node", "per_device"):
        values = times[side]
        ratio = statistics.median(d / s for d, s in zip(times["dpctl"], values, strict=True))
        count = len(procs[side]) / dp
        rss = sum(r for _, r in procs[side]) / dp / 1024
        print(
            f"| {names[side]} | {count:g} | {rss:.0f} MB | {statistics.median(values):.2f} s | "
            f"{min(values):.2f} s | {max(values):.2f} s | {ratio:.2f}x |"
        )
    latencies = sorted(result["latencies"])  # type: ignore[type-var]
    if latencies:
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        print(
            f"\nreadiness latency, engine ready -> CLI ({len(latencies)} events): "
            f"p50 {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=sorted(SHAPES))
    args = parser.parse_args()
    for key in [args.only] if args.only else list(SHAPES):
        report(run_shape(key, args.runs), args.runs)


if __name__ == "__main__":
    main()
