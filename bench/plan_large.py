"""`dpctl plan` of a 200,000-node inventory in every output mode: time and peak memory of the whole process.

    uv run python bench/plan_large.py [--nodes 200000] [--runs 3]

Writes a JSON inventory of a CPU-only head and N nodes of 8 GPUs, then runs `dpctl plan --dp N --tp 8`
(one rank per node) with -o json, -o yaml, the default table and --full, each as its own process, and
reports the median wall time and the largest peak RSS. Target: json, yaml and the default table each
within 10 s and 1.5 GB on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 10.0
TARGET_BYTES = 1.5 * 2**30
MODES = {"-o json": ["-o", "json"], "-o yaml": ["-o", "yaml"], "table": [], "--full": ["--full"]}


def inventory(path: Path, count: int) -> None:
    nodes = [{"id": "head", "ip": "10.0.0.1", "head": True, "resources": {"CPU": 16}}]
    nodes += [
        {
            "id": f"gpu-{i:06d}",
            "ip": f"10.{1 + i // 65536}.{(i // 256) % 256}.{i % 256}",
            "resources": {"CPU": 64, "GPU": 8},
        }
        for i in range(count)
    ]
    path.write_text(json.dumps({"nodes": nodes}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dpctl-bench-") as tmp:
        path = Path(tmp) / "inventory.json"
        inventory(path, args.nodes)
        base = ["plan", "--inventory", str(path), "--dp", str(args.nodes), "--tp", "8"]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        warm = [sys.executable, "-m", "dpctl_ray", *base, "-o", "json"]
        subprocess.run(warm, stdout=subprocess.DEVNULL, env=env, cwd=ROOT, check=True)  # bytecode caches
        size = path.stat().st_size
        print(
            f"{args.nodes:,} nodes of 8 GPUs ({size / 2**20:.0f} MB JSON), dp {args.nodes:,} x TP 8; {args.runs} runs\n"
        )
        print("| output | median time | peak RSS | within 10 s and 1.5 GB |")
        print("|---|---:|---:|---|")
        # Peak RSS is per process, but getrusage only reports the largest child so far: measure each mode in
        # a fresh interpreter of this script, so that one mode's peak is not another's.
        for name, extra in MODES.items():
            times, peaks = [], []
            for _ in range(args.runs):
                code = (
                    "import json, resource, subprocess, sys, time;"
                    f"t = time.perf_counter(); subprocess.run({[sys.executable, '-m', 'dpctl_ray', *base, *extra]!r},"
                    " stdout=subprocess.DEVNULL, check=True);"
                    "print(json.dumps([time.perf_counter() - t,"
                    " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024]))"
                )
                out = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True
                )
                elapsed, peak = json.loads(out.stdout)
                times.append(elapsed)
                peaks.append(peak)
            median, peak = statistics.median(times), max(peaks)
            ok = "yes" if median <= TARGET_SECONDS and peak <= TARGET_BYTES else "no"
            if name == "--full":
                ok += " (not a target)"
            print(f"| `{name}` | {median:.1f} s | {peak / 2**20:,.0f} MB | {ok} |")


if __name__ == "__main__":
    main()
