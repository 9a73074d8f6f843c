"""The local cluster's record in $DPCTL_HOME: where it is, its token, and the PID of every node it started."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpctl_ray.errors import BadInput


def home() -> Path:
    """Dpctl's own state directory: $DPCTL_HOME, else ~/.dpctl."""
    return Path(os.environ.get("DPCTL_HOME") or Path.home() / ".dpctl").expanduser()


def state_path(base: Path | None = None) -> Path:
    """Where the local cluster's record (address, token, PIDs) lives."""
    return (base or home()) / "local-cluster.json"


@dataclass(slots=True)
class LocalNode:
    """One `ray start --block` process: its supervisor PID owns the node's raylet, workers and (head) GCS."""

    name: str
    ip: str
    pid: int
    head: bool
    gpus: int
    cpus: int
    log: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class LocalState:
    """The record `cluster up` writes as it goes, so `cluster down` finds every process it started."""

    address: str
    temp_dir: str
    token_file: str
    simulated_gpus: bool
    shape: dict[str, Any]
    nodes: list[LocalNode] = field(default_factory=list)
    started: float = 0.0
    client_port: int = 0  # the head's Ray Client server (ray://), when grpcio is installed

    def save(self) -> None:
        """Write the record atomically (a crash mid-write must not lose the PIDs)."""
        path = state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    def env(self) -> dict[str, str]:
        """What a process needs in its environment to talk to this cluster (token auth)."""
        return auth_env(self.token_file)


def ray_version() -> str:
    """The installed Ray's version, read without importing Ray (which reads its auth settings on import)."""
    from importlib import metadata  # noqa: PLC0415 - not imported by every command (~9 ms)

    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return "?"


def token_auth_supported() -> bool:
    """Whether the installed Ray has token authentication (newer than 2.49), found without importing Ray."""
    spec = importlib.util.find_spec("ray")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return any((Path(where) / "_private" / "authentication").is_dir() for where in locations)


def auth_env(token_file: str) -> dict[str, str]:
    """Token auth with this cluster's own token, whatever the user's Ray settings are."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_file}


def load_state() -> LocalState | None:
    """The local cluster's record, or None when none was started from this DPCTL_HOME."""
    return load_state_at(home())


def load_state_at(base: Path) -> LocalState | None:
    """The record of the local cluster started from the DPCTL_HOME `base`."""
    try:
        raw = json.loads(state_path(base).read_text())
        nodes = [LocalNode(**n) for n in raw.pop("nodes")]
        return LocalState(**raw, nodes=nodes)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise BadInput(
            f"the local cluster record {state_path()} is unreadable ({exc})",
            hint="stop its Ray processes by hand and delete the file",
        ) from None


def running_state() -> LocalState | None:
    """The local cluster's record if its head is alive and answering, else None."""
    state = load_state()
    if state is None or not state.nodes or not process_alive(state.nodes[0].pid):
        return None
    return state if port_open(state.address) else None


def port_open(address: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at host:port (cheap check before ray.init, which hangs)."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("ray://")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def process_alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by the process that started it, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
