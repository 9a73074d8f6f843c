"""What `status` reports (no Ray here): each rank's state from the facts gathered about it, and the status document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dpctl_ray.engines.base import HostReport, RankState
from dpctl_ray.launcher.records import DeploymentState, RankRecord, Record

HEALTH_TIMEOUT = 2.0  # seconds every engine gets to answer one status call


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
class DeploymentStatus:
    """One deployment with its ranks; `record` is None for leftovers without a record."""

    name: str
    record: Record | None
    ranks: list[RankStatus]
    busy: dict[str, Any] | None = None  # the live command changing it, if any


@dataclass(frozen=True, slots=True)
class Answer:
    """How a rank's engine host answered a health call: a report, an error, or nothing in time."""

    report: HostReport | None = None
    actor_died: bool = False  # the call failed because the actor is gone
    error: str = ""  # the health call raised this (the engine's fault)
    late: bool = False  # no answer within HEALTH_TIMEOUT


def rank_status(rank: RankRecord, record: Record, alive_nodes: set[str], answer: Answer | None) -> RankStatus:
    """A rank's status from its record, the nodes alive now and its engine's answer (None: no engine actor)."""
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
    gone = [n for n in rank.nodes if n not in alive_nodes]
    if gone:
        status.state, status.detail = RankState.DEAD, f"node {gone[0][:12]} is gone"
    elif rank.failed:
        status.state, status.detail = RankState.FAILED, rank.failed
    elif answer is None:
        if record.state in (DeploymentState.RUNNING, DeploymentState.FAILED):
            logs = f"`dpctl logs {record.name} -r {rank.rank}`"
            status.state, status.detail = RankState.DEAD, f"engine actor is gone; {logs}"
        else:
            status.state, status.detail = RankState.PENDING, "waiting for placement"
    elif answer.late:
        if rank.since:
            status.state, status.detail = RankState.FAILED, f"no answer to a health call in {HEALTH_TIMEOUT:g}s"
        else:
            status.state, status.detail = RankState.STARTING, "loading"
    elif answer.actor_died:
        status.state, status.detail = RankState.DEAD, "engine actor died"
    elif answer.report is None:
        status.state, status.detail = RankState.FAILED, f"health call raised {answer.error}"
    else:
        report = answer.report
        status.state = report.state
        status.detail = report.detail
        status.devices = list(report.devices)
        status.device_ips = list(report.device_ips)
        status.node = report.node
        status.ip = report.ip
        status.since = report.since
        status.dp = report.dp
        status.port = report.port
        status.process_pid = report.process_pid
    return status


def status_document(statuses: list[DeploymentStatus]) -> dict[str, Any]:
    """DESIGN.md status JSON."""
    deployments = []
    for s in statuses:
        record = s.record
        deployments.append(
            {
                "name": s.name,
                "dp": record.spec.dp if record else 0,
                "world_size": record.spec.world_size if record else 0,
                "pack": record.spec.pack if record else "",
                "state": record.state.value if record else "orphaned",
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
                    }
                    for r in s.ranks
                ],
            }
        )
    return {"deployments": deployments}
