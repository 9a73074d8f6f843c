"""Checking a plan read from a file before anything is created: is it a plan dpctl could make, and does it fit now.

A plan file is a document anyone can edit. `check_plan` holds it to the rules a plan obeys (ranks in order,
bundles as its strategy places them, local ranks and dp_local as the pack mode counts them); `check_fits`
holds it to the cluster as it is now (every node present and able to hold what the plan puts on it). Each
raises PlanFileError naming the first violation.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from dpctl_ray.errors import BadInput
from dpctl_ray.planner.labels import value_of
from dpctl_ray.planner.model import STRATEGY, Node, Plan, units


class PlanFileError(BadInput):
    """A plan file that is not a plan dpctl would make, or no longer fits the cluster."""

    default_code = "bad_plan_file"


def check_plan(plan: Plan) -> None:
    """The plan obeys the rules of its spec (ranks, strategies, nodes, local ranks, dp_local).

    Spares obey the rules of ranks dp..dp+K-1, as they were planned; an error names a spare as `spares[i]`.
    """
    try:
        _check_ranks(plan.whole())
    except PlanFileError as exc:
        exc.message = _spares_named(exc.message, plan.spec.dp)
        raise


def _spares_named(message: str, dp: int) -> str:
    """`ranks[dp + i]` in a message about the whole plan is `spares[i]` in the file."""
    return re.sub(r"ranks\[(\d+)\]", lambda m: m[0] if int(m[1]) < dp else f"spares[{int(m[1]) - dp}]", message)


def _check_ranks(plan: Plan) -> None:
    spec = plan.spec
    known = {n.id for n in plan.nodes}
    if spec.master not in known:
        raise PlanFileError(f"spec.master: {spec.master!r} is not one of the plan's nodes")
    if [r.rank for r in plan.ranks] != list(range(spec.dp)):
        raise PlanFileError(f"ranks: must list ranks 0..{spec.dp - 1} in order, one each")
    strategy = STRATEGY[spec.pack]
    local: dict[str, list[int]] = defaultdict(list)
    for r in plan.ranks:
        path = f"ranks[{r.rank}]"
        if r.strategy != strategy:
            raise PlanFileError(f"{path}.strategy: must be {strategy} for pack {spec.pack}, got {r.strategy!r}")
        unknown = next((n for n in (*r.nodes, r.control) if n not in known), None)
        if unknown is not None:
            raise PlanFileError(f"{path}: node {unknown!r} is not one of the plan's nodes")
        if len(set(r.nodes)) != len(r.nodes):
            raise PlanFileError(f"{path}.bundles: its devices must be grouped node by node")
        if sum(r.devices) != spec.world_size:
            raise PlanFileError(f"{path}.bundles: must hold {spec.world_size} devices (tp x pp), got {sum(r.devices)}")
        if spec.pack == "span":
            if len(set(r.devices)) != 1 or len(r.nodes) < 2:
                raise PlanFileError(
                    f"{path}.bundles: a span rank takes the same number of devices on each of its nodes"
                )
            if r.control not in r.nodes:
                raise PlanFileError(f"{path}.bundles: the control bundle must be on one of the rank's nodes")
        elif len(r.nodes) != 1 or r.control != r.nodes[0]:
            raise PlanFileError(f"{path}.bundles: a {strategy} rank has every bundle on one node")
        local[r.nodes[0]].append(r.local_rank)
    if plan.ranks and plan.ranks[0].nodes[0] != spec.master:
        raise PlanFileError("ranks[0]: must be on the master (spec.master)")
    for node, ranks in local.items():
        if sorted(ranks) != list(range(len(ranks))):
            raise PlanFileError(f"ranks: the local ranks on node {node!r} must be 0..{len(ranks) - 1}, one each")
    _check_labels(plan)
    hosted = Counter(r.nodes[0] for r in plan.ranks)
    if spec.pack == "span":
        if spec.dp_local != 1:
            raise PlanFileError(f"spec.dp_local: must be 1 with pack span, got {spec.dp_local}")
        return
    if hosted[spec.master] != spec.dp_local:
        raise PlanFileError(
            f"spec.dp_local: the master hosts {hosted[spec.master]} ranks, the spec says {spec.dp_local}"
        )
    if spec.pack == "strict":
        crowded = next((n for n, c in hosted.items() if c > spec.dp_local), None)
        if crowded is not None:
            raise PlanFileError(f"ranks: node {crowded!r} hosts {hosted[crowded]} ranks; pack strict allows dp_local")


def _check_labels(plan: Plan) -> None:
    """Every node a rank uses matches the selectors and the `within` value; a rank keeps to one `rank_within` value."""
    spec = plan.spec
    if not spec.labels:
        return
    labels = {n.id: n.labels for n in plan.nodes}
    for r in plan.ranks:
        path = f"ranks[{r.rank}]"
        for node in r.nodes:
            miss = next((m for m in spec.select if not m.matches(labels[node])), None)
            if miss is not None:
                raise PlanFileError(f"{path}: node {node!r} does not match spec.select {miss}")
            if spec.within is not None and value_of(labels[node], spec.within) != spec.within_value:
                raise PlanFileError(
                    f"{path}: node {node!r} is outside {spec.within}={spec.within_value} (spec.within_value)"
                )
        if spec.rank_within is not None and len({value_of(labels[n], spec.rank_within) for n in r.nodes}) > 1:
            raise PlanFileError(f"{path}: its nodes have different values of {spec.rank_within} (spec.rank_within)")


def check_fits(plan: Plan, nodes: Iterable[Node]) -> None:
    """Every node the plan uses is in the cluster now, with what the plan (ranks and spares) puts on it free."""
    plan = plan.whole()
    spec = plan.spec
    now = {n.id: n for n in nodes}
    need: dict[str, Counter[str]] = defaultdict(Counter)
    for r in plan.ranks:
        for bundle in plan.bundles(r):
            for key, amount in bundle.resources:
                need[bundle.node][key] += units(amount)
    for planned in plan.nodes:
        if planned.id not in need:
            continue
        node = now.get(planned.id)
        if node is None:
            raise PlanFileError(
                f"nodes: {planned.id!r} ({planned.ip}) is not in the cluster now",
                hint="make a fresh plan with `dpctl plan --out FILE`",
            )
        for key, amount in sorted(need[planned.id].items()):
            free = (
                units(node.free_devices(key))
                if key == spec.device and key != "CPU"
                else units(node.available.get(key, 0.0))
            )
            if amount > free:
                raise PlanFileError(
                    f"nodes: the plan puts {amount / units(1):g} {key} on {node.id!r} ({node.ip}), "
                    f"which has {free / units(1):g} free",
                    hint="make a fresh plan with `dpctl plan --out FILE`",
                )
