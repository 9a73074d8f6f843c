"""The oldest Ray dpctl supports, in its own venv: a smoke test of the whole life, and the version check.

dpctl declares `ray>=2.49.0`: 2.49 is the first release whose nodes carry the `ray.io/node-id` label that
every bundle's label selector names (2.47 and 2.48 spell it `ray.io/node_id`). The lock stays on the newest.
This test installs dpctl from the checkout with `ray==2.49.0` into a venv of its own (uv, outside the
checkout), runs cluster up, up, status, scale, down and cluster down with that venv's `dpctl`, and, while the
old cluster runs, joins it with the project's own dpctl (the newest Ray): refused before anything is created,
with the version to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OLDEST_RAY = "2.49.0"

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def old_dpctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("no uv to make the oldest Ray's venv")
    base = tmp_path_factory.mktemp("oldest-ray")
    venv = base / "venv"
    made = subprocess.run(
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)], capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr
    installed = subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), f"ray=={OLDEST_RAY}", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "DPCTL_", "VIRTUAL_ENV"))}
    env.update(
        DPCTL_HOME=str(base / "home"),
        RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",  # an installed dpctl: the uv hook would ship the project's lock
        COLUMNS="200",
    )
    dpctl = venv / "bin" / "dpctl"
    yield dpctl, env
    subprocess.run([str(dpctl), "cluster", "down"], env=env, capture_output=True, check=False, timeout=120)


def test_the_oldest_supported_ray_runs_the_whole_life(old_dpctl: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    dpctl, env = old_dpctl

    def run(*args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(dpctl), *args],
            capture_output=True,
            text=True,
            env=environ or env,
            cwd=tmp_path,
            timeout=300,
            check=False,
        )

    version = subprocess.run(
        [str(dpctl.with_name("python")), "-c", "import ray; print(ray.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.stdout.strip() == OLDEST_RAY
    started = run("cluster", "up", "--nodes", "2", "--gpus-per-node", "2", "--cpus-per-node", "2")
    assert started.returncode == 0, started.stderr
    assert f"Ray {OLDEST_RAY} has no token authentication" in started.stderr  # degraded, and said so
    up = run("up", "--name", "old", "--dp", "2", "--tp", "2")
    assert up.returncode == 0, up.stderr
    status = run("status", "old", "-o", "json")
    assert status.returncode == 0, status.stderr
    (deployment,) = json.loads(status.stdout)["deployments"]
    assert [r["state"] for r in deployment["ranks"]] == ["READY", "READY"]
    scaled = run("scale", "old", "--dp", "1")
    assert scaled.returncode == 0, scaled.stderr
    (deployment,) = json.loads(run("status", "old", "-o", "json").stdout)["deployments"]
    assert len(deployment["ranks"]) == 1

    # The project's dpctl (the newest Ray) against this cluster: one line, exit 2, what to install.
    address = json.loads((Path(env["DPCTL_HOME"]) / "local-cluster.json").read_text())["address"]
    newest = {**env, "RAY_ADDRESS": address, "DPCTL_HOME": str(tmp_path / "newest-home")}
    mismatch = subprocess.run(
        [sys.executable, "-m", "dpctl_ray", "status"],
        capture_output=True,
        text=True,
        env=newest,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert mismatch.returncode == 2, mismatch.stderr
    first, hint = mismatch.stderr.strip().splitlines()[:2]
    assert first.startswith(f"dpctl: error: the cluster at {address} runs Ray {OLDEST_RAY}")
    assert f'pip install "ray=={OLDEST_RAY}"' in hint
    assert "Traceback" not in mismatch.stderr

    # This venv has dpctl without its client extra: a ray:// address says which extra to install.
    client = run("status", "--address", "ray://127.0.0.1:10001")
    assert client.returncode == 2, client.stderr
    assert "is a Ray Client address, and Ray Client needs grpcio" in client.stderr
    assert "pip install 'dpctl-ray[client]'" in client.stderr

    down = run("down", "old")
    assert down.returncode == 0, down.stderr
    assert json.loads(run("status", "-o", "json").stdout)["deployments"] == []
    stopped = run("cluster", "down")
    assert stopped.returncode == 0, stopped.stderr
