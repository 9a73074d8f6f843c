"""Span ranks onto whole nodes (`pack: span`), for plan, scale and repair alike.

In node order, inside one value of `rank_within`, or spread over a label's values. The run and its ledger
are `ledger`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping

from dpctl_ray.planner.labels import value_of
from dpctl_ray.planner.ledger import Ledger, Planning, Wanted
from dpctl_ray.planner.model import STRATEGY, Node, Placement, RankPlacement, Skip, SkipReason


def span_ranks(run: Planning, order: Iterable[Node], per_node: int, wanted: Wanted) -> list[RankPlacement]:
    """Up to `wanted.count` span ranks from nodes with exactly `per_node` free devices, from `wanted.first_rank`.

    The first node in `order` (the master) starts the first rank. With `rank_within`, a rank's nodes share
    the label's value. With `spread`, see _spread_span.
    """
    spec, ledger, skipped = run.spec, run.ledger, run.skipped
    nodes, first_rank, count = list(order), wanted.first_rank, wanted.count
    if spec.spread is None:
        groups = list(itertools.islice(_span_stream(nodes, per_node, spec, ledger, skipped), count))
    else:
        groups = _spread_span(nodes, per_node, spec, ledger, skipped, count, wanted.spread_counts, spec.spread)
    strategy = STRATEGY["span"]
    return [
        RankPlacement(first_rank + i, 0, strategy, tuple(n.id for n in group), (per_node,) * len(group), control.id)
        for i, (group, control) in enumerate(groups)
    ]


def _span_stream(
    nodes: list[Node], per_node: int, spec: Placement, ledger: Ledger, skipped: list[Skip]
) -> Iterator[tuple[list[Node], Node]]:
    """Span ranks one by one (their nodes and control node), booked in the ledger as they are yielded.

    A rank takes nodes with exactly `per_node` free devices in order; under `rank_within` only nodes of one
    value of the label, the first node's value first. The control bundle goes on the first node of a group
    with CPUs for it; a group with none drops its first node.
    """
    group_size = spec.world_size // per_node
    label = spec.rank_within
    if label is not None and nodes:
        first = value_of(nodes[0].labels, label)
        nodes = [n for n in nodes if value_of(n.labels, label) == first] + [
            n for n in nodes if value_of(n.labels, label) != first
        ]
    pending: dict[str, list[Node]] = {}  # rank_within value -> nodes gathered for its next rank
    for node in nodes:
        if not _spans(node, per_node, spec, ledger, skipped):
            continue
        group = pending.setdefault(value_of(node.labels, label) if label is not None else "", [])
        group.append(node)
        if len(group) < group_size:
            continue
        control = next((n for n in group if ledger.has_cpus(n)), None)
        if control is None:
            skipped.append(ledger.skip(group[0], SkipReason.TOO_FEW_CPUS, per_node, spec.cpus))
            del group[0]
            continue
        for n in group:
            ledger.take_devices(n, per_node)
        ledger.take_cpus(control, spec.cpus)
        yield list(group), control
        group.clear()


def _spread_span(
    nodes: list[Node],
    per_node: int,
    spec: Placement,
    ledger: Ledger,
    skipped: list[Skip],
    count: int,
    spread_counts: Mapping[str, int],
    label: str,
) -> list[tuple[list[Node], Node]]:
    """Span ranks under `spread`: each next rank's engine goes to the value of `label` holding the fewest.

    A rank counts where its engine (its control node) is; `spread_counts` are the ranks each value already
    holds. Ties go to the first node's value, then by value; a value that can host no more engines drops out.

    A rank takes the rest of its nodes from its engine's value first, then from the values with the most
    nodes left, so that a small value keeps its nodes for engines of its own. Under `rank_within` all of a
    rank's nodes share one value of that label (the first node's value first): `--spread zone --rank-within
    zone` keeps every rank inside one zone.
    """
    group_size = spec.world_size // per_node
    within = spec.rank_within
    # rank_within value -> spread value -> its nodes left, in order; the first node's values come first
    pools: dict[str, dict[str, deque[Node]]] = {}
    for node in nodes:
        if not _spans(node, per_node, spec, ledger, skipped):
            continue
        by_value = pools.setdefault(value_of(node.labels, within) if within is not None else "", {})
        by_value.setdefault(value_of(node.labels, label), deque()).append(node)
    left = {d: sum(len(q) for q in values.values()) for d, values in pools.items()}
    domains = list(pools)
    next_domain: Counter[str] = Counter()  # spread value -> index of the first domain that may still host it
    first_value = value_of(nodes[0].labels, label) if nodes else None
    values = list(dict.fromkeys(v for d in pools.values() for v in d))
    placed = Counter(spread_counts)
    heap = [(placed[v], v != first_value, v) for v in values]
    heapq.heapify(heap)
    groups: list[tuple[list[Node], Node]] = []
    while len(groups) < count and heap:
        _, not_first, value = heapq.heappop(heap)
        while next_domain[value] < len(domains):
            domain = domains[next_domain[value]]
            home = pools[domain].get(value, ())
            control = next((n for n in home if ledger.has_cpus(n)), None)
            if control is not None and left[domain] >= group_size:
                break
            next_domain[value] += 1  # pools only shrink: this domain never hosts this value again
        else:
            continue
        pool = pools[domain]
        pool[value].remove(control)
        group = [control]
        for source in sorted(pool, key=lambda v: (v != value, -len(pool[v]))):
            while len(group) < group_size and pool[source]:
                group.append(pool[source].popleft())
        left[domain] -= group_size
        for n in group:
            ledger.take_devices(n, per_node)
        ledger.take_cpus(control, spec.cpus)
        groups.append((group, control))
        placed[value] += 1
        heapq.heappush(heap, (placed[value], not_first, value))
    if len(groups) < count:
        short = [n for d in pools.values() for q in d.values() for n in q if not ledger.has_cpus(n)]
        skipped.extend(ledger.skip(n, SkipReason.TOO_FEW_CPUS, per_node, spec.cpus) for n in short)
    return groups


def _spans(node: Node, per_node: int, spec: Placement, ledger: Ledger, skipped: list[Skip]) -> bool:
    """Whether the node can be one of a span rank's nodes: exactly `per_node` free devices; else a skip says why."""
    free = node.free_devices(spec.device)
    if free == per_node:
        return True
    reason = SkipReason.TOO_FEW_DEVICES if free < per_node else SkipReason.HETEROGENEOUS
    skipped.append(ledger.skip(node, reason, per_node, 0.0))
    return False


def spread_counts(ranks: Iterable[RankPlacement], nodes: Iterable[Node], label: str | None) -> Counter[str]:
    """Ranks per value of the spread label (a rank counts where its engine is), for planning more of them."""
    if label is None:
        return Counter()
    labels = {n.id: value_of(n.labels, label) for n in nodes}
    return Counter(labels.get(r.control, "") for r in ranks)
