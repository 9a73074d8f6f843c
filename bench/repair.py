"""Time from a node's death to its rank READY elsewhere with `dpctl repair`, against the bare-Ray floor of one rank.

    uv run python bench/repair.py [--runs 3]

Starts its own local cluster (head + 3 workers of 2 simulated GPUs, in a temporary DPCTL_HOME) and a TP 2
demo deployment of dp 2 (init_seconds 0): one rank per worker, one worker free. Each round, interleaved:

- `dpctl cluster kill-node` on rank 1's worker (not timed), then `dpctl repair` as a whole process, timed
  from the kill to the command's exit with the rank READY on the free worker. Detection is inside it: dpctl
  finds the node's raylet refusing connections before Ray declares the node dead;
- `dpctl cluster add-node` (not timed), then the floor: a bare Ray script that creates the same one
  placement group (one `{GPU: 2, CPU: 1}` bundle pinned to the new worker) and one actor claiming the two
  GPUs, and waits for it (whole process, timed). It exits, so the new worker is free for the next round.

Then the same loss with `recovery: auto` (a node added first, untimed): no command runs, and the time is
from the kill until `dpctl status` shows the rank READY on another node.

Both sides land on a warm node: the floor script runs once untimed on each new node (and on the free worker
before the first round), as a node's first Ray worker is slower.

Last, a dp 1 deployment with a started spare (`--spares 1 --spares-mode started`): each round a node is
added (untimed, room for the next spare), the rank's worker killed, and `dpctl repair` timed as a whole
process from the kill; its own report gives the time from finding the rank lost to READY on the spare.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import cluster_down, dpctl

BARE = r"""
import sys
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1, num_gpus=2)
class Engine:
    def ready(self):
        return ray.get_runtime_context().get_accelerator_ids()["GPU"]

pg = placement_group([{"GPU": 2, "CPU": 1}], strategy="STRICT_PACK",
                     bundle_label_selector=[{"ray.io/node-id": sys.argv[2]}])
