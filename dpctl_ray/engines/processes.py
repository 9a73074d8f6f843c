"""A command engine's processes: where each runs, which ranks it serves, and its command line, from the plan.

The same code renders `dpctl plan`'s dry run (values known only at launch shown as `<...>`) and the
launch itself (the device ids and ports the hosts report). Placeholders are plain `{name}`.

- `processes: per_rank`: a process per node of each rank (one per rank unless it spans nodes, as a vLLM
  rank with TP over two nodes does: `--nnodes {nnodes} --node-rank {node_rank}`).
- `processes: per_node`: a process per node for the ranks on it, in local-rank order (vLLM's hybrid and
  internal load balancing: `--data-parallel-size-local {node_ranks} --data-parallel-start-rank
  {node_first_rank}`); it sees its ranks' devices in that order.
- `api: first`: only the first process serves: rank 0's for a group, each rank's first node's for
  independent ranks; the others get `headless_args` (`--headless`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dpctl_ray.engines.template import ReadyCheck
from dpctl_ray.planner.model import Plan

if TYPE_CHECKING:
    from dpctl_ray.engines.spec import CommandSpec


# The device visibility variable per Ray resource key; `engine.visible_devices_env` overrides it.
VISIBLE_DEVICES_ENV = {
    "GPU": "CUDA_VISIBLE_DEVICES",
    "TPU": "TPU_VISIBLE_CHIPS",
    "NPU": "ASCEND_RT_VISIBLE_DEVICES",
    "HPU": "HABANA_VISIBLE_MODULES",
    "neuron_cores": "NEURON_RT_VISIBLE_CORES",
}

HostKey = tuple[int, int]  # (rank, index of the node among the rank's nodes)


def master_port(deployment: str, configured: int) -> int:
    """{master_port}: engine.master_port, else a port in 20000-39999 derived from the name (the same everywhere)."""
    if configured:
        return configured
    return 20000 + int(hashlib.sha256(deployment.encode()).hexdigest()[:8], 16) % 20000


@dataclass(frozen=True, slots=True)
class ProcessSlot:
    """One process: its node, the host that runs it, the ranks it serves, and whether it serves the API."""

    node: str
    host: HostKey
    ranks: tuple[int, ...]  # in local-rank order
    node_rank: int
    nnodes: int
    api: bool


def process_slots(plan: Plan, spec: CommandSpec) -> list[ProcessSlot]:
    """Every process of the plan's ranks, node by node in rank order."""
    out: list[ProcessSlot] = []
    if spec.processes == "per_node" and plan.spec.pack != "span":
        by_node: dict[str, list[int]] = {}
        for r in sorted(plan.ranks, key=lambda r: (r.local_rank, r.rank)):
            by_node.setdefault(r.nodes[0], []).append(r.rank)
        for node, ranks in sorted(by_node.items(), key=lambda item: min(item[1])):
            out.append(ProcessSlot(node, (min(ranks), 0), tuple(ranks), 0, 1, api=True))
    else:  # per_rank, and span (a node of a span rank holds part of one rank only)
        for r in plan.ranks:
            out += [
                ProcessSlot(node, (r.rank, k), (r.rank,), k, len(r.nodes), api=True) for k, node in enumerate(r.nodes)
            ]
    if spec.api == "first":
        if spec.coupling == "group":
            first = next((s for s in out if 0 in s.ranks and s.node_rank == 0), None)
            out = [_api(s, s is first) for s in out]
        else:
            out = [_api(s, s.node_rank == 0) for s in out]
    return out


def _api(slot: ProcessSlot, api: bool) -> ProcessSlot:
    return ProcessSlot(slot.node, slot.host, slot.ranks, slot.node_rank, slot.nnodes, api)


@dataclass(frozen=True, slots=True)
class Granted:
    """What the hosts report once placed: device ids and ports by host, node ips by node id.

    Missing devices and ports are shown as to be granted; a node's ip falls back to the plan's inventory.
    """

    devices: Mapping[HostKey, tuple[str, ...]]
    ports: Mapping[HostKey, int]
    ips: Mapping[str, str] = field(default_factory=dict)


