"""The local cluster: `dpctl up` on a machine with nothing running, and `dpctl cluster up|status|down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpctl_ray.launcher.cluster import RAY_CURRENT_CLUSTER
from dpctl_ray.local import nodes as local
from dpctl_ray.local import state as local_state

pytestmark = pytest.mark.ray


def run(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["DPCTL_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "dpctl_ray", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
        check=False,
    )


@pytest.mark.skipif(RAY_CURRENT_CLUSTER.exists(), reason="a Ray cluster started with `ray start` is on this machine")
def test_up_on_a_fresh_machine_starts_its_own_cluster(ray_cluster: local_state.LocalState, tmp_path: Path) -> None:
    """With nothing running, `dpctl up` starts the local cluster and the demo; other processes see and remove it."""
    home = tmp_path / "home"
    up = run(home, "up", cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        assert "no Ray cluster running: starting a local one (head + 2 worker nodes" in up.stderr
        assert "simulated GPUs" in up.stderr
        assert "demo: 2 of 2 ranks ready" in up.stderr

        status = run(home, "status", "-o", "json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        (dep,) = json.loads(status.stdout)["deployments"]
        assert [r["state"] for r in dep["ranks"]] == ["READY", "READY"]

        table = run(home, "cluster", "status", cwd=tmp_path)
        assert table.returncode == 0, table.stderr
        assert "worker-2   127.0.0.3" in table.stdout
        doc = json.loads(run(home, "cluster", "status", "-o", "json", cwd=tmp_path).stdout)
        assert doc["running"] is True
        assert [n["ip"] for n in doc["nodes"][1:]] == ["127.0.0.2", "127.0.0.3"]

        again = run(home, "cluster", "up", cwd=tmp_path)
        assert again.returncode == 0
        assert "a local cluster is already running" in again.stderr

        down = run(home, "down", cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        assert "demo: removed 2 engines" in down.stderr
        state = local_state.load_state_at(home)
        assert state is not None
    finally:
        stopped = run(home, "cluster", "down", cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(local_state.process_alive(n.pid) for n in state.nodes)
    assert not list(local._pids_using(state.temp_dir))
    # The session's own cluster, another Ray cluster on this machine, is untouched.
    assert local_state.process_alive(ray_cluster.nodes[0].pid)
    assert local_state.port_open(ray_cluster.address)
    assert run(home, "cluster", "down", cwd=tmp_path).stderr.strip() == "no local cluster running: nothing to stop"
