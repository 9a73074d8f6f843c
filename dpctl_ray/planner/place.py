"""plan(request): DP ranks onto nodes for the strict, fill and span pack modes, as named steps."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TypeVar

from dpctl_ray.errors import InfeasibleError
from dpctl_ray.planner.checks import SpecError, check_spec
from dpctl_ray.planner.labels import value_of
from dpctl_ray.planner.ledger import Ledger, Planning, Wanted
from dpctl_ray.planner.model import (
    Infeasible,
    InfeasibleCode,
    Node,
    Plan,
    PlanRequest,
    RankPlacement,
    ResolvedSpec,
    Skip,
)
from dpctl_ray.planner.nodes import (
    cluster_fingerprint,
    filter_nodes,
    label_skip,
    missing_label_warnings,
    named_nodes,
    node_order_key,
)
from dpctl_ray.planner.ranks import packed_ranks
from dpctl_ray.planner.scale import ScalePlan, remaining, scale
from dpctl_ray.planner.span import span_ranks
from dpctl_ray.values import show


class NoPlan(InfeasibleError):
    """The planner found no placement. `result` carries its causes as data; the CLI puts them into words."""

    def __init__(self, result: Infeasible) -> None:
        super().__init__(f"infeasible: {result.code.value}", code=result.code.value)
        self.result = result


T = TypeVar("T")


def feasible(result: T | Infeasible) -> T:
    """The plan (or delta); an infeasible result raises NoPlan, which carries it to the CLI to be put into words."""
    if isinstance(result, Infeasible):
        raise NoPlan(result)
    return result


def plan(request: PlanRequest) -> Plan | Infeasible:
    """Place ranks 0..dp-1 (and spares); the same request always gives the same plan, whatever the node order.

    Input that no cluster state could make right (an unknown master, an allow-list that matches no node, no
    nodes at all) raises SpecError; a plan the cluster cannot hold is an Infeasible result.
    """
    spec = request.spec
    check_spec(spec, request.spelled)
    if not request.nodes:
        raise SpecError("inventory: lists no node", hint="an inventory lists the cluster's nodes under `nodes:`")
    ordered = sorted(request.nodes, key=node_order_key)
    candidates, skipped, warnings = filter_nodes(ordered, spec, request.spelled)
    warnings += missing_label_warnings(candidates, spec, request.spelled)
    fingerprint = cluster_fingerprint(request.nodes, spec.device, spec.bundles or "per_node", spec.labels)
    alone = dataclasses.replace(request, spec=dataclasses.replace(spec, spares=0)) if spec.spares else request
    if spec.within is not None:
        result = _plan_within(alone, spec.within, ordered, candidates, skipped, warnings, fingerprint)
    else:
        result = _plan_on(alone, ordered, candidates, skipped, warnings, fingerprint)
    return _with_spares(request, result) if spec.spares else result


def _with_spares(request: PlanRequest, ranks: Plan | Infeasible) -> Plan | Infeasible:
    """The plan of the ranks alone, with K spares where growing it by K ranks would put them.

    So spares never change where ranks go (nor dp_local), and they follow every rule of the spec; under
    strict they take further nodes once the ranks' nodes are full. No room for a spare is infeasible like
    no room for a rank, its number dp + the spare's.
    """
    spec = request.spec
    if isinstance(ranks, Infeasible):
        return dataclasses.replace(ranks, spec=spec)
    grown = scale(ranks, remaining(request.nodes, ranks), spec.dp + spec.spares)
    if not isinstance(grown, ScalePlan):
        return dataclasses.replace(grown, spec=spec, fingerprint=ranks.fingerprint)
    spares = tuple(dataclasses.replace(r, rank=r.rank - spec.dp) for r in grown.added)
    return dataclasses.replace(ranks, spec=dataclasses.replace(ranks.spec, spares=spec.spares), spares=spares)


def _plan_on(
    request: PlanRequest,
    ordered: list[Node],
    candidates: list[Node],
    skipped: list[Skip],
    warnings: list[str],
    fingerprint: str,
    within_value: str | None = None,
) -> Plan | Infeasible:
    """Steps 2 and 3 on these candidates: choose the master, then place the ranks."""
    spec = request.spec
    run = Planning(request, Ledger.of(candidates, spec), skipped, fingerprint)
    master = _choose_master(run, candidates)
    if isinstance(master, Infeasible):
        return master
    order = [master, *(n for n in candidates if n is not master)]
    placed = _place_span(run, order) if spec.pack == "span" else _place_packed(run, order)
    if isinstance(placed, Infeasible):
        return placed
    ranks, dp_local, run = placed
    if ranks[0].nodes[0] != master.id:
        # span under rank_within or spread: the master's value could not make a whole rank
        if spec.master != "auto":
            return run.infeasible(InfeasibleCode.MASTER_CANNOT_FIT, run.ledger.offer(master), master=master)
        master = next(n for n in candidates if n.id == ranks[0].nodes[0])
    return Plan(
        name=request.name,
        spec=ResolvedSpec.of(spec, dp_local=dp_local, master=master.id, within_value=within_value),
        ranks=tuple(ranks),
        nodes=(master, *(n for n in ordered if n is not master)),
        skipped=tuple(skipped),
        warnings=tuple(warnings),
        fingerprint=run.fingerprint,
    )


def _plan_within(
    request: PlanRequest,
    label: str,
    ordered: list[Node],
    candidates: list[Node],
    skipped: list[Skip],
    warnings: list[str],
    fingerprint: str,
) -> Plan | Infeasible:
    """Step 2a (within): plan inside one value of the label; values with the most free devices are tried first.

    A named master decides the value. The nodes of the other values are skipped, naming the label.
    """
    spec = request.spec
    groups: dict[str, list[Node]] = {}
    for node in candidates:
        groups.setdefault(value_of(node.labels, label), []).append(node)
    capacity = {value: sum(n.free_devices(spec.device) for n in nodes) for value, nodes in groups.items()}
    values = sorted(groups, key=lambda v: (-capacity[v], v))
    named = named_nodes(request.nodes, spec.master)
    if spec.master != "auto" and len(named) == 1:
        values = [value_of(named[0].labels, label)]
    failed: list[Infeasible] = []  # one per value tried: there is always one, the empty value if no other
    for value in values or [""]:
        inside = groups.get(value, [])
        result = _plan_on(request, ordered, inside, list(skipped), warnings, fingerprint, within_value=value)
        if isinstance(result, Plan):
            outside = [label_skip(n, spec, label) for n in candidates if value_of(n.labels, label) != value]
            return dataclasses.replace(result, skipped=(*result.skipped, *outside))
        failed.append(result)
    return dataclasses.replace(failed[0], within=tuple((v, capacity[v]) for v in sorted(groups)))


def _choose_master(run: Planning, candidates: list[Node]) -> Node | Infeasible:
    """Step 2: the master is named (id, else a unique ip) or, for auto, the head when it can host a rank."""
    spec = run.request.spec
    ledger = run.ledger
    if spec.master == "auto":
        if not candidates:
            return run.infeasible(InfeasibleCode.NO_NODES, ledger.best_offer(candidates))
        heads = [n for n in candidates if n.head and ledger.hosts_one(n)]
        if heads:
            return heads[0]
        return min(candidates, key=lambda n: (not ledger.hosts_one(n), -ledger.dev[n.id], n.id))
    named = named_nodes(run.request.nodes, spec.master)
    key = (run.request.spelled or {}).get("master", "placement.master")
    if not named:
        raise SpecError(
            f"{key}: no node has the id or ip {show(spec.master)}",
            hint="`dpctl inventory` lists node ids and ips; or use --master auto",
        )
    if len(named) > 1:
        raise SpecError(
            f"{key}: several nodes share the ip {show(spec.master)}",
            hint="name the master by node id (`dpctl inventory` lists them)",
        )
    master = named[0]
    if master not in candidates:
        reason = next(s for s in run.skipped if s.node == master.id)
        return run.infeasible(
            InfeasibleCode.MASTER_UNUSABLE,
            ledger.best_offer(candidates),
            master=master,
            detail=spec.master,
            skipped=(reason,),
        )
    return master


def _place_packed(run: Planning, order: list[Node]) -> tuple[list[RankPlacement], int, Planning] | Infeasible:
    """Step 3 (strict, fill): whole ranks per node; the master takes dp_local, the others per the mode.

    Returns the ranks, dp_local, and the run that placed them (its ledger and skips are the plan's).
    """
    spec = run.request.spec
    master = order[0]
    master_fits = run.ledger.ranks_fit(master)
    dp_local = spec.dp_local if spec.dp_local is not None else min(master_fits, spec.dp)
    if dp_local == 0 or master_fits < dp_local:
        offer = run.ledger.offer(master)
        return run.infeasible(InfeasibleCode.MASTER_CANNOT_FIT, offer, ranks=max(dp_local, 1), master=master)
    shared = _even_share(run, order, dp_local, spec.spread) if spec.dp_local is None and spec.spread else None
    if shared is not None:
        return shared
    ranks = packed_ranks(run, order, master, dp_local, Wanted(spec.dp))
    if len(ranks) < spec.dp:
        best = run.ledger.best_offer(order)
        return run.infeasible(InfeasibleCode.INSUFFICIENT, best, rank=len(ranks), master=master, dp_local=dp_local)
    return ranks, dp_local, run


def _even_share(
    run: Planning, order: list[Node], most: int, label: str
) -> tuple[list[RankPlacement], int, Planning] | None:
    """Auto dp_local under spread: the master's even share of dp (dp over the values that can host a rank).

    Under strict a smaller dp_local can shut nodes out, so the even share is kept only when its plan is
    whole and no less even than the plan with the master taking `most`. Each is tried on a run of its own
    (the given run is not touched); None when the even share is not the plan: the master takes `most`.
    """
    spec = run.spec
    if most <= 1:
        return None
    hosting = {value_of(n.labels, label) for n in order if run.ledger.ranks_fit(n) >= 1}
    even = min(most, -(-spec.dp // max(len(hosting), 1)))
    if even == most:
        return None
    shared_run, full_run = run.trial(), run.trial()
    shared = packed_ranks(shared_run, order, order[0], even, Wanted(spec.dp))
    if len(shared) < spec.dp:
        return None
    full = packed_ranks(full_run, order, order[0], most, Wanted(spec.dp))
    labels = {n.id: value_of(n.labels, label) for n in order}

    def crowded(placed: list[RankPlacement]) -> int:
        return max(Counter(labels[r.control] for r in placed).values())

    if len(full) == spec.dp and crowded(full) < crowded(shared):
        return full, most, full_run
    return shared, even, shared_run


def _place_span(run: Planning, order: list[Node]) -> tuple[list[RankPlacement], int, Planning] | Infeasible:
    """Step 3 (span): a rank takes whole nodes, as many as the master's free devices divide world_size."""
    spec = run.request.spec
    master = order[0]
    per_node = master.free_devices(spec.device)
    code = None
    if per_node == 0 or not run.ledger.has_cpus(master):
        code = InfeasibleCode.MASTER_CANNOT_FIT
    elif spec.world_size <= per_node:
        code = InfeasibleCode.SPAN_TOO_SMALL
    elif spec.world_size % per_node:
        code = InfeasibleCode.SPAN_UNEVEN
    if code is not None:
        return run.infeasible(code, run.ledger.offer(master), master=master)
    ranks = span_ranks(run, order, per_node, Wanted(spec.dp))
    if len(ranks) < spec.dp:
        return run.infeasible(InfeasibleCode.INSUFFICIENT, run.ledger.best_offer(order), rank=len(ranks), master=master)
    return ranks, 1, run
