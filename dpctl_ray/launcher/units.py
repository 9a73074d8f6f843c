"""What a launch starts, and where: each unit of work, the hosts it needs placed first, and its work.

The work is rendered from the plan and what those hosts reported (the devices Ray granted, their ports and ips).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dpctl_ray.engines.base import EngineContext
from dpctl_ray.engines.processes import Granted, HostKey, commands, process_slots
from dpctl_ray.engines.spec import CommandSpec, EngineSpec
from dpctl_ray.engines.work import EngineWork, HostInfo, ProcessWork, Work
from dpctl_ray.planner.model import Plan, RankPlacement


@dataclass(slots=True)
class Unit:
    """One unit of work: what it needs placed first, where it runs, and the ranks it serves."""

    host: HostKey
    needs: frozenset[HostKey]
    ranks: tuple[int, ...]
    headless: bool = False
    work: Work | None = None


def units(plan: Plan, engine: EngineSpec, ranks: Mapping[int, RankPlacement]) -> list[Unit]:
    """The work to start for these ranks: a process per slot of a command engine, else each rank's engine."""
    if isinstance(engine, CommandSpec):
        out = []
        for slot in process_slots(plan, engine):
            if not set(slot.ranks) & ranks.keys():
                continue
            needs = {slot.host} | {(r, ranks[r].nodes.index(slot.node)) for r in slot.ranks}
            out.append(Unit(slot.host, frozenset(needs), slot.ranks, headless=not slot.api))
        return out
    return [
        Unit((r.rank, r.nodes.index(r.control)), frozenset((r.rank, k) for k in range(len(r.nodes))), (r.rank,))
        for r in ranks.values()
    ]


def work(
    unit: Unit,
    plan: Plan,
    engine: EngineSpec,
    ranks: Mapping[int, RankPlacement],
    infos: Mapping[HostKey, HostInfo],
    node_ips: Mapping[str, str],
    master_port: int,
) -> Work:
    """A unit's work, rendered from the plan and what its hosts reported (`infos`: devices, ports, ips)."""
    if isinstance(engine, CommandSpec):
        granted = Granted(
            {key: info.devices for key, info in infos.items()},
            {key: info.port for key, info in infos.items()},
            {**node_ips, **{info.node: info.ip for info in infos.values()}},
        )
        (command,) = [
            c for c in commands(plan, engine, granted, master_port, set(unit.ranks)) if c.slot.host == unit.host
        ]
        return ProcessWork(
            engine, command.slot.ranks, command.argv, command.env, command.unset, command.ready, plan.spec.dp
        )
    rank = ranks[unit.ranks[0]]
    host = infos[unit.host]
    held = [infos[(rank.rank, k)] for k in range(len(rank.nodes))]
    rank0 = next((r for r in plan.ranks if r.rank == 0), rank)
    ctx = EngineContext(
        deployment=plan.name,
        rank=rank.rank,
        local_rank=rank.local_rank,
        dp=plan.spec.dp,
        dp_local=plan.spec.dp_local,
        world_size=plan.spec.world_size,
        device=plan.spec.device,
        devices=tuple(d for info in held for d in info.devices),
        device_ips=tuple(info.ip for info in held for _ in info.devices),
        node_id=host.node,
        node_ip=host.ip,
        master_ip=node_ips.get(rank0.nodes[0], ""),
        master_port=master_port,
        port=host.port,
        tp=plan.spec.tp,
        pp=plan.spec.pp,
        workers=tuple(w for info in held for w in info.workers),
    )
    return EngineWork(engine, ctx)  # type: ignore[arg-type]
