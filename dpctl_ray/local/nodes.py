"""A multi-node Ray cluster on this machine: one `ray start --block` per node, each on its own loopback address.

No Ray is imported here: the nodes are processes this module starts, finds by PID and stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from dpctl_ray.config import LocalCluster
from dpctl_ray.errors import BadInput, LaunchFailed
from dpctl_ray.local.state import (
    LocalNode,
    LocalState,
    home,
    load_state,
    port_open,
    process_alive,
    ray_version,
    running_state,
    state_path,
    token_auth_supported,
)

OBJECT_STORE_BYTES = 128 * 1024 * 1024  # per node; Ray's default (30% of RAM per node) is wasted on 8 simulated nodes
NODE_START_TIMEOUT = 60.0
# Ports Ray gives its own components by default (GCS, dashboard, dashboard agent); a random port that
# happens to be one of them makes `ray start` refuse to run.
RAY_DEFAULT_PORTS = frozenset({6379, 8265, 10001, 52365})


def detect_gpus() -> int:
    """Real NVIDIA GPUs on this machine (0 when there are none or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return len([line for line in out.splitlines() if line.strip()])


def start(shape: LocalCluster, say: Callable[[str], None]) -> LocalState:
    """Start a head and `shape.nodes` workers, one at a time (parallel `ray start` races for ports)."""
    existing = load_state()
    if existing is not None:
        if running_state() is not None:
            raise BadInput(
                f"a local cluster is already running at {existing.address}",
                hint="`dpctl cluster status` shows it; `dpctl cluster down` stops it",
            )
        stop(existing, say=lambda _: None)
    real_gpus = detect_gpus()
    simulated = real_gpus == 0
    base = home()
    base.mkdir(parents=True, exist_ok=True)
    token_file = base / "auth_token"
    if not token_file.exists():
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
    # Ray's socket paths must stay under ~107 bytes: keep its temp dir short, and unique to this DPCTL_HOME.
    temp_dir = f"/tmp/dpctl-{hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:10]}"  # noqa: S108 - short on purpose, see above
    port = _free_port()
    state = LocalState(
        address="",
        temp_dir=temp_dir,
        token_file=str(token_file),
        simulated_gpus=simulated,
        shape={
            "nodes": shape.nodes,
            "gpus_per_node": shape.gpus_per_node,
            "cpus_per_node": shape.cpus_per_node,
            "labels": {node: dict(labels) for node, labels in shape.labels.items()},
        },
        started=time.time(),
    )
    if not token_auth_supported():
        say(f"Ray {ray_version()} has no token authentication: the local cluster runs without it")
    if simulated and shape.gpus_per_node:
        say(
            f"no GPU on this machine: each worker node gets {shape.gpus_per_node} simulated GPUs "
            "(a Ray resource only; engines see device ids but no device)"
        )
    elif shape.gpus_per_node:
        say(f"{real_gpus} GPUs on this machine, shared out {shape.gpus_per_node} per worker node")
    try:
        head_args = [
            *("--head", "--port", str(port), "--temp-dir", temp_dir),
            # No dashboard; its port must not clash with another Ray cluster on this machine either.
            *("--include-dashboard", "false", "--dashboard-port", str(_free_port())),
        ]
        if importlib.util.find_spec("grpc") is not None:  # the head then serves Ray Client: not on a fixed port
            state.client_port = _free_port()
            head_args += ["--ray-client-server-port", str(state.client_port)]
        head = _start_node(state, "head", None, 0, 1, head_args, shape.labels.get("head", {}))
        state.address = f"{_head_ip(head)}:{port}"
        state.save()
        if state.client_port:
            _wait_client_server(state)
        say(f"started head at {state.address}")
        for i in range(shape.nodes):
            ip = f"127.0.0.{i + 2}"
            gpus = shape.gpus_per_node
            visible = None
            if not simulated:
                first = i * gpus
                visible = ",".join(str(g) for g in range(first, min(first + gpus, real_gpus)))
                gpus = len(visible.split(",")) if visible else 0
            _start_node(
                state,
                f"worker-{i + 1}",
                visible,
                gpus,
                shape.cpus_per_node,
                _worker_args(state, ip, i + 1),
                shape.labels.get(f"worker-{i + 1}", {}),
            )
            state.save()
            labelled = ", ".join(f"{k}={v}" for k, v in shape.labels.get(f"worker-{i + 1}", {}).items())
            say(
                f"started worker-{i + 1} at {ip} ({gpus} {'simulated ' if simulated else ''}GPU, "
                f"{shape.cpus_per_node} CPU{', ' + labelled if labelled else ''})"
            )
    except BaseException:
        stop(state, say=lambda _: None)
        raise
    return state


def _wait_client_server(state: LocalState) -> None:
    """Wait until the head's Ray Client server answers: Ray starts it after "Ray runtime started"."""
    address = f"127.0.0.1:{state.client_port}"
    deadline = time.monotonic() + NODE_START_TIMEOUT
    while not port_open(address, timeout=0.5):
        if time.monotonic() > deadline:
            msg = f"the head's Ray Client server did not answer at {address} within {NODE_START_TIMEOUT:.0f} s"
            raise LaunchFailed(msg, hint=f"see {home() / 'logs' / 'head.log'} and the head's ray_client_server.err")
        time.sleep(0.1)


def kill_node(state: LocalState, name: str) -> LocalNode:
    """SIGKILL one worker node's processes (its raylet, its workers): the node dies as a machine would."""
    node = next((n for n in state.nodes if n.name == name), None)
    workers = ", ".join(n.name for n in state.nodes if not n.head) or "none"
    if node is None or node.head:
        raise BadInput(
            f"{name!r} is not a worker node of the local cluster (workers: {workers})",
            hint="`dpctl cluster status` lists them; the head cannot be killed (the cluster is the head)",
        )
    if not process_alive(node.pid):
        raise BadInput(f"{name} is already gone", hint="`dpctl cluster add-node` adds a worker")
    # The supervisor, raylet and its workers share one process group; workers started from the raylet
    # carry the node's address on their command line.
    _signal_group(node.pid, signal.SIGKILL)
    _wait_gone([node.pid], timeout=5.0)
    address = f"--node-ip-address={node.ip} "  # the whole argument: 127.0.0.2 is not 127.0.0.20
    for pid in _pids_using(state.temp_dir):
        if address in _cmdline(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return node


def add_node(state: LocalState, say: Callable[[str], None]) -> LocalNode:
    """Start one more worker of the cluster's shape, on the next loopback address."""
    used = {n.ip for n in state.nodes}
    number = 2
    while f"127.0.0.{number}" in used:
        number += 1
    ip = f"127.0.0.{number}"
    index = 1 + max((int(n.name.rsplit("-", 1)[1]) for n in state.nodes if not n.head), default=0)
    gpus = state.shape.get("gpus_per_node", 0)
    cpus = state.shape.get("cpus_per_node", 1)
    node = _start_node(
        state,
        f"worker-{index}",
        None,
        gpus,
        cpus,
        _worker_args(state, ip, index),
    )
    state.save()
    say(f"started worker-{index} at {ip} ({gpus} {'simulated ' if state.simulated_gpus else ''}GPU, {cpus} CPU)")
    return node


def _worker_args(state: LocalState, ip: str, index: int) -> list[str]:
    """A worker joins the head at its own loopback address, with a temp dir of its own inside the cluster's.

    Separate machines do not share Ray's session directory; nodes on one machine would, and then a node
    starting (`add-node`) resets the runtime_env files other nodes' running workers use (under Ray's uv
    hook, the project environment a long-lived supervisor or engine host imports from). No log monitor:
    dpctl reads logs where they are written.
    """
    own = f"{state.temp_dir}/w{index}"  # short: Ray's socket paths must stay under ~107 bytes
    return ["--address", state.address, "--node-ip-address", ip, "--temp-dir", own, "--include-log-monitor", "false"]


def stop(state: LocalState, say: Callable[[str], None]) -> list[int]:
    """Stop exactly the processes this cluster started: its supervisors, then anything left in its temp dir."""
    ours = [n for n in state.nodes if _is_ours(n.pid, state)]
    workers = [n for n in ours if not n.head]
    # Workers drain in about a second on SIGTERM; the head would drain for 30 s, and nothing is left to save.
    for node in workers:
        _signal_group(node.pid, signal.SIGTERM)
    _wait_gone([n.pid for n in workers], timeout=10.0)
    for node in ours:
        _signal_group(node.pid, signal.SIGKILL)
    _wait_gone([n.pid for n in ours], timeout=5.0)
    stopped = [n.pid for n in ours]
    # Ray processes outside the supervisors' process groups: matched by this cluster's own temp dir.
    for pid in _pids_using(state.temp_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        stopped.append(pid)
    for node in state.nodes:
        say(f"stopped {node.name} ({node.ip or '?'}, pid {node.pid})")
    with contextlib.suppress(FileNotFoundError):
        state_path().unlink()
    shutil.rmtree(state.temp_dir, ignore_errors=True)
    return stopped


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(process_alive(pid) for pid in pids):
        time.sleep(0.1)


def _start_node(
    state: LocalState,
    name: str,
    visible: str | None,
    gpus: int,
    cpus: int,
    args: list[str],
    labels: Mapping[str, str] | None = None,
) -> LocalNode:
    log = home() / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **state.env(), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    # Every actor is a fresh Python worker: without cached bytecode each one compiles Ray again (~0.5 s CPU).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # Nodes are not drivers: the head's Ray Client server would otherwise apply Ray's uv hook of the shell
    # that ran `uv run dpctl cluster up`, and ask every client's job for that shell's directory.
    env["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    if name == "head":
        # The head's Ray Client server forks a server per client session while its gRPC threads run; with
        # gRPC's fork handlers on, about one such child in five died at start here (SIGSEGV; Ray issue
        # #63202) and the client's session failed. The child execs at once, the case gRPC's fork_support.md
        # says to turn the handlers off for: 0 failures in 22 fresh heads, against 4 in 17 with them on.
        env.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    ray = str(Path(sys.executable).with_name("ray"))
    if not Path(ray).exists():
        ray = shutil.which("ray") or "ray"
    argv = [
        ray,
        "start",
        "--block",
        "--disable-usage-stats",
        "--num-cpus",
        str(cpus),
        "--num-gpus",
        str(gpus),
        "--object-store-memory",
        str(OBJECT_STORE_BYTES),
        *(["--labels", ",".join(f"{k}={v}" for k, v in labels.items())] if labels else []),
        *args,
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own argv
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group: Ctrl-C in this terminal does not stop the cluster
        )
    node = LocalNode(
        name=name,
        ip="",
        pid=proc.pid,
        head=name == "head",
        gpus=gpus,
        cpus=cpus,
        log=str(log),
        labels=dict(labels or {}),
    )
    state.nodes.append(node)
    deadline = time.monotonic() + NODE_START_TIMEOUT
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise LaunchFailed(f"could not start the local cluster's {name}: {tail}", hint=f"full log: {log}")
        time.sleep(0.1)
    node.ip = args[args.index("--node-ip-address") + 1] if "--node-ip-address" in args else ""
    return node


def _head_ip(head: LocalNode) -> str:
    text = Path(head.log).read_text(errors="replace")
    for line in text.splitlines():
        if "Local node IP:" in line:
            head.ip = line.rsplit(":", 1)[1].strip()
            return head.ip
    head.ip = "127.0.0.1"
    return head.ip


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
        if port not in RAY_DEFAULT_PORTS:
            return port


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_ours(pid: int, state: LocalState) -> bool:
    """Guard against PID reuse: the process must still be a `ray start` of this cluster."""
    cmd = _cmdline(pid)
    return " start " in cmd and (state.temp_dir in cmd or (bool(state.address) and state.address in cmd))


def _pids_using(temp_dir: str) -> Iterator[int]:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and temp_dir in _cmdline(int(entry.name)):
            yield int(entry.name)
