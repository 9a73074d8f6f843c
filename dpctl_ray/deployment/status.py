"""What `status` reports: each rank's state from the facts gathered about it, the supervisor's, and the document."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dpctl_ray.deployment.record import DeploymentState, RankRecord, Record
from dpctl_ray.engines.base import HostReport, RankState
from dpctl_ray.planner.document import label_options

HEALTH_TIMEOUT = 2.0  # seconds every engine gets to answer one status call
LOST = (RankState.DEAD, RankState.FAILED)  # a rank in these states needs repair


class SupervisorPhase(str, Enum):
    """What a deployment's supervisor is doing."""

    WATCHING = "watching"
    STOPPED = "stopped"  # its budget is spent, its deployment is gone, or it failed: `reason` says which
    NOT_ANSWERING = "not answering"


@dataclass(frozen=True, slots=True)
class SupervisorState:
    """What `status` shows of a supervisor."""

    state: SupervisorPhase
    reason: str
    repairs: int  # in the current window
    max_repairs: int
    window: float

    @property
    def watching(self) -> bool:
        """Whether it watches its deployment now."""
        return self.state is SupervisorPhase.WATCHING


class SpareState(str, Enum):
    """Where a spare is: held by Ray (idle hosts running, when started), waiting for room, or lost."""

    RESERVED = "reserved"
    STARTED = "started"  # its hosts run, idle
    PENDING = "pending"  # Ray has not placed its group yet
    LOST = "lost"  # its node, group or hosts are gone


@dataclass(slots=True)
class RankStatus:
    """One rank as `status` reports it (DESIGN.md status JSON)."""

    rank: int
    local_rank: int
    state: RankState
    node: str
    ip: str
    devices: list[str]
    since: float
    detail: str = ""
    device_ips: list[str] = field(default_factory=list)
    dp: int | None = None  # the dp size the engine was last told
    port: int | None = None  # the rank's {port}
    process_pid: int | None = None  # the rank's process (command engines)


@dataclass(slots=True)
class ProcessStatus:
    """One process of a command engine as it runs: the same fields as the plan's, with the real values."""

    node: str
    ip: str
    ranks: list[int]
    api: bool
    argv: list[str]
    env: dict[str, str]
    pid: int | None
    state: RankState
    detail: str


@dataclass(slots=True)
class SpareStatus:
    """One spare as `status` reports it: where it is held, and whether Ray holds it."""

    spare: int
    nodes: list[str]
    ip: str
    devices: int
    state: SpareState


def spare_state(group: str | None, nodes: list[str], alive: set[str], hosts: bool | None = None) -> SpareState:
    """From its group's state in Ray (None: no group), the nodes alive, and (started spares) whether its hosts are."""
    if group is None or not alive.issuperset(nodes) or hosts is False:
        return SpareState.LOST
    if group != "CREATED":
        return SpareState.PENDING
    return SpareState.RESERVED if hosts is None else SpareState.STARTED


@dataclass(slots=True)
class DeploymentStatus:
    """One deployment with its ranks; `record` is None for leftovers without a record."""

    name: str
    record: Record | None
    ranks: list[RankStatus]
    busy: dict[str, Any] | None = None  # the live command changing it, if any
    processes: list[ProcessStatus] = field(default_factory=list)
    supervisor: SupervisorState | None = None  # recovery: auto: its state, reason and repairs in the window
    spares: list[SpareStatus] = field(default_factory=list)


def processes_of(hosts: Mapping[HostKey, Answer | None]) -> list[ProcessStatus]:
    """The processes the hosts run, in rank order (hosts without a process report none)."""
    reports = [a.report for _, a in sorted(hosts.items()) if a is not None and a.report is not None]
    return [
        ProcessStatus(r.node, r.ip, list(r.serves), r.api, list(r.argv), dict(r.env), r.process_pid, r.state, r.detail)
        for r in reports
        if r.argv
    ]


@dataclass(frozen=True, slots=True)
class Answer:
    """How a rank's engine host answered a health call: a report, an error, or nothing in time."""

    report: HostReport | None = None
    actor_died: bool = False  # the call failed because the actor is gone
    error: str = ""  # the health call raised this (the engine's fault)
    late: bool = False  # no answer within HEALTH_TIMEOUT


HostKey = tuple[int, int]  # (rank, index of the node among the rank's nodes)


def rank_status(
    rank: RankRecord, record: Record, alive_nodes: set[str], hosts: Mapping[HostKey, Answer | None]
) -> RankStatus:
    """A rank's status from its record, the nodes alive now, and every host's answer (None: no actor).

    The rank's own hosts hold its devices; the work serving it (its engine, or a process that may serve
    other ranks too) says whether it serves. In a group, a failed process or host fails every rank.
    """
    status = RankStatus(
        rank=rank.rank,
        local_rank=rank.local_rank,
        state=RankState.PENDING,
        node=rank.control,
        ip=rank.ip,
        devices=list(rank.granted),
        since=rank.since,
        device_ips=list(rank.device_ips),
    )
    own = [hosts.get((rank.rank, k)) for k in range(len(rank.nodes))]
    reports = [a.report for a in own if a is not None and a.report is not None]
    if reports:
        status.devices = [d for r in reports for d in r.devices]
        status.device_ips = [ip for r in reports for ip in r.device_ips]
        control = next((r for r in reports if r.node == rank.control), reports[0])
        status.node, status.ip, status.since = control.node, control.ip, control.since
    serving = [a.report for a in hosts.values() if a is not None and a.report and rank.rank in a.report.serves]
    if serving:
        first = next((r for r in serving if r.api), serving[0])
        status.port, status.process_pid, status.dp = first.port, first.process_pid, first.dp
        status.since = first.since  # since its work started serving (or failed)
    status.state, status.detail = _state(rank, record, alive_nodes, own, serving, hosts)
    return status


