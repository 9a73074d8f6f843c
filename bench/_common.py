"""What the launch benchmarks share: running dpctl as a user would, and stopping their local cluster."""

from __future__ import annotations

import subprocess
import sys


def dpctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`dpctl ARGS` in its own process; a failure ends the benchmark with dpctl's own message."""
    result = subprocess.run(
        [sys.executable, "-m", "dpctl_ray", *args], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        sys.exit(f"dpctl {' '.join(args)} failed:\n{result.stderr}")
    return result


def cluster_down(env: dict[str, str]) -> None:
    """Stop the benchmark's local cluster (its own DPCTL_HOME in `env`), whatever state it is in."""
    subprocess.run([sys.executable, "-m", "dpctl_ray", "cluster", "down"], env=env, capture_output=True, check=False)
