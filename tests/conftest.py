"""Shared fixtures: an in-process CLI runner, inventory files, and one real multi-node Ray cluster per session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from dpctl_ray.cli.app import app
from dpctl_ray.config import LocalCluster
from dpctl_ray.local import nodes as local
from dpctl_ray.local import state as local_state
from dpctl_ray.local.state import LocalState

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_INVENTORY = ROOT / "configs" / "inventories" / "two-nodes.yaml"

# The session cluster's own DPCTL_HOME and token. Ray reads its auth settings when it is first imported,
# so they are in the environment before any test (or in-process CLI call) imports ray.
SESSION_HOME = Path(tempfile.mkdtemp(prefix="dpctl-tests-"))
os.environ.update(local_state.auth_env(str(SESSION_HOME / "auth_token")))
os.environ.pop("RAY_AUTH_TOKEN", None)
os.environ.pop("RAY_ADDRESS", None)
# The processes the tests start (dpctl as users run it, Ray's drivers) read and write bytecode caches, as on
# any normal install: without them every one of several hundred dpctl runs compiles ~0.4 s of source again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
CLUSTER_SHAPE = LocalCluster(nodes=4, gpus_per_node=4, cpus_per_node=4)

Invoke = Callable[..., Result]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalState]:
    """A head and four worker nodes (127.0.0.2-5, 4 simulated GPUs and 4 CPUs each), shared by the session."""
    previous = os.environ.get("DPCTL_HOME")
    os.environ["DPCTL_HOME"] = str(SESSION_HOME)
    try:
        state = local.start(CLUSTER_SHAPE, say=lambda _: None)
    finally:
        if previous is None:
            os.environ.pop("DPCTL_HOME", None)
        else:
            os.environ["DPCTL_HOME"] = previous
    yield state
    os.environ["DPCTL_HOME"] = str(SESSION_HOME)
    local.stop(state, say=lambda _: None)
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def vllm_image() -> Any:
    """The node image with real vLLM (built once per machine); skipped with its reason where it cannot be built.

    With DPCTL_REQUIRE_VLLM=1 (CI) a missing image fails the tests instead: real vLLM must have run.
    """
    from tests import vllm_image as images

    try:
        return images.image(say=lambda line: print(f"\n{line} (once per machine, a few minutes)", flush=True))
    except images.Unavailable as exc:
        if os.environ.get("DPCTL_REQUIRE_VLLM") == "1":
            pytest.fail(f"real vLLM is required here (DPCTL_REQUIRE_VLLM=1) but cannot run: {exc}")
        pytest.skip(f"real vLLM cannot run here: {exc}")


@pytest.fixture
def live(ray_cluster: LocalState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> LocalState:
    """Commands in this test find the session cluster as "the running local cluster"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DPCTL_HOME", str(SESSION_HOME))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return ray_cluster


@contextmanager
def ray_driver(state: LocalState) -> Iterator[Any]:
    """This test process joined to the cluster as a driver in the dpctl namespace, for checks and set-up."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address=state.address, namespace="dpctl", logging_level="ERROR", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """Run dpctl in-process, in an empty directory, with no cluster address inherited from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("DPCTL_DEBUG", raising=False)
    monkeypatch.setenv("DPCTL_HOME", str(tmp_path / "dpctl-home"))
    monkeypatch.delenv("COLUMNS", raising=False)
    return _invoker()


@pytest.fixture
def live_cli(live: LocalState) -> Invoke:
    """In-process dpctl against the session cluster."""
    return _invoker()


def _invoker() -> Invoke:
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env=env)

    return invoke


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[[str, Any], str]:
    """Write a document as YAML under tmp_path and return its path."""

    def write(name: str, doc: Any) -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return str(path)

    return write


def gpu_nodes(count: int, gpus: int = 8, cpus: int = 64, head: bool = True) -> dict[str, Any]:
    """An inventory document: an optional CPU-only head, then `count` identical GPU nodes."""
    nodes: list[dict[str, Any]] = []
    if head:
        nodes.append({"id": "head", "ip": "10.0.0.1", "head": True, "resources": {"CPU": 16}})
    nodes += [
        {"id": f"gpu-{i:03d}", "ip": f"10.0.{1 + i // 250}.{1 + i % 250}", "resources": {"CPU": cpus, "GPU": gpus}}
        for i in range(count)
    ]
    return {"nodes": nodes}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave no session home behind, whether or not the cluster was started."""
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


def dpctl_env(**extra: str) -> dict[str, str]:
    """The environment of a dpctl subprocess that finds the session cluster as its local cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "COLUMNS")}
    env["DPCTL_HOME"] = str(SESSION_HOME)
    env.update(extra)
    return env


def dpctl(*args: str, cwd: Path | None = None, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run dpctl in its own process (as a user would), against the session cluster."""
    return subprocess.run(
        [sys.executable, "-m", "dpctl_ray", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dpctl_env(**extra),
        cwd=cwd or ROOT,
        check=False,
    )


def dpctl_background(*args: str, cwd: Path | None = None, **extra: str) -> subprocess.Popen[str]:
    """Start dpctl in its own process and return at once (for signals and races)."""
    return subprocess.Popen(
        [sys.executable, "-m", "dpctl_ray", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dpctl_env(**extra),
        cwd=cwd or ROOT,
    )


def demo_config(
    directory: Path,
    name: str,
    *,
    dp: int = 2,
    tp: int = 2,
    init_seconds: float = 0.2,
    fail_ranks: tuple[int, ...] = (),
    pack: str = "strict",
    ready: float = 120,
    **placement: Any,
) -> str:
    """A config file for a demo deployment; returns its path."""
    doc = {
        "name": name,
        "placement": {"dp": dp, "tp": tp, "pack": pack, **placement},
        "engine": {"kind": "demo", "init_seconds": init_seconds, "fail_ranks": list(fail_ranks)},
        "timeouts": {"placement": 30, "ready": ready},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def leftovers(state: LocalState, name: str, wait: float = 10.0) -> list[str]:
    """Placement groups (not removed) and named actors of a deployment still in the cluster, after up to `wait` s."""
    from ray.util.placement_group import placement_group_table

    prefix = f"dpctl/{name}/"
    deadline = time.monotonic() + wait
    with ray_driver(state) as ray:
        while True:
            left = [
                f"group {info['name']} ({info['state']})"
                for info in placement_group_table().values()
                if info["name"].startswith(prefix) and info["state"] != "REMOVED"
            ] + [
                f"actor {a['name']}"
                for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith(prefix)
            ]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.25)


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, step: float = 0.2) -> Any:
    """Poll until `predicate` returns something truthy, and return it; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def interrupt(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """Ctrl-C a dpctl process and collect its output once it has exited."""
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout)