engine = Engine.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
ray.get(engine.ready.remote())
"""


def auto_rounds(env: dict[str, str], config: Path, runs: int) -> list[float]:
    """The same loss with `recovery: auto`: no command runs; timed until `status` shows the rank READY elsewhere.

    `up` again with `recovery: auto` gives the running deployment its supervisor. The time includes the
    supervisor's 2 s check period and the polling `status` processes (about 1 s each).
    """
    doc = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**doc, "recovery": {"mode": "auto", "max_repairs": runs, "window": 3600}}))
    dpctl(env, "up", "-f", str(config))
    times = []
    for _ in range(runs):
        dpctl(env, "cluster", "add-node")
        ranks = json.loads(dpctl(env, "status", "heal", "-o", "json").stdout)["deployments"][0]["ranks"]
        nodes = json.loads(dpctl(env, "cluster", "status", "-o", "json").stdout)["nodes"]
        lost = ranks[1]["ip"]
        dpctl(env, "cluster", "kill-node", next(n["name"] for n in nodes if n["ip"] == lost))
        start = time.perf_counter()
        while True:
            rank = json.loads(dpctl(env, "status", "heal", "-o", "json").stdout)["deployments"][0]["ranks"][1]
            if rank["state"] == "READY" and rank["ip"] != lost:
                break
            if time.perf_counter() - start > 120:
                sys.exit("the supervisor did not repair the rank within 120 s")
        times.append(time.perf_counter() - start)
    return times


def spare_rounds(env: dict[str, str], config: Path, runs: int) -> tuple[list[float], list[float]]:
    """A started spare takes the lost rank over: `dpctl repair` from the kill, and from detection (its report)."""
    placement = {"dp": 1, "tp": 2, "spares": 1, "spares_mode": "started"}
    config.write_text(
        yaml.safe_dump({"name": "warm", "placement": placement, "engine": {"kind": "demo", "init_seconds": 0}})
    )
    dpctl(env, "up", "-f", str(config))
    wholes, after = [], []
    for _ in range(runs):
        dpctl(env, "cluster", "add-node")  # room for the spare that replaces the one taken
        deployment = json.loads(dpctl(env, "status", "warm", "-o", "json").stdout)["deployments"][0]
        if [s["state"] for s in deployment["spares"]] != ["started"]:
            sys.exit(f"the spare is not started: {deployment['spares']}")
        nodes = json.loads(dpctl(env, "cluster", "status", "-o", "json").stdout)["nodes"]
        dpctl(env, "cluster", "kill-node", next(n["name"] for n in nodes if n["ip"] == deployment["ranks"][0]["ip"]))
        start = time.perf_counter()
        report = dpctl(env, "repair", "warm").stderr
        wholes.append(time.perf_counter() - start)
        took = re.search(r"repaired 1 rank in ([0-9.]+)s from finding it lost \(0 -> \S+ \(spare \d+\)\)", report)
        if took is None:
            sys.exit(f"the repair did not take the spare: {report}")
        after.append(float(took.group(1)))
        time.sleep(2)  # the next spare's hosts start in the background
    dpctl(env, "down", "warm")
    return wholes, after


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dpctl-bench-repair-"))
    env = {**os.environ, "DPCTL_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    dpctl(env, "cluster", "up", "--nodes", "3", "--gpus-per-node", "2", "--cpus-per-node", "2")
    try:
        state = json.loads((home / "local-cluster.json").read_text())
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=state["token_file"])
        config = home / "heal.yaml"
        config.write_text(
            yaml.safe_dump(
                {"name": "heal", "placement": {"dp": 2, "tp": 2}, "engine": {"kind": "demo", "init_seconds": 0}}
            )
        )
        dpctl(env, "up", "-f", str(config))
        used = {
            r["node"] for r in json.loads(dpctl(env, "status", "heal", "-o", "json").stdout)["deployments"][0]["ranks"]
        }
        inventory = json.loads(dpctl(env, "inventory", "--format", "json").stdout)["nodes"]
        for node in inventory:  # the free worker, where the first repair goes: warm, as the others will be
            if node["resources"].get("GPU") and node["id"] not in used:
                subprocess.run([sys.executable, "-c", BARE, state["address"], node["id"]], env=env, check=True)
        repairs, floors = [], []
        for _ in range(args.runs):
            ranks = json.loads(dpctl(env, "status", "heal", "-o", "json").stdout)["deployments"][0]["ranks"]
            nodes = json.loads(dpctl(env, "cluster", "status", "-o", "json").stdout)["nodes"]
            victim = next(n["name"] for n in nodes if n["ip"] == ranks[1]["ip"])
            dpctl(env, "cluster", "kill-node", victim)
            start = time.perf_counter()
            dpctl(env, "repair", "heal")
            repairs.append(time.perf_counter() - start)
            added = re.search(r"started worker-\d+ at (\S+)", dpctl(env, "cluster", "add-node").stderr)
            if added is None:
                sys.exit("cluster add-node did not say where it started the node")
            inventory = json.loads(dpctl(env, "inventory", "--format", "json").stdout)["nodes"]
            free = next(n["id"] for n in inventory if n["ip"] == added.group(1))  # the killed one may still be listed
            # A new node's first Ray worker is slower (nothing cached): warm it, untimed, as repair's target was.
            subprocess.run([sys.executable, "-c", BARE, state["address"], free], env=env, check=True)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", BARE, state["address"], free], env=env, check=True)
            floors.append(time.perf_counter() - start)
        autos = auto_rounds(env, config, args.runs)
        dpctl(env, "down", "heal")
        spares, spares_after = spare_rounds(env, home / "warm.yaml", args.runs)
    finally:
        cluster_down(env)
    ratios = [r / f for r, f in zip(repairs, floors, strict=True)]
    print(f"{args.runs} interleaved rounds, median (min - max)\n")
    print("| whole process | median | min - max |")
    print("|---|---:|---:|")
    for label, values in (
        ("`dpctl repair` of one rank, from the node's death", repairs),
        ("bare Ray, one rank", floors),
        ("`recovery: auto`, no command: from the node's death to READY in `status`", autos),
        ("`dpctl repair` onto a started spare, from the node's death", spares),
        ("the same, from finding the rank lost to READY (target < 1 s)", spares_after),
    ):
        print(f"| {label} | {statistics.median(values):.2f} s | {min(values):.2f} - {max(values):.2f} s |")
    print(f"| ratio (median of per-round ratios) | **{statistics.median(ratios):.2f}x** (target 1.2x + detection) | |")


if __name__ == "__main__":
    main()
