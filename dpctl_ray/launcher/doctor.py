"""`dpctl doctor`: a preflight of one joined cluster, each check a verdict, what was found, and a fix."""

from __future__ import annotations

import dataclasses
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import dpctl_ray
from dpctl_ray.engines.probe import probe
from dpctl_ray.launcher import shipping
from dpctl_ray.launcher.apply import bind_ip
from dpctl_ray.launcher.nodes import snapshot
from dpctl_ray.local import state as local_state
from dpctl_ray.planner import Infeasible, Node, Placement, PlanRequest, SpecError, plan

PROBE_TIMEOUT = 60.0  # a node's first shipped task unpacks dpctl and starts a worker


class Verdict(str, Enum):
    """How a check came out: ok, a warning (dpctl works, with less), or a failure (a launch would fail)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    verdict: Verdict
    detail: str
    fix: str = ""


@dataclass(slots=True)
class NodeView:
    """One node as the probe found it."""

    id: str
    ip: str
    head: bool
    devices: float
    cpus: float
    seen: dict[str, Any] = field(default_factory=dict)  # the probe's answer
    error: str = ""  # why the probe failed there


@dataclass(frozen=True, slots=True)
class Report:
    """Every check, and every node."""

    address: str
    device: str
    checks: list[Check]
    nodes: list[NodeView]

    @property
    def failed(self) -> bool:
        """Whether a launch would fail."""
        return any(c.verdict is Verdict.FAIL for c in self.checks)

    def to_document(self) -> dict[str, Any]:
        """The report as JSON/YAML."""
        return {
            "address": self.address,
            "device": self.device,
            "checks": [{**dataclasses.asdict(c), "verdict": c.verdict.value} for c in self.checks],
            "nodes": [dataclasses.asdict(n) for n in self.nodes],
        }


def run(address: str, placement: Placement) -> Report:
    """Probe every alive node with a shipped task, then judge."""
    nodes = snapshot()
    device = placement.device
    views = [
        NodeView(n.id, n.ip, n.head, n.resources.get(device, 0.0), n.resources.get("CPU", 0.0))
        for n in sorted(nodes, key=lambda n: (not n.head, n.ip, n.id))
    ]
    listener, driver = _listen()
    try:
        refs = {
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(v.id, soft=False)).remote(driver): v
            for v in views
        }
        deadline = time.monotonic() + PROBE_TIMEOUT
        pending = list(refs)
        while pending and time.monotonic() < deadline:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            for ref in done:
                _answer(refs[ref], ref)
        for ref in pending:
            refs[ref].error = f"no answer in {PROBE_TIMEOUT:.0f}s"
            ray.cancel(ref, force=True)
    finally:
        if listener is not None:
            listener.close()
    checks = [
        _versions(views),
        _auth(),
        _code(views),
        _readiness(views, driver),
        _devices(views, device),
        _rank0(nodes, placement),
    ]
    return Report(address, device, checks, views)


def _answer(view: NodeView, ref: Any) -> None:
    try:
        view.seen = ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - whatever failed on the node is the finding
        view.error = _last_line(exc)


def _listen() -> tuple[socket.socket | None, tuple[str, int] | None]:
    """A TCP listener where launches bind their readiness socket (this driver's node address)."""
    ip = bind_ip()
    if ip is None:
        return None, None
    sock = socket.socket()
    try:
        sock.bind((ip, 0))
    except OSError:
        sock.close()
        return None, None
    sock.listen(64)
    return sock, (ip, int(sock.getsockname()[1]))


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def _versions(views: list[NodeView]) -> Check:
    mine = f"Ray {ray.__version__}, Python {platform.python_version()}"
    odd = [
        f"{v.ip} has Ray {v.seen['ray']}, Python {v.seen['python']}"
        for v in views
        if v.seen and (v.seen["ray"], v.seen["python"]) != (ray.__version__, platform.python_version())
    ]
    if odd:
        return Check("versions", Verdict.FAIL, f"here {mine}; " + "; ".join(odd), "run every node with one Ray")
    return Check("versions", Verdict.OK, f"{mine}, here and on the cluster")


def _auth() -> Check:
    if not local_state.token_auth_supported():
        return Check(
            "auth",
            Verdict.WARN,
            f"Ray {local_state.ray_version()} has no token authentication: anyone who reaches the cluster can run code",
            "keep the cluster's ports inside a private network",
        )
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return Check("auth", Verdict.OK, "token (RAY_AUTH_MODE=token)")
    return Check(
        "auth",
        Verdict.WARN,
        "none: the cluster accepts any client that reaches it",
        "start the cluster with RAY_AUTH_MODE=token (dpctl's local cluster does)",
    )


def _code(views: list[NodeView]) -> Check:
    broken = [f"{v.ip}: {v.error}" for v in views if v.error]
    if broken:
        return Check(
            "code",
            Verdict.FAIL,
            "dpctl's code did not run on " + "; ".join(broken),
            "a runtime_env problem or a node without Ray's runtime_env agent; `ray status` and the node's logs say",
        )
    shipped = [v for v in views if "runtime_resources" in v.seen.get("dpctl_path", "")]
    if len(shipped) == len(views):
        size = sum(f.stat().st_size for f in shipping.PACKAGE.rglob("*.py")) / 1024
        return Check("code", Verdict.OK, f"dpctl {dpctl_ray.__version__} shipped to {len(views)} nodes ({size:.0f} kB)")
    installed = ", ".join(v.ip for v in views if v not in shipped)
    return Check("code", Verdict.OK, f"dpctl imported from the nodes' own install on {installed}")


def _readiness(views: list[NodeView], driver: tuple[str, int] | None) -> Check:
    if driver is None:
        return Check(
            "readiness",
            Verdict.WARN,
            "this machine has no address the nodes can use (Ray Client): launches finish on Ray's own signals",
            "run dpctl on a machine in the cluster's network for live progress",
        )
    where = f"{driver[0]}:{driver[1]}"
    unreached = [f"{v.ip} ({v.seen['reach_error']})" for v in views if v.seen and v.seen.get("reach_error")]
    no_zmq = [v.ip for v in views if v.seen and not v.seen.get("pyzmq")]
    if unreached:
        return Check(
            "readiness",
            Verdict.WARN,
            f"cannot reach {where} from " + ", ".join(unreached) + ": launches finish on Ray's signals, slower",
            "open this machine's ports to the nodes, or run dpctl inside the cluster's network",
        )
    if no_zmq:
        return Check(
            "readiness",
            Verdict.WARN,
            f"every node reaches {where}, but {', '.join(no_zmq)} have no pyzmq: no live progress from them",
            "pip install pyzmq on the nodes (vLLM brings it)",
        )
    return Check("readiness", Verdict.OK, f"every node reaches {where} and has pyzmq")


def _devices(views: list[NodeView], device: str) -> Check:
    having = [v for v in views if v.devices]
    if not having:
        return Check(
            "devices", Verdict.FAIL, f"no node offers {device}", "placement.device names the resource, e.g. GPU"
        )
    listed = ", ".join(f"{v.ip} {v.devices:g}" for v in having)
    return Check("devices", Verdict.OK, f"{device}: {listed} ({sum(v.devices for v in having):g} in all)")


def _rank0(nodes: tuple[Node, ...], placement: Placement) -> Check:
    head = next((n for n in nodes if n.head), None)
    one = dataclasses.replace(placement, dp=1, dp_local=None)
    try:
        result = plan(PlanRequest("doctor", one, nodes))
    except SpecError as exc:
        return Check("rank 0", Verdict.FAIL, str(exc), "check the placement options")
    world = placement.tp * placement.pp
    needs = f"{world} {placement.device} and {placement.cpus:g} CPU"
    if isinstance(result, Infeasible):
        return Check("rank 0", Verdict.FAIL, f"no node can host a rank ({needs}) now", "`dpctl plan` says why")
    (rank,) = result.ranks
    control = next(n for n in nodes if n.id == rank.control)
    if head is not None and control.id == head.id:
        return Check("rank 0", Verdict.OK, f"the head ({head.ip}) can host rank 0 ({needs})")
    has = f"has {head.available.get(placement.device, 0):g} free {placement.device}" if head else "is not known"
    return Check(
        "rank 0",
        Verdict.WARN,
        f"the head ({head.ip if head else '?'}) {has}; rank 0 needs {needs}: master auto puts it on {control.ip}",
        "rank 0 runs vLLM's API server and DP coordinator: set placement.master if another node should",
    )
