"""scale(current, nodes, dp): the ranks to add or remove so a running deployment has dp ranks.

Growing places ranks dp_old..dp-1 with the deployment's own pack mode, master, allow-list, device and
dp_local, against what the cluster has free now (the running ranks already hold theirs). Nodes are
visited in the planner's order, master first; a node that hosts fewer than dp_local ranks of the
deployment (after an earlier shrink, or the last node of strict) is topped up before new nodes are
used, and local ranks continue from the ranks already there. Shrinking removes the highest ranks, so the
survivors stay 0..dp-1 and none of them moves.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from dpctl_ray.planner.model import Infeasible, InfeasibleCode, Node, Plan, PlanRequest, RankPlacement
from dpctl_ray.planner.place import Planning, SpecError, cluster_fingerprint, filter_nodes, node_order_key
from dpctl_ray.planner.ranks import Ledger, packed_ranks, span_ranks, spread_counts


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """The deployment after scaling (`plan`), and the delta: ranks to create, ranks to remove."""

    name: str
    before: int
    plan: Plan
    added: tuple[RankPlacement, ...]
    removed: tuple[int, ...]

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
    candidates, skipped, warnings = filter_nodes(ordered, grown, within_value=spec.within_value)
    counts = spread_counts(current.ranks, nodes, spec.spread)
    run = Planning(PlanRequest(current.name, grown, nodes), Ledger.of(candidates, grown), skipped, fingerprint)
    master = next((n for n in candidates if n.id == spec.master), None)
    order = [*([master] if master else []), *(n for n in candidates if n is not master)]
    if spec.pack == "span":
        used = {n for r in current.ranks for n in r.nodes}
        per_node = current.ranks[0].devices[0] if current.ranks else spec.world_size
        fresh = [n for n in order if n.id not in used]
        added = span_ranks(
            fresh, per_node, grown, run.ledger, skipped, first_rank=before, count=dp - before, spread_counts=counts
        )
    else:
        hosted = Counter(r.control for r in current.ranks)
        added = packed_ranks(
            order,
            master,
            run.ledger,
            skipped,
            grown,
            spec.dp_local,
            hosted=hosted,
            first_rank=before,
            count=dp - before,
            spread_counts=counts,
        )
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
    )
    return ScalePlan(current.name, before, after, tuple(added), ())
