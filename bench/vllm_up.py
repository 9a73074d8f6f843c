"""`dpctl up` of N real vLLM ranks (the CPU build) against the same `vllm serve` commands started directly.

    uv run python bench/vllm_up.py [--runs 3] [--ranks 1,2] [--warmup 1]

Starts its own local cluster (one worker node of 4 CPUs, in a temporary DPCTL_HOME) and the node image of
`tests/vllm_image.py` (built once per machine). Each round, for each N, in alternating order:

- dpctl: `dpctl up -f CONFIG -o json` of `configs/vllm-cpu.yaml` with dp N (the tiny model, fixed ports),
  timed as a whole process until it exits with every rank READY; then `dpctl down` (not timed);
- bare: the same N `vllm serve` commands (argv and environment as the preset renders them) started at
  once with `subprocess`, timed until every `/health` answers 200; then SIGTERM (not timed).

While dpctl's ranks start, a thread polls each rank's `/health` every 20 ms: the time from its first 200
to the moment dpctl's engine host called the rank READY (the `since` that `status` reports) is the
readiness latency. Warm-up rounds (vLLM compiles on its first start and caches it) are not counted.
Traffic goes to loopback only, to the servers this script started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import cluster_down, dpctl  # noqa: E402
from tests import vllm_image  # noqa: E402

NODE_IP = "127.0.0.2"
DPCTL_PORT, BARE_PORT = 18100, 18200
POLL = 0.02


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{NODE_IP}:{port}/health", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def first_200(ports: list[int], stop: threading.Event, seen: dict[int, float]) -> None:
    """Poll until every port answered 200 once (or `stop`), writing when each first did (wall time)."""
    while not stop.is_set() and len(seen) < len(ports):
        for port in ports:
            if port not in seen and healthy(port):
                seen[port] = time.time()
        time.sleep(POLL)


def config(directory: Path, n: int) -> Path:
    doc = yaml.safe_load((ROOT / "configs" / "vllm-cpu.yaml").read_text())
    doc["name"] = f"bench-v{n}"
    doc["placement"]["dp"] = n
    doc["engine"]["base_port"] = DPCTL_PORT
    doc["engine"]["env"]["HF_HUB_OFFLINE"] = "1"
    path = directory / f"bench-v{n}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def bare_argv(image: vllm_image.Image, port: int) -> tuple[list[str], dict[str, str]]:
    """The preset's command and environment for one rank, rendered as dpctl renders it."""
    doc = yaml.safe_load((ROOT / "configs" / "vllm-cpu.yaml").read_text())
    values = {"node_ip": NODE_IP, "port": str(port)}
    argv = [os.path.expandvars(a) for a in doc["engine"]["argv"]]
    argv = [str(image.vllm) if a.startswith("${DPCTL_VLLM") else a for a in argv]
    argv = [str(image.model) if a.startswith("${DPCTL_MODEL") else a for a in argv]
    argv = [a.format(**values) if "{" in a else a for a in argv]
    env = {**os.environ, **doc["engine"]["env"], "HF_HUB_OFFLINE": "1"}
    return argv, env


def run_dpctl(env: dict[str, str], path: Path, n: int) -> tuple[float, list[float]]:
    ports = [DPCTL_PORT + i for i in range(n)]
    seen: dict[int, float] = {}
    stop = threading.Event()
    poller = threading.Thread(target=first_200, args=(ports, stop, seen), daemon=True)
    poller.start()
    began = time.monotonic()
    up = dpctl(env, "up", "-f", str(path), "-o", "json")
    elapsed = time.monotonic() - began
    stop.set()
    poller.join()
    ranks = json.loads(up.stdout)["deployments"][0]["ranks"]
    latencies = [r["since"] - seen[r["port"]] for r in ranks if r["port"] in seen]
    dpctl(env, "down", f"bench-v{n}")
    return elapsed, latencies


def run_bare(image: vllm_image.Image, n: int, logs: Path) -> float:
    procs = []
    began = time.monotonic()
    for i in range(n):
        argv, env = bare_argv(image, BARE_PORT + i)
        with (logs / f"bare-{n}-{i}.log").open("w") as log:
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    try:
        waiting = {BARE_PORT + i for i in range(n)}
        while waiting:
            if any(p.poll() is not None for p in procs):
                sys.exit(f"a bare vllm serve exited early; see {logs}")
            waiting = {port for port in waiting if not healthy(port)}
            time.sleep(POLL)
        return time.monotonic() - began
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--ranks", default="1,2")
    args = parser.parse_args()
    sizes = [int(n) for n in args.ranks.split(",")]
    image = vllm_image.image(say=print)
    home = Path(tempfile.mkdtemp(prefix="dpctl-bench-vllm-"))
    env = {**os.environ, "DPCTL_HOME": str(home), "DPCTL_VLLM": str(image.vllm), "DPCTL_MODEL": str(image.model)}
    env.pop("RAY_ADDRESS", None)
    dpctl(env, "cluster", "up", "--nodes", "1", "--cpus-per-node", "4", "--gpus-per-node", "0")
    times: dict[tuple[str, int], list[float]] = {}
    ratios: dict[int, list[float]] = {n: [] for n in sizes}
    latencies: list[float] = []
    try:
        for round_ in range(args.warmup + args.runs):
            counted = round_ >= args.warmup
            for n in sizes:
                first_dpctl = (round_ + n) % 2 == 0
                result: dict[str, float] = {}
                for side in ("dpctl", "bare") if first_dpctl else ("bare", "dpctl"):
                    if side == "dpctl":
                        result[side], seen = run_dpctl(env, config(home, n), n)
                        if counted:
                            latencies += seen
                    else:
                        result[side] = run_bare(image, n, home)
                tag = "" if counted else " (warm-up)"
                print(f"round {round_ + 1}, {n} rank(s): dpctl {result['dpctl']:.1f}s, bare {result['bare']:.1f}s{tag}")
                if counted:
                    for side, value in result.items():
                        times.setdefault((side, n), []).append(value)
                    ratios[n].append(result["dpctl"] / result["bare"])
    finally:
        cluster_down(env)
    print("\n| ranks | `dpctl up` (median) | bare `vllm serve` (median) | ratio (median of per-round) |")
    print("|---:|---:|---:|---:|")
    for n in sizes:
        d, b = statistics.median(times[("dpctl", n)]), statistics.median(times[("bare", n)])
        print(f"| {n} | {d:.1f} s | {b:.1f} s | **{statistics.median(ratios[n]):.3f}x** |")
    if latencies:
        ordered = sorted(latencies)
        print(
            f"\nreadiness latency (/health 200 -> READY): p50 {statistics.median(ordered) * 1000:.0f} ms, "
            f"max {ordered[-1] * 1000:.0f} ms over {len(ordered)} ranks"
        )


if __name__ == "__main__":
    main()
