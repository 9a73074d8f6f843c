"""What shipping dpctl's code costs a command: joining with the job runtime_env of `scale` and `logs` against
joining with none (`status`), and the first join after dpctl's code changed (an upload).

    uv run python bench/ship.py [--rounds 10]

Starts its own local cluster (head + 1 worker, in a temporary DPCTL_HOME) and times, in this process,
`ray.init` + `ray.shutdown` interleaved: with no runtime_env; with `shipping.code_only()` (the package
already in the cluster: hashing only); and with a copy of the package changed by one byte each round (a new
hash: zip and upload). A task on the worker then imports the shipped package, once per new hash and once
per cached one, to show what a node pays.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dpctl-bench-ship-"))
    env = {**os.environ, "DPCTL_HOME": str(home), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    dpctl = [sys.executable, "-m", "dpctl_ray"]
    subprocess.run([*dpctl, "cluster", "up", "--nodes", "1", "--gpus-per-node", "1"], env=env, check=True)
    try:
        os.environ.update({"DPCTL_HOME": str(home), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"})

        from dpctl_ray.local import state as local_state  # noqa: PLC0415 - after DPCTL_HOME is set

        state = local_state.running_state()
        if state is None:
            sys.exit("the bench's local cluster did not start")
        os.environ.update(state.env())
        run(state.address, args.rounds)
    finally:
        subprocess.run([*dpctl, "cluster", "down"], env=env, check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def run(address: str, rounds: int) -> None:
    import ray  # noqa: PLC0415 - after the cluster's auth environment is set

    from dpctl_ray.launcher import shipping  # noqa: PLC0415

    @ray.remote(num_cpus=0, num_gpus=1)  # on the worker (the head has no GPU)
    def touch() -> str:
        import dpctl_ray  # noqa: PLC0415 - on the node: the shipped package

        return str(dpctl_ray.__file__)

    def join(runtime_env: dict | None, task: bool = False) -> tuple[float, float]:
        start = time.perf_counter()
        ray.init(address=address, runtime_env=runtime_env, logging_level="ERROR", log_to_driver=False)
        joined = time.perf_counter() - start
        ran = 0.0
        if task:
            start = time.perf_counter()
            ray.get(touch.remote())
            ran = time.perf_counter() - start
        ray.shutdown()
        return joined, ran

    scratch = Path(tempfile.mkdtemp(prefix="dpctl-ship-copy-"))
    copy = scratch / "dpctl_ray"
    shutil.copytree(shipping.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    size = sum(f.stat().st_size for f in copy.rglob("*") if f.is_file())
    join(shipping.code_only())  # warm: the package as it is, uploaded once
    times: dict[str, list[float]] = {"none": [], "cached": [], "changed": [], "node first": [], "node cached": []}
    for i in range(rounds):
        times["none"].append(join(None)[0])
        times["cached"].append(join(shipping.code_only())[0])
        (copy / "_bench_marker.py").write_text(f"ROUND = {i}\n")
        changed = {"py_modules": [str(copy)], "excludes": shipping.EXCLUDES}
        joined, ran = join(changed, task=True)
        times["changed"].append(joined)
        times["node first"].append(ran)
        times["node cached"].append(join(changed, task=True)[1])
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"dpctl_ray: {size / 1024:.0f} kB of source; {rounds} interleaved rounds, median (min - max)\n")
    print("| join | median | min - max |")
    print("|---|---:|---:|")
    labels = {
        "none": "`ray.init`, no runtime_env (`status`, `down`)",
        "cached": "`ray.init` shipping dpctl, already in the cluster (`scale`, `logs`)",
        "changed": "`ray.init` shipping a changed dpctl (zip + upload)",
        "node first": "a first task on the node after a change (worker start, fetch, unpack, import)",
        "node cached": "a first task on the node, package already there (worker start, import)",
    }
    for key, label in labels.items():
        values = [t * 1000 for t in times[key]]
        print(f"| {label} | {statistics.median(values):.0f} ms | {min(values):.0f} - {max(values):.0f} ms |")


if __name__ == "__main__":
    main()
