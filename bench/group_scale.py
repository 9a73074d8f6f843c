"""A group scale (a MoE group, dp 4 -> 6) against a fresh `dpctl up` of the new size, side by side.

    uv run python bench/group_scale.py [--runs 5]

Starts its own local cluster (head + 4 worker nodes of 4 simulated GPUs, in a temporary DPCTL_HOME) and
runs `configs/vllm-moe-hybrid-lb.yaml` (TP 2, two ranks per node, one process per node) through the vLLM
stand-in (tests/fake_vllm.py) with no loading time. Each round, interleaved:

- `dpctl scale --dp 6` of a running dp 4 group: every process restarts with the new size on the placement
  groups it holds, and one node's ranks are added (the dp 4 `up` before it is not timed);
- `dpctl up` of dp 6 from nothing.

Both are whole `dpctl` processes, timed until they exit with every rank ready. The target: the scale takes
at most 1.2x the fresh `up`.
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

import yaml
from _common import cluster_down

ROOT = Path(__file__).resolve().parent.parent


def dpctl(env: dict[str, str], *args: str) -> float:
    """Run one dpctl command to completion; its wall time."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dpctl_ray", *args], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        sys.exit(f"dpctl {' '.join(args)} failed:\n{result.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dpctl-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONDONTWRITEBYTECODE"}
        env["DPCTL_HOME"] = str(Path(tmp) / "home")
        doc = yaml.safe_load((ROOT / "configs" / "vllm-moe-hybrid-lb.yaml").read_text())
        doc["name"] = "bench"
        doc["cluster"] = {"local": {"nodes": 4, "gpus_per_node": 4, "cpus_per_node": 4}}
        doc["engine"]["argv"] = [sys.executable, str(ROOT / "tests" / "fake_vllm.py"), *doc["engine"]["argv"][1:]]
        doc["engine"]["env"] = {"FAKE_VLLM_LOAD_SECONDS": "0"}
        doc["engine"]["base_port"] = 0
        doc["engine"]["master_port"] = 0
        configs = {}
        for dp in (4, 6):
            doc["placement"]["dp"] = dp
            configs[dp] = Path(tmp) / f"dp{dp}.yaml"
            configs[dp].write_text(yaml.safe_dump(doc, sort_keys=False))
        dpctl(env, "cluster", "up", "-f", str(configs[4]))
        try:
            # Warm-up, not counted.
            dpctl(env, "up", "-f", str(configs[4]))
            dpctl(env, "scale", "bench", "--dp", "6")
            dpctl(env, "down", "bench")
            scale_times, up_times = [], []
            for _ in range(args.runs):
                dpctl(env, "up", "-f", str(configs[4]))
                time.sleep(1)
                scale_times.append(dpctl(env, "scale", "bench", "--dp", "6", "-o", "json"))
                dpctl(env, "down", "bench")
                time.sleep(1)
                up_times.append(dpctl(env, "up", "-f", str(configs[6]), "-o", "json"))
                dpctl(env, "down", "bench")
                time.sleep(1)
        finally:
            cluster_down(env)
    ratios = [s / u for s, u in zip(scale_times, up_times, strict=True)]
    print(f"vllm-moe-hybrid-lb through the stand-in (no load time), TP 2, {args.runs} interleaved rounds\n")
    print("| whole process | median | min | max |")
    print("|---|---:|---:|---:|")
    for name, values in (
        ("`dpctl scale --dp 6` of a running dp 4 group", scale_times),
        ("`dpctl up` of dp 6", up_times),
    ):
        print(f"| {name} | {statistics.median(values):.2f} s | {min(values):.2f} s | {max(values):.2f} s |")
    print(f"| ratio, median of per-round ratios | **{statistics.median(ratios):.2f}x** (target 1.2x) | | |")
    print(json.dumps({"scale": scale_times, "up": up_times}))


if __name__ == "__main__":
    main()
