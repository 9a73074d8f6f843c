"""scale(current, nodes, dp): the ranks to add or remove so a running deployment has dp ranks.

Growing places ranks dp_old..dp-1 with the deployment's own pack mode, master, allow-list, device and
dp_local, against what the cluster has free now (the running ranks already hold theirs). Nodes are
visited in the planner's order, master first; a node that hosts fewer than dp_local ranks of the
deployment (after an earlier shrink, or the last node of strict) is topped up before new nodes are
used, and local ranks continue from the ranks already there. Shrinking removes the highest ranks, so the
survivors stay 0..dp-1 and none of them moves.

Growing takes spares first (`placement.spares`), in order: a spare becomes the next rank where it is, with
the lowest local rank free on its node; only the ranks beyond the spares are placed on free capacity.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from dpctl_ray.planner.checks import SpecError
from dpctl_ray.planner.ledger import Ledger, Planning, Wanted
from dpctl_ray.planner.model import (
    GRANULARITY,
    Infeasible,
    InfeasibleCode,
    Node,
    Plan,
    PlanRequest,
    RankPlacement,
    units,
)
from dpctl_ray.planner.nodes import cluster_fingerprint, filter_nodes, node_order_key
from dpctl_ray.planner.ranks import packed_ranks
from dpctl_ray.planner.span import span_ranks, spread_counts


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """The deployment after scaling (`plan`), and the delta: ranks to create, ranks to remove."""

    name: str
    before: int
    plan: Plan
    added: tuple[RankPlacement, ...]
    removed: tuple[int, ...]
    promoted: tuple[tuple[int, int], ...] = ()  # (rank, the spare it takes) for added ranks that take a spare

    @property
    def after(self) -> int:
        """The new number of ranks."""
        return self.plan.spec.dp


def scale(current: Plan, nodes: tuple[Node, ...], dp: int) -> ScalePlan | Infeasible:
    """The delta that takes `current` to `dp` ranks; the same inputs always give the same delta."""
    if not isinstance(dp, int) or isinstance(dp, bool) or dp < 1:
        raise SpecError(f"--dp: must be a positive integer, got {dp!r}")
    spec = current.spec
    before = len(current.ranks)
    ordered = sorted(nodes, key=node_order_key)
    fingerprint = cluster_fingerprint(nodes, spec.device, spec.bundles, spec.labels)
    if dp <= before:
        kept = current.ranks[:dp]
        after = dataclasses.replace(
            current,
            spec=dataclasses.replace(spec, dp=dp),
            ranks=kept,
            nodes=tuple(ordered),
            fingerprint=fingerprint,
        )
        return ScalePlan(current.name, before, after, (), tuple(r.rank for r in current.ranks[dp:]))
    grown = dataclasses.replace(spec, dp=dp)
    promoted = _promote(current, dp)
    current = dataclasses.replace(
        current, ranks=(*current.ranks, *(r for r, _ in promoted)), spares=current.spares[len(promoted) :]
    )
    before_spares, before = before, len(current.ranks)
    candidates, skipped, warnings = filter_nodes(ordered, grown, within_value=spec.within_value)
    counts = spread_counts(current.ranks, nodes, spec.spread)
    run = Planning(PlanRequest(current.name, grown, nodes), Ledger.of(candidates, grown), skipped, fingerprint)
    master = next((n for n in candidates if n.id == spec.master), None)
    order = [*([master] if master else []), *(n for n in candidates if n is not master)]
    if spec.pack == "span":
        used = {n for r in current.ranks for n in r.nodes}
        per_node = current.ranks[0].devices[0] if current.ranks else spec.world_size
        fresh = [n for n in order if n.id not in used]
        added = span_ranks(run, fresh, per_node, Wanted(dp - before, before, spread_counts=counts))
    else:
        hosted = Counter(r.control for r in current.ranks)
        added = packed_ranks(run, order, master, spec.dp_local, Wanted(dp - before, before, hosted, counts))
    if len(added) < dp - before:
        if not order:
            return run.infeasible(InfeasibleCode.NO_NODES, None, rank=before)
        best = run.ledger.best_offer(order)
        return run.infeasible(
            InfeasibleCode.INSUFFICIENT,
            best,
            rank=before + len(added),
            master=master or order[0],
            dp_local=spec.dp_local,
        )
    ranks = (*current.ranks, *added)
    after = Plan(
        name=current.name,
        spec=grown,
        ranks=ranks,
        nodes=tuple(ordered),
        skipped=tuple(skipped),
        warnings=tuple(warnings),
        fingerprint=fingerprint,
        spares=current.spares,
    )
    took = tuple((r.rank, s) for r, s in promoted)
    return ScalePlan(current.name, before_spares, after, (*(r for r, _ in promoted), *added), (), took)


def _promote(current: Plan, dp: int) -> list[tuple[RankPlacement, int]]:
    """The spares that become ranks len(ranks).. when growing to dp, each with the rank it becomes."""
    local: dict[str, set[int]] = {}
    for r in current.ranks:
        local.setdefault(r.control, set()).add(r.local_rank)
    out = []
    for number, spare in zip(range(len(current.ranks), dp), current.spares, strict=False):
        taken = local.setdefault(spare.control, set())
        local_rank = next(i for i in range(len(taken) + 1) if i not in taken) if len(spare.nodes) == 1 else 0
        taken.add(local_rank)
        out.append((dataclasses.replace(spare, rank=number, local_rank=local_rank), spare.rank))
    return out


def more_spares(current: Plan, nodes: tuple[Node, ...], count: int) -> tuple[RankPlacement, ...]:
    """Up to `count` new spares on what `nodes` have free, by the spec's rules, as many as fit.

    They are planned as the ranks after the ranks and spares there are, and take the lowest free spare numbers.
    """
    whole = current.whole()
    taken = {s.rank for s in current.spares}
    numbers = [n for n in range(len(taken) + count) if n not in taken]
    for n in range(count, 0, -1):
        result = scale(whole, nodes, len(whole.ranks) + n)
        if isinstance(result, ScalePlan):
            return tuple(dataclasses.replace(r, rank=k) for r, k in zip(result.added, numbers, strict=False))
    return ()


def remaining(nodes: tuple[Node, ...], plan: Plan) -> tuple[Node, ...]:
    """The nodes with what the plan's ranks hold subtracted from what they have free (a snapshot once it runs)."""
    held: dict[str, Counter[str]] = {}
    for rank in plan.ranks:
        for bundle in plan.bundles(rank):
            for key, amount in bundle.resources:
                held.setdefault(bundle.node, Counter())[key] += units(amount)
    return tuple(
        dataclasses.replace(node, available={k: (units(v) - used[k]) / GRANULARITY for k, v in node.available.items()})
        if (used := held.get(node.id))
        else node
        for node in nodes
    )
