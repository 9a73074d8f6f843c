"""Planner scaling, and whole-process `dpctl plan -o json` against the seed's placement loop, side by side.

    uv run python bench/plan_scaling.py --seed ../shared/bench/seed_planner.py [--runs 21]

Part 1 times `plan()` in-process for 64 to 16,384 nodes of 8 devices (dp = nodes, tp 8, strict), with
the seed's loop on the same nodes for reference. Part 2 runs two whole processes, interleaved, on one
16,384-node JSON inventory: `dpctl plan -o json` and a bare script that loads the same JSON, runs the
seed's loop and prints its groups as JSON. Both run with bytecode caches warm (a first run writes them),
as on any normal install. Part 3 repeats part 2 on nodes that carry labels (a zone, a rack of 18, a GPU
kind), with `--select gpu=h100 --spread zone --rank-within rack`; the seed's loop has no labels and runs as
in part 2. Prints markdown tables for the README.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dpctl_ray.planner import Node, Placement, PlanRequest, plan  # noqa: E402
from dpctl_ray.planner.plan_text import plan_json  # noqa: E402

DEFAULT_SEED = ROOT.parent / "shared" / "bench" / "seed_planner.py"
SIZES = (64, 256, 1024, 4096, 16384)
TARGET = 1.5

SEED_SCRIPT = """\
import json, sys
sys.path.insert(0, {seed_dir!r})
from seed_planner import plan
doc = json.load(open(sys.argv[1]))
nodes = [{{"ip": n["ip"], "resources": n.get("available", n["resources"])}} for n in doc["nodes"]]
master = next(n["ip"] for n in doc["nodes"] if n.get("head"))
groups, local_ranks = plan(nodes, int(sys.argv[2]), 1, int(sys.argv[3]), master, "strict")
print(json.dumps([{{"strategy": s, "bundles": b, "local_rank": r}} for (s, b), r in zip(groups, local_ranks)]))
"""


LABEL_FLAGS = ("--select", "gpu=h100", "--spread", "zone", "--rank-within", "rack")


def inventory(count: int, *, labelled: bool = False) -> dict[str, list[dict[str, object]]]:
    """`count` nodes of 8 GPUs and 64 CPUs, the first one the head; distinct IPs (the seed keys nodes by IP).

    Labelled: four zones in turn, racks of 18 consecutive nodes, and a GPU kind.
    """
    return {
        "nodes": [
            {
                "id": f"node-{i:05d}",
                "ip": f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
                "head": i == 0,
                "resources": {"CPU": 64, "GPU": 8},
                **({"labels": {"zone": f"z{i % 4}", "rack": f"r{i // 18}", "gpu": "h100"}} if labelled else {}),
            }
            for i in range(count)
        ]
    }


def load_seed(path: Path) -> object:
    spec = importlib.util.spec_from_file_location("seed_planner", path)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load the seed planner from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def best_of(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def planner_scaling(seed: object, repeat: int) -> None:
    print("| nodes | ranks | dpctl plan() | dpctl plan() + JSON | seed loop |")
    print("|---:|---:|---:|---:|---:|")
    for count in SIZES:
        doc = inventory(count)
        nodes = tuple(
            Node(n["id"], n["ip"], n["head"], {"CPU": 64.0, "GPU": 8.0}, {"CPU": 64.0, "GPU": 8.0})  # type: ignore[arg-type]
            for n in doc["nodes"]
        )
        request = PlanRequest("bench", Placement(dp=count, tp=8), nodes)
        seed_nodes = [{"ip": n["ip"], "resources": n["resources"]} for n in doc["nodes"]]
        t_plan = best_of(lambda request=request: plan(request), repeat)
        t_json = best_of(lambda request=request: plan_json(plan(request)), repeat)  # type: ignore[arg-type]
        t_seed = best_of(
            lambda seed_nodes=seed_nodes, count=count: seed.plan(seed_nodes, count, 1, 8, "10.0.0.0"),  # type: ignore[attr-defined]
            repeat,
        )
        print(f"| {count:,} | {count:,} | {t_plan * 1e3:.1f} ms | {t_json * 1e3:.1f} ms | {t_seed * 1e3:.1f} ms |")


def whole_process(seed_path: Path, runs: int, *, labelled: bool = False) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        inv = Path(tmp) / "inventory.json"
        inv.write_text(json.dumps(inventory(16384, labelled=labelled)))
        script = Path(tmp) / "seed_bare.py"
        script.write_text(SEED_SCRIPT.format(seed_dir=str(seed_path.parent)))
        commands = {
            "dpctl plan -o json": [
                sys.executable,
                "-m",
                "dpctl_ray",
                "plan",
                "--inventory",
                str(inv),
                "--dp",
                "16384",
                "--tp",
                "8",
                "--pack",
                "strict",
                "-o",
                "json",
                *(LABEL_FLAGS if labelled else ()),
            ],
            "seed loop, bare script": [sys.executable, str(script), str(inv), "16384", "8"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs + 1):  # the first round writes bytecode caches and is not counted
            for name, argv in commands.items():
                start = time.perf_counter()
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, cwd=tmp)
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(t[1:]) for name, t in times.items()}
    # Each dpctl run against the seed run beside it: a ratio per round cancels the machine's slow drifts.
    pairs = zip(times["dpctl plan -o json"][1:], times["seed loop, bare script"][1:], strict=True)
    ratios = sorted(d / b for d, b in pairs)
    ratio = statistics.median(ratios)
    labels = f"; labelled, {' '.join(LABEL_FLAGS)}" if labelled else ""
    print(f"\n16,384 nodes x 8 GPU, dp 16,384, tp 8, strict{labels}; {runs} interleaved rounds\n")
    print("| whole process | median | |")
    print("|---|---:|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value * 1e3:.0f} ms | |")
    verdict = "meets" if ratio <= TARGET else "misses"
    spread = f"middle half {ratios[len(ratios) // 4]:.2f}x-{ratios[(3 * len(ratios)) // 4]:.2f}x"
    print(f"| ratio (median of per-round ratios) | {ratio:.2f}x | {verdict} the {TARGET}x target; {spread} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=Path, default=DEFAULT_SEED, help="path to the seed's seed_planner.py")
    parser.add_argument("--runs", type=int, default=21, help="interleaved whole-process rounds")
    parser.add_argument("--repeat", type=int, default=5, help="in-process repeats per size (best is kept)")
    args = parser.parse_args()
    if not args.seed.is_file():
        sys.exit(f"seed planner not found at {args.seed}; pass --seed PATH/TO/seed_planner.py")
    planner_scaling(load_seed(args.seed), args.repeat)
    whole_process(args.seed.resolve(), args.runs)
    whole_process(args.seed.resolve(), args.runs, labelled=True)


if __name__ == "__main__":
    main()
