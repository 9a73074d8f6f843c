"""repair(current, nodes, lost): where each lost rank of a running deployment goes again, keeping its number.

A lost rank (its node gone, its engine or process dead, its engine failed) is placed again with the
deployment's own pack mode, device, allow-list and CPUs; healthy ranks do not move and keep what they hold.
A lost rank goes back where it was when its node(s) are alive and have room (what the lost rank itself holds
there counts as free: its placement group is replaced), else onto free capacity in the planner's node
order, master first. strict and fill ranks take one node; a span rank takes whole nodes with as many free
devices as each of its nodes had, none of them used by a healthy rank. A moved rank's local rank is the
lowest one free on its new node. The same inputs always give the same result.

Spares (`placement.spares`) come before free capacity: a lost rank that cannot go back where it was takes
the first spare whose nodes are alive, exactly where the spare is. A spare whose node is gone is dropped.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from dpctl_ray.planner.labels import value_of
from dpctl_ray.planner.ledger import Ledger, Planning, Wanted
from dpctl_ray.planner.model import Infeasible, InfeasibleCode, Node, Plan, PlanRequest, RankPlacement
from dpctl_ray.planner.nodes import cluster_fingerprint, filter_nodes, node_order_key
from dpctl_ray.planner.span import span_ranks, spread_counts


@dataclass(frozen=True, slots=True)
class Move:
    """One lost rank: why it was lost, where it was, and where it goes (the same node when it can)."""

    rank: int
    cause: str
    before: RankPlacement
    after: RankPlacement
    spare: int | None = None  # the spare it took (its reservation becomes the rank's)

    @property
    def in_place(self) -> bool:
        """Whether it goes back onto the node(s) it had."""
        return self.before.nodes == self.after.nodes


@dataclass(frozen=True, slots=True)
class RepairPlan:
    """The deployment after the repair (`plan`) and each lost rank's move."""

    name: str
    plan: Plan
    moves: tuple[Move, ...]
    dropped: tuple[int, ...] = ()  # spares whose nodes are gone

    @property
    def ranks(self) -> tuple[int, ...]:
        """The ranks repaired."""
        return tuple(m.rank for m in self.moves)


def repair(current: Plan, nodes: tuple[Node, ...], lost: Mapping[int, str]) -> RepairPlan | Infeasible:
    """Place every rank in `lost` (rank -> cause) again; `nodes` are the alive nodes, with what they have free."""
    spec = current.spec
    by_rank = {r.rank: r for r in current.ranks}
    missing = sorted(r for r in lost if r not in by_rank)
    if missing:
        msg = f"ranks {missing} are not ranks of {current.name}"
        raise ValueError(msg)
    lost_ranks = [by_rank[r] for r in sorted(lost)]
    ordered = sorted(_credited(nodes, lost_ranks, spec.device, spec.cpus), key=node_order_key)
    fingerprint = cluster_fingerprint(nodes, spec.device, spec.bundles, spec.labels)
    candidates, skipped, warnings = filter_nodes(ordered, spec, within_value=spec.within_value)
    run = Planning(PlanRequest(current.name, spec, nodes), Ledger.of(candidates, spec), skipped, fingerprint)
    master = next((n for n in candidates if n.id == spec.master), None)
    order = [*([master] if master else []), *(n for n in candidates if n is not master)]
    healthy = [r for r in current.ranks if r.rank not in lost]
    busy = {n for r in healthy for n in r.nodes}  # span: nodes a healthy rank uses are not free whole nodes
    local: dict[str, set[int]] = {}  # node id -> local ranks taken there by healthy (and already repaired) ranks
    for r in healthy:
        local.setdefault(r.control, set()).add(r.local_rank)
    counts = spread_counts(healthy, nodes, spec.spread)
    labels = {n.id: n.labels for n in nodes}
    alive = {n.id for n in nodes}
    spares = [s for s in current.spares if alive.issuperset(s.nodes)]
    dropped = tuple(s.rank for s in current.spares if not alive.issuperset(s.nodes))
    busy.update(n for s in spares for n in s.nodes)  # span: a spare's nodes are no free whole nodes either
    moves: list[Move] = []
    for old in lost_ranks:
        spare = None
        new = _back(old, order, run, busy, local)
        if new is None and spares:
            spare = spares.pop(0)
            new = _onto(old, spare, local)
        if new is None:
            new = _place(old, order, run, busy, local, counts)
        if new is None:
            best = run.ledger.best_offer(order)
            return run.infeasible(InfeasibleCode.INSUFFICIENT, best, rank=old.rank, master=master or None)
        busy.update(new.nodes)
        local.setdefault(new.control, set()).add(new.local_rank)
        if spec.spread is not None:
            counts[value_of(labels.get(new.control, {}), spec.spread)] += 1
        moves.append(Move(old.rank, lost[old.rank], old, new, spare.rank if spare else None))
    placed = {m.rank: m.after for m in moves}
    after = dataclasses.replace(
        current,
        ranks=tuple(placed.get(r.rank, r) for r in current.ranks),
        nodes=tuple(ordered),
        skipped=tuple(skipped),
        warnings=tuple(warnings),
        fingerprint=fingerprint,
        spares=tuple(spares),
    )
    return RepairPlan(current.name, after, tuple(moves), dropped)


