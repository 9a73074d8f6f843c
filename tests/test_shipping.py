"""dpctl on a cluster whose nodes have Ray and nothing of dpctl: its code, and a user's engine, travel with the job.

The nodes here run from a virtualenv with only `ray` (made with uv from its cache, outside the checkout), each
in a mount namespace with a tmpfs over the checkout and over the directory of the user's config and engine
module: what separate machines see. dpctl runs as an installed command (the project venv's `dpctl`, Ray's uv
hook off), from a directory outside the checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray
import yaml

from dpctl_ray.local import nodes as local
from dpctl_ray.local import state as local_state

ROOT = Path(__file__).resolve().parent.parent
DPCTL = ROOT / ".venv" / "bin" / "dpctl"

pytestmark = pytest.mark.ray


def _unshare_works() -> str:
    """Why nodes cannot be hidden from the checkout here ("" when they can)."""
    if not shutil.which("unshare"):
        return "no unshare command"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs none {ROOT} && test ! -e {ROOT / 'pyproject.toml'}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "" if probe.returncode == 0 else f"cannot mount in a new mount namespace: {probe.stderr.strip()[:200]}"


def _uv() -> str | None:
    return os.environ.get("UV") or shutil.which("uv")


@dataclass
class HiddenCluster:
    """A head and two worker nodes that cannot see the checkout or the user's directory."""

    address: str
    temp_dir: str
    pids: list[int]
    env: dict[str, str]  # of a dpctl command run against it
    user_dir: Path  # config files and the user's engine module: hidden from the nodes
    venv: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _start(argv: list[str], hide: list[Path], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    mounts = " && ".join(f"mount -t tmpfs none {path}" for path in hide)
    script = f'{mounts} && exec "$@"'
    with log.open("w") as out:
        return subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, "node", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _wait_started(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"a hidden node did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def _stop(pids: list[int], temp_dir: str) -> None:
    """Stop exactly the nodes this module started, by PID (never `ray stop`), then what is left in their temp dir."""
    for pid in reversed(pids):  # workers first
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(local_state.process_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for pid in local._pids_using(temp_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def hidden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HiddenCluster]:
    why = _unshare_works()
    if why:
        pytest.skip(f"nodes cannot be hidden from the checkout: {why}")
    uv = _uv()
    if uv is None:
        pytest.skip("no uv to make the nodes' ray-only virtualenv")
    venv = tmp_path_factory.mktemp("ray-only") / "venv"
    made = subprocess.run(
        [uv, "venv", "--seed", "--quiet", "--python", sys.executable, str(venv)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    installed = subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), f"ray=={ray.__version__}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    user_dir = tmp_path_factory.mktemp("user")
    home = tmp_path_factory.mktemp("home")
    token = home / "auth_token"
    token.write_text(secrets.token_hex(32))
    auth = local_state.auth_env(str(token))
    temp_dir = f"/tmp/dpctl-ship-{secrets.token_hex(3)}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "DPCTL_", "VIRTUAL_ENV", "UV"))}
    node_env = {**base, **auth, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{venv / 'bin'}:{base.get('PATH', '')}"}
    node_env.pop("PYTHONPATH", None)
    ray_bin = str(venv / "bin" / "ray")
    common = ["start", "--block", "--disable-usage-stats", "--object-store-memory", str(80 * 2**20)]
    hide = [ROOT, user_dir]
    pids: list[int] = []
    port = _free_port()
    try:
        log = home / "head.log"
        head = _start(
            [ray_bin, *common, "--head", "--port", str(port), "--temp-dir", temp_dir, "--num-cpus", "1",
             "--num-gpus", "0", "--include-dashboard", "false", "--dashboard-port", str(_free_port())],
            hide, node_env, log,
        )  # fmt: skip
        pids.append(head.pid)
        _wait_started(head, log)
        ip = next(line.rsplit(":", 1)[1].strip() for line in log.read_text().splitlines() if "Local node IP:" in line)
        address = f"{ip}:{port}"
        for i, node_ip in enumerate(("127.0.0.6", "127.0.0.7")):
            log = home / f"worker-{i}.log"
            worker = _start(
                [ray_bin, *common, "--address", address, "--node-ip-address", node_ip, "--num-cpus", "2",
                 "--num-gpus", "2", "--include-log-monitor", "false"],
                hide, node_env, log,
            )  # fmt: skip
            pids.append(worker.pid)
            _wait_started(worker, log)
        env = {
            **base,
            **auth,
            "HOME": str(home),
            "DPCTL_HOME": str(home / "dpctl"),
            "RAY_ADDRESS": address,
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # as a pip-installed dpctl: no uv hook shipping the checkout
            "COLUMNS": "200",
        }
        env.pop("PYTHONPATH", None)
        yield HiddenCluster(address, temp_dir, pids, env, user_dir, venv)
    finally:
        _stop(pids, temp_dir)


def run(cluster: HiddenCluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The installed `dpctl`, from the user's directory (outside the checkout)."""
    return subprocess.run(
        [str(DPCTL), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cluster.env,
        cwd=cluster.user_dir,
        check=False,
    )


def status(cluster: HiddenCluster, name: str) -> dict:
    result = run(cluster, "status", name, "-o", "json")
    assert result.returncode == 0, result.stderr
    (deployment,) = json.loads(result.stdout)["deployments"]
    return deployment


def write(cluster: HiddenCluster, name: str, doc: dict) -> str:
    path = cluster.user_dir / name
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_the_nodes_cannot_import_dpctl_or_see_the_users_directory(hidden: HiddenCluster) -> None:
    """The control: without shipping, a task on a worker finds neither dpctl_ray nor the user's files."""
    (hidden.user_dir / "probe.txt").write_text("here")
    script = textwrap.dedent(f"""
        import importlib.util, json, os, ray
        ray.init(address={hidden.address!r}, logging_level="ERROR", log_to_driver=False)
        @ray.remote(num_gpus=1)
        def probe():
            return [importlib.util.find_spec("dpctl_ray") is not None, os.path.exists({str(ROOT / "pyproject.toml")!r}),
                    os.path.exists({str(hidden.user_dir / "probe.txt")!r})]
        print(json.dumps(ray.get(probe.remote())))
    """)
    result = subprocess.run(
        [str(hidden.venv / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        env=hidden.env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [False, False, False]


def test_up_status_logs_scale_and_down_work_on_nodes_without_dpctl(hidden: HiddenCluster) -> None:
    config = write(
        hidden,
        "demo.yaml",
        {"name": "shipped", "placement": {"dp": 1, "tp": 2}, "engine": {"kind": "demo", "init_seconds": 0}},
    )
    up = run(hidden, "up", "-f", config)
    assert up.returncode == 0, up.stderr
    assert "ModuleNotFoundError" not in up.stderr
    # Ray alone on the nodes: no pyzmq, so readiness came through Ray, and the user is told.
    assert "no pyzmq on 127.0.0." in up.stderr
    ranks = status(hidden, "shipped")["ranks"]
    assert [r["state"] for r in ranks] == ["READY"]
    logs = run(hidden, "logs", "shipped")
    assert logs.returncode == 0, logs.stderr
    assert "dpctl: ready" in logs.stdout
    scaled = run(hidden, "scale", "shipped", "--dp", "2", "-f", config)
    assert scaled.returncode == 0, scaled.stderr
    ranks = status(hidden, "shipped")["ranks"]
    assert [r["state"] for r in ranks] == ["READY", "READY"]
    assert len({r["ip"] for r in ranks}) == 2  # one rank on each hidden worker
    down = run(hidden, "down", "shipped")
    assert down.returncode == 0, down.stderr
    after = run(hidden, "status", "-o", "json")
    assert json.loads(after.stdout)["deployments"] == []


ENGINE_MODULE = '''
import os
import socket


class Hello:
    """A python engine that lives beside its config, in the user's own directory."""

    def start(self, ctx, progress):
        self.dp = ctx.dp
        ctx.log(f"hello engine: rank {ctx.rank} on {ctx.node_ip}, HELLO_WORD={os.environ.get('HELLO_WORD')}")

    def health(self):
        from dpctl_ray.engines.base import Health
        return Health(ok=True, detail=f"hello from {socket.gethostname()}")

    def set_dp(self, dp):
        self.dp = dp

    def stop(self):
        pass
'''


def test_a_python_engine_beside_its_config_starts_on_nodes_that_cannot_see_it(hidden: HiddenCluster) -> None:
    (hidden.user_dir / "hello_engine.py").write_text(ENGINE_MODULE)
    config = write(
        hidden,
        "hello.yaml",
        {
            "name": "hello",
            "cluster": {"runtime_env": {"env_vars": {"HELLO_WORD": "shipped"}}},
            "placement": {"dp": 2, "tp": 1},
            "engine": {"kind": "python", "class": "hello_engine:Hello"},
        },
    )
    elsewhere = hidden.user_dir / "elsewhere"  # run from another directory: found beside the config file
    elsewhere.mkdir(exist_ok=True)
    up = subprocess.run(
        [str(DPCTL), "up", "-f", config],
        capture_output=True,
        text=True,
        env=hidden.env,
        cwd=elsewhere,
        timeout=180,
        check=False,
    )
    try:
        assert up.returncode == 0, up.stderr
        ranks = status(hidden, "hello")["ranks"]
        assert [r["state"] for r in ranks] == ["READY", "READY"]
        logs = run(hidden, "logs", "hello", "--rank", "1")
        assert "hello engine: rank 1" in logs.stdout
        assert "HELLO_WORD=shipped" in logs.stdout
    finally:
        run(hidden, "down", "hello")


def test_runtime_env_vars_reach_a_command_engines_process(hidden: HiddenCluster) -> None:
    config = write(
        hidden,
        "cmd.yaml",
        {
            "name": "envcheck",
            "cluster": {"runtime_env": {"env_vars": {"DPCTL_TEST_GREETING": "from the config"}}},
            "placement": {"dp": 1, "tp": 1},
            "engine": {
                "kind": "command",
                "argv": ["sh", "-c", 'echo "greeting: $DPCTL_TEST_GREETING"; exec sleep 600'],
                "ready": {"log": "greeting: "},
                "stop_grace": 1,
            },
        },
    )
    up = run(hidden, "up", "-f", config)
    try:
        assert up.returncode == 0, up.stderr
        logs = run(hidden, "logs", "envcheck")
        assert "greeting: from the config" in logs.stdout
    finally:
        run(hidden, "down", "envcheck")


def test_a_pip_requirement_the_nodes_cannot_install_fails_the_launch_and_leaves_nothing(hidden: HiddenCluster) -> None:
    config = write(
        hidden,
        "pip.yaml",
        {
            "name": "badpip",
            "cluster": {"runtime_env": {"pip": ["dpctl-no-such-package==0.0.0"]}},
            "placement": {"dp": 1, "tp": 1},
            "engine": {"kind": "demo", "init_seconds": 0},
        },
    )
    up = run(hidden, "up", "-f", config, timeout=300)
    assert up.returncode == 4, up.stderr
    lines = up.stderr.strip().splitlines()
    error = next(line for line in lines if line.startswith("dpctl: error:"))
    assert "Ray could not set up its runtime_env" in error
    assert "Traceback" not in up.stderr
    after = run(hidden, "status", "-o", "json")
    assert json.loads(after.stdout)["deployments"] == []


def test_doctor_probes_every_hidden_node_with_shipped_code(hidden: HiddenCluster) -> None:
    result = run(hidden, "doctor", "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["versions"]["verdict"] == "ok"
    assert checks["auth"]["verdict"] == "ok"
    assert checks["code"]["verdict"] == "ok"
    assert "shipped to 3 nodes" in checks["code"]["detail"]
    # Ray alone on the nodes: they reach this machine, but have no pyzmq to stream readiness with.
    assert checks["readiness"]["verdict"] == "warn"
    assert "have no pyzmq" in checks["readiness"]["detail"]
    assert checks["devices"]["detail"] == "GPU: 127.0.0.6 2, 127.0.0.7 2 (4 in all)"
    assert checks["rank 0"]["verdict"] == "warn"  # the head has no GPU
    assert all("runtime_resources" in n["seen"]["dpctl_path"] for n in report["nodes"])
    table = run(hidden, "doctor")
    assert table.returncode == 0, table.stderr
    assert "  ok    code       dpctl " in table.stdout
    assert "fix: pip install pyzmq on the nodes" in table.stdout


def test_doctor_fails_a_check_that_would_fail_a_launch(hidden: HiddenCluster) -> None:
    config = write(hidden, "tpu.yaml", {"placement": {"device": "TPU"}})
    result = run(hidden, "doctor", "-f", config)
    assert result.returncode == 4, result.stderr
    assert "  FAIL  devices    no node offers TPU" in result.stdout
    assert result.stderr.strip().splitlines()[-2].startswith("dpctl: error: devices, rank 0: a launch on this")
