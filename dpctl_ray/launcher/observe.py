"""Gathering a deployment's status from the cluster: its record, the nodes alive, and every engine's answer."""

from __future__ import annotations

from typing import Any

import ray

from dpctl_ray.deployment.record import Record, spare_stem
from dpctl_ray.deployment.status import (
    HEALTH_TIMEOUT,
    Answer,
    DeploymentStatus,
    HostKey,
    SpareStatus,
    SupervisorState,
    processes_of,
    rank_status,
    spare_state,
)
from dpctl_ray.launcher import nodes, objects, records, supervision
from dpctl_ray.launcher.ray_ports import answer
from dpctl_ray.launcher.records import ObjectKind, object_name


def gather(name: str | None, dying: set[str] | None = None) -> list[DeploymentStatus]:
    """Every deployment (or one), every host's health asked in parallel with one short deadline.

    `dying`: nodes already found with their raylet refusing connections (found here when not given).
    """
    wanted = [name] if name else deployment_names()
    # Supervisors first: one that stopped wrote why into the record before, so the record read next has it.
    supervisors = {dep: _supervisor(dep) for dep in wanted}
    alive = nodes.alive()
    found: list[tuple[Record | None, dict[HostKey, Any]]] = []
    for dep in wanted:
        record = records.load(dep)
        actors = objects.hosts(dep) if record is not None else {}
        calls: dict[HostKey, Any] = {}
        for rank in record.ranks if record else []:
            placement = rank.placement()
            for k in range(len(rank.nodes)):
                actor = actors.get(objects.host_name(dep, placement, k, rank.stem))
                if actor is not None:
                    calls[(rank.rank, k)] = actor.health.remote()
        found.append((record, calls))
    # A node whose raylet refuses connections is dead, though the GCS takes seconds more to say so.
    if dying is None:
        dying = nodes.unreachable({n for record, _ in found if record for r in record.ranks for n in r.nodes})
    alive -= dying
    every = [ref for _, calls in found for ref in calls.values()]
    done = set(ray.wait(every, num_returns=len(every), timeout=HEALTH_TIMEOUT)[0]) if every else set()
    out = []
    for dep, (record, calls) in zip(wanted, found, strict=True):
        ranks = []
        if record is not None:
            answers: dict[HostKey, Answer | None] = {
                (r.rank, k): (answer(calls[(r.rank, k)], done) if (r.rank, k) in calls else None)
                for r in record.ranks
                for k in range(len(r.nodes))
            }
            ranks = [rank_status(rank, record, alive, answers) for rank in record.ranks]
            processes = processes_of(answers)
        else:
            processes = []
        status = DeploymentStatus(dep, record, ranks, records.lock_holder(dep), processes, supervisors[dep])
        status.spares = _spares(record, alive) if record is not None else []
        out.append(status)
    return out


def _spares(record: Record, alive: set[str]) -> list[SpareStatus]:
    if not record.spares:
        return []
    groups = objects.group_states(records.prefix(record.name))
    started = record.spec.spares_mode == "started"
    actors = set(objects.named_actors(records.prefix(record.name))) if started else set()
    out = []
    for s in record.spares:
        name = object_name(record.name, ObjectKind.SPARE, s.rank)
        placement = s.placement()
        stem = spare_stem(s.rank)
        hosts = all(objects.host_name(record.name, placement, k, stem) in actors for k in range(len(s.nodes)))
        state = spare_state(groups.get(name), s.nodes, alive, hosts if started else None)
        out.append(SpareStatus(s.rank, s.nodes, s.ip, sum(s.devices), state))
    return out


def _supervisor(name: str) -> SupervisorState | None:
    return supervision.status(name, HEALTH_TIMEOUT)


def deployment_names() -> list[str]:
    """Every deployment in the cluster: with a record, or with leftover objects only."""
    return sorted(set(records.names()) | objects.deployments_with_objects())