def _credited(nodes: tuple[Node, ...], lost: list[RankPlacement], device: str, cpus: float) -> list[Node]:
    """The nodes with what the lost ranks hold on them counted as free (their groups are replaced)."""
    extra_dev: dict[str, float] = {}
    extra_cpu: dict[str, float] = {}
    for rank in lost:
        for node_id, count in zip(rank.nodes, rank.devices, strict=True):
            extra_dev[node_id] = extra_dev.get(node_id, 0.0) + count
        extra_cpu[rank.control] = extra_cpu.get(rank.control, 0.0) + cpus
    out: list[Node] = []
    for node in nodes:
        if node.id not in extra_dev and node.id not in extra_cpu:
            out.append(node)
            continue
        available = dict(node.available)
        if device == "CPU":
            available["CPU"] = available.get("CPU", 0.0) + extra_dev.get(node.id, 0.0) + extra_cpu.get(node.id, 0.0)
        else:
            available[device] = available.get(device, 0.0) + extra_dev.get(node.id, 0.0)
            available["CPU"] = available.get("CPU", 0.0) + extra_cpu.get(node.id, 0.0)
        out.append(dataclasses.replace(node, available=available))
    return out


def _back(
    old: RankPlacement, order: list[Node], run: Planning, busy: set[str], local: dict[str, set[int]]
) -> RankPlacement | None:
    """The lost rank where it was, if its nodes are alive and still hold it (nothing moves: no spare is spent)."""
    spec = run.request.spec
    ledger = run.ledger
    by_id = {n.id: n for n in order}
    if spec.pack != "span":
        home = by_id.get(old.control)
        if home is not None and ledger.ranks_fit(home) >= 1 and old.local_rank not in local.get(home.id, set()):
            ledger.take(home, 1)
            return old
        return None
    per_node = old.devices[0]
    own = [by_id[n] for n in old.nodes if n in by_id]
    if len(own) == len(old.nodes) and all(n.id not in busy and n.free_devices(spec.device) == per_node for n in own):
        control = by_id.get(old.control)
        if control is not None and ledger.has_cpus(control):
            for node in own:
                ledger.take_devices(node, per_node)
            ledger.take_cpus(control, spec.cpus)
            return old
    return None


def _onto(old: RankPlacement, spare: RankPlacement, local: dict[str, set[int]]) -> RankPlacement:
    """The lost rank on a spare's nodes and devices (the spare's reservation is already its own)."""
    local_rank = _free_local(local, spare.control) if len(spare.nodes) == 1 else 0
    return dataclasses.replace(spare, rank=old.rank, local_rank=local_rank)


def _free_local(local: dict[str, set[int]], node: str) -> int:
    """The lowest local rank no rank holds on the node."""
    taken = local.get(node, set())
    return next(i for i in range(len(taken) + 1) if i not in taken)


def _place(
    old: RankPlacement,
    order: list[Node],
    run: Planning,
    busy: set[str],
    local: dict[str, set[int]],
    counts: Counter[str],
) -> RankPlacement | None:
    """The lost rank on the first place with room; under `spread`, in the values holding the fewest ranks first."""
    spec = run.request.spec
    ledger = run.ledger
    if spec.pack != "span":
        label = spec.spread
        ranked = order if label is None else sorted(order, key=lambda n: counts[value_of(n.labels, label)])
        for node in ranked:
            if ledger.ranks_fit(node) >= 1:
                ledger.take(node, 1)
                return RankPlacement(
                    old.rank, _free_local(local, node.id), old.strategy, (node.id,), old.devices, node.id
                )
        return None
    per_node = old.devices[0]
    fresh = [n for n in order if n.id not in busy]
    placed = span_ranks(run, fresh, per_node, Wanted(1, old.rank, spread_counts=counts))
    if not placed:
        return None
    (rank,) = placed
    return dataclasses.replace(rank, local_rank=0)