def placeholder_values(
    plan: Plan, slot: ProcessSlot, granted: Granted, master_port: int, base_port: int
) -> dict[str, str]:
    """What each placeholder stands for in one process; the keys are exactly PLACEHOLDERS."""
    ranks = {r.rank: r for r in plan.ranks}
    ips = {**{n.id: n.ip for n in plan.nodes}, **granted.ips}
    lead = ranks[slot.ranks[0]]
    device = plan.spec.device

    def devices_of(rank: int) -> list[str]:
        key = (rank, ranks[rank].nodes.index(slot.node))
        if key in granted.devices:
            return list(granted.devices[key])
        return [f"<{device} ids granted to rank {rank}>"]

    port = granted.ports.get(slot.host)
    if port is None:
        port = base_port + lead.local_rank if base_port else "<a free port>"  # type: ignore[assignment]
    rank0 = ranks.get(0, lead)
    values: dict[str, object] = {
        "deployment": plan.name,
        "rank": lead.rank,
        "local_rank": lead.local_rank,
        "dp": plan.spec.dp,
        "dp_local": plan.spec.dp_local,
        "world_size": plan.spec.world_size,
        "tp": plan.spec.tp,
        "pp": plan.spec.pp,
        "master_ip": ips.get(rank0.nodes[0], ""),
        "master_port": master_port,
        "node_ip": ips.get(slot.node, ""),
        "port": port,
        "devices": ",".join(d for r in slot.ranks for d in devices_of(r)),
        "node_first_rank": slot.ranks[0],
        "node_ranks": len(slot.ranks),
        "node_rank": slot.node_rank,
        "nnodes": slot.nnodes,
        "rank_ip": ips.get(lead.nodes[0], ""),
    }
    return {key: str(value) for key, value in values.items()}


@dataclass(frozen=True, slots=True)
class Command:
    """A process rendered: its argv, its environment additions, and its readiness check (None: headless)."""

    slot: ProcessSlot
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    unset: tuple[str, ...]  # inherited variables the process must not see
    ready: ReadyCheck | None
    devices: str  # what {devices} stands for: its ranks' device ids in local-rank order


def render(spec: CommandSpec, slot: ProcessSlot, values: Mapping[str, str], device: str) -> Command:
    """The process's argv (with `headless_args` when it does not serve), env and readiness check."""
    argv = [arg.format_map(values) for arg in spec.argv]
    if not slot.api:
        argv += [arg.format_map(values) for arg in spec.headless_args]
    env = {key: value.format_map(values) for key, value in spec.env}
    unset: tuple[str, ...] = ()
    variable = spec.visible_devices_env or VISIBLE_DEVICES_ENV.get(device, "")
    if variable == "none":
        # The devices go on the command line ({devices}, as vLLM's --device-ids); the variable Ray set for the
        # host (its own devices only) would narrow what the process sees.
        unset = tuple(v for v in (VISIBLE_DEVICES_ENV.get(device),) if v)
    elif variable:
        env[variable] = values["devices"]
    ready = None
    if slot.api and spec.ready is not None:
        target = spec.ready.target if spec.ready.kind == "log" else spec.ready.target.format_map(values)
        ready = ReadyCheck(spec.ready.kind, target)
    return Command(slot, tuple(argv), tuple(env.items()), unset, ready, values["devices"])


def commands(
    plan: Plan, spec: CommandSpec, granted: Granted, master_port: int, ranks: set[int] | None = None
) -> list[Command]:
    """Every process of the plan rendered (only those serving `ranks`, when given)."""
    return [
        render(spec, slot, placeholder_values(plan, slot, granted, master_port, spec.base_port), plan.spec.device)
        for slot in process_slots(plan, spec)
        if ranks is None or set(slot.ranks) & ranks
    ]
