"""What the launcher tells the engine hosts on the nodes: who each host is, what it holds, and the work it runs.

A rank has one host per node it spans. A host holds the rank's devices on its node (claimed by the host
itself in the per_node layout, by one device worker per bundle in per_device) and runs the work the
launcher gives it: a rank's engine (demo, python), or a process of a command engine that may serve
several ranks (vLLM's per-node modes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpctl_ray.engines.base import EngineContext
from dpctl_ray.engines.spec import CommandSpec, DemoSpec, PythonSpec
from dpctl_ray.engines.template import ReadyCheck
from dpctl_ray.planner.model import Layout


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One host: whose devices it holds on which node of its rank, and where it reports."""

    deployment: str
    token: str
    stream: str | None  # tcp://ip:port of the launcher's readiness socket, if any
    rank: int
    node_index: int  # which node of the rank (0 for a rank on one node)
    local_rank: int
    device: str
    layout: Layout
    device_bundles: tuple[int, ...]  # per_device: the bundles of this host's devices (a worker on each)
    log_dir: str
    base_port: int  # 0: a free port on the node
    spare: int | None = None  # a started spare's host (its number) until a lost rank takes it over


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What a host learned once placed: its node, the device ids Ray granted it, its port."""

    rank: int
    node_index: int
    node: str
    ip: str
    devices: tuple[str, ...]
    port: int
    pid: int
    worker_pids: tuple[int, ...]
    log_path: str
    workers: tuple[Any, ...] = ()  # per_device: the device workers' actor handles
    streaming: bool = True  # False: no pyzmq on the node, so no readiness stream from it


@dataclass(frozen=True, slots=True)
class EngineWork:
    """A rank's engine (demo or python), run by the host on its control node."""

    spec: DemoSpec | PythonSpec
    ctx: EngineContext


@dataclass(frozen=True, slots=True)
class ProcessWork:
    """One process of a command engine, rendered by the launcher, and the ranks it serves."""

    spec: CommandSpec
    ranks: tuple[int, ...]  # in local-rank order
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    unset: tuple[str, ...]  # variables not to pass on (the device variable Ray set for the host, with "none")
    ready: ReadyCheck | None  # None: a headless process, ready once it runs
    dp: int


Work = EngineWork | ProcessWork