def _state(
    rank: RankRecord,
    record: Record,
    alive_nodes: set[str],
    own: list[Answer | None],
    serving: list[HostReport],
    hosts: Mapping[HostKey, Answer | None],
) -> tuple[RankState, str]:
    gone = [n for n in rank.nodes if n not in alive_nodes]
    if gone:
        return RankState.DEAD, f"node {gone[0][:12]} is gone"
    if rank.failed:
        return RankState.FAILED, rank.failed
    running = record.state in (DeploymentState.RUNNING, DeploymentState.FAILED)
    for answer in own:
        if answer is None:
            if running:
                return RankState.DEAD, f"engine actor is gone; `dpctl logs {record.name} -r {rank.rank}`"
            return RankState.PENDING, "waiting for placement"
        if answer.actor_died:
            return RankState.DEAD, "engine actor died"
    if record.engine.coupling == "group" and running:
        broken = _broken(record, hosts)
        if broken:
            return RankState.FAILED, f"the group is down: {broken}"
    for answer in (a for a in own if a is not None):
        if answer.error:
            return RankState.FAILED, f"health call raised {answer.error}"
        if answer.late:
            if rank.since:
                return RankState.FAILED, f"no answer to a health call in {HEALTH_TIMEOUT:g}s"
            return RankState.STARTING, "loading"
    failed = next((r for r in serving if r.state is RankState.FAILED), None)
    if failed is not None:
        return RankState.FAILED, failed.detail
    if not serving and record.state is DeploymentState.FAILED and record.engine.coupling == "group":
        size = len(record.ranks)
        return RankState.FAILED, f"the group is down after a failed restart (`dpctl scale {record.name} --dp {size}`)"
    if not serving:
        return RankState.STARTING, "no engine running"
    if all(r.state is RankState.READY for r in serving):
        api = next((r for r in serving if r.api), serving[0])
        return RankState.READY, api.detail
    return RankState.STARTING, next((r.detail for r in serving if r.state is not RankState.READY), "")


def _broken(record: Record, hosts: Mapping[HostKey, Answer | None]) -> str:
    """What is wrong with a group, if anything, in words.

    A host gone, else a process that ended (the cause: the peers that lost it are only unhealthy), else any
    failed work.
    """
    failed: list[HostReport] = []
    for (rank, k), answer in sorted(hosts.items()):
        if rank >= record.spec.dp:
            continue
        if answer is None or answer.actor_died:
            return f"rank {rank}'s engine host on node {k} is gone"
        if answer.report is not None and answer.report.state is RankState.FAILED:
            failed.append(answer.report)
    if not failed:
        return ""
    report = next((r for r in failed if r.ended), failed[0])
    served = ",".join(map(str, report.serves)) or str(report.rank)
    return f"the process of ranks {served} on {report.ip} failed: {report.detail}"


def rank_urls(status: DeploymentStatus) -> dict[int, str]:
    """Each rank's API: the process serving it, at its first rank's port (none for a headless rank's process)."""
    ports = {r.rank: (r.ip, r.port) for r in status.ranks if r.port}
    urls = {}
    for process in status.processes:
        first = min(process.ranks, default=None)
        if process.api and first in ports:
            ip, port = ports[first]
            urls.update(dict.fromkeys(process.ranks, f"http://{ip}:{port}"))
    return urls


def status_document(statuses: list[DeploymentStatus]) -> dict[str, Any]:
    """DESIGN.md status JSON."""
    deployments = []
    for s in statuses:
        record = s.record
        urls = rank_urls(s)
        deployments.append(
            {
                "name": s.name,
                "dp": record.spec.dp if record else 0,
                "world_size": record.spec.world_size if record else 0,
                "pack": record.spec.pack if record else "",
                "bundles": record.spec.bundles if record else "",
                "coupling": record.engine.coupling if record else "",
                **(label_options(record.spec) if record else {}),
                "state": record.state.value if record else "orphaned",
                "events": record.events if record else [],
                "supervisor": supervisor_document(s.supervisor),
                "spares": [
                    {"spare": p.spare, "nodes": p.nodes, "ip": p.ip, "devices": p.devices, "state": p.state.value}
                    for p in s.spares
                ],
                "processes": [
                    {
                        "node": p.node,
                        "ip": p.ip,
                        "ranks": p.ranks,
                        "api": p.api,
                        "argv": p.argv,
                        "env": p.env,
                        "pid": p.pid,
                        "state": p.state.value,
                        "detail": p.detail,
                    }
                    for p in s.processes
                ],
                "ranks": [
                    {
                        "rank": r.rank,
                        "local_rank": r.local_rank,
                        "state": r.state.value,
                        "node": r.node,
                        "ip": r.ip,
                        "devices": r.devices,
                        "since": r.since,
                        "detail": r.detail,
                        "device_ips": r.device_ips,
                        "dp": r.dp,
                        "port": r.port,
                        "process_pid": r.process_pid,
                        "url": urls.get(r.rank),
                    }
                    for r in s.ranks
                ],
            }
        )
    return {"deployments": deployments}


def supervisor_document(state: SupervisorState | None) -> dict[str, Any] | None:
    """A supervisor's state in the status document (its phase by value)."""
    if state is None:
        return None
    return {
        "state": state.state.value,
        "reason": state.reason,
        "repairs": state.repairs,
        "max_repairs": state.max_repairs,
        "window": state.window,
    }
