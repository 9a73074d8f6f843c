"""Strict and fill ranks onto nodes, for plan, scale and repair alike, and under `spread`.

Under spread the value holding the fewest ranks goes next. Span ranks are `span`; the run and its ledger
`ledger`.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable

from dpctl_ray.planner.labels import value_of
from dpctl_ray.planner.ledger import Planning, Wanted
from dpctl_ray.planner.model import STRATEGY, Node, RankPlacement


def packed_ranks(
    run: Planning, order: Iterable[Node], master: Node | None, dp_local: int, wanted: Wanted
) -> list[RankPlacement]:
    """Up to `wanted.count` strict/fill ranks numbered from `wanted.first_rank`, node by node in `order`.

    `wanted.hosted` counts the ranks each node already holds (a running deployment's, for a scale-up): the
    master and, under strict, every node is filled up to dp_local; under fill other nodes take what fits.
    Local ranks continue from what a node already holds. With `spread`, `wanted.spread_counts` are the ranks
    each value already holds.
    """
    spec, ledger, skipped = run.spec, run.ledger, run.skipped
    if spec.spread is not None:
        return _spread_packed(run, order, master, dp_local, wanted, spec.spread)
    hosted, first_rank, count = wanted.hosted, wanted.first_rank, wanted.count
    strategy = STRATEGY[spec.pack]
    strict = spec.pack == "strict"
    devices = (spec.world_size,)
    ranks: list[RankPlacement] = []
    for node in order:
        remaining = count - len(ranks)
        if remaining == 0:
            break
        have = hosted.get(node.id, 0)
        fits = ledger.ranks_fit(node)
        if strict or node is master:
            take = min(dp_local - have, remaining)
            if take <= 0:
                continue  # already holds its dp_local ranks
            if fits < take:
                skipped.append(ledger.skip_short(node, take))
                continue
        else:
            take = min(fits, remaining)
            if take == 0:
                skipped.append(ledger.skip_short(node, 1))
                continue
        node_id = node.id
        nodes = (node_id,)
        first = first_rank + len(ranks)
        ranks += [RankPlacement(first + i, have + i, strategy, nodes, devices, node_id) for i in range(take)]
        ledger.take(node, take)
    return ranks


def _spread_packed(
    run: Planning, order: Iterable[Node], master: Node | None, dp_local: int, wanted: Wanted, label: str
) -> list[RankPlacement]:
    """packed_ranks under `spread` (`label`): the next ranks always go to the value holding the fewest so far.

    Each value's nodes are taken in order. Under strict a node takes its dp_local ranks at once (a node
    hosts dp_local or none); under fill one rank at a time, the node staying first until it is full. Ranks
    are then numbered node by node in the order the nodes were first used, so a node's ranks stay
    consecutive (vLLM's per-node processes count on it). Ties go to the master's value, then by value.
    """
    spec, ledger, skipped = run.spec, run.ledger, run.skipped
    hosted, first_rank, count = wanted.hosted, wanted.first_rank, wanted.count
    queues: dict[str, deque[Node]] = {}
    for node in order:
        queues.setdefault(value_of(node.labels, label), deque()).append(node)
    first_value = value_of(master.labels, label) if master is not None else None
    placed = Counter(wanted.spread_counts)
    heap = [(placed[v], v != first_value, v) for v in queues]
    heapq.heapify(heap)
    given: dict[str, int] = {}  # node id -> ranks given now, in the order nodes were first used
    strict = spec.pack == "strict"
    short: list[tuple[str, Node, int]] = []  # strict nodes short of dp_local: each may still end the plan
    remaining = count
    replace, ranks_fit = heapq.heapreplace, ledger.ranks_fit  # one step per node: kept local
    while remaining and heap:
        if strict and remaining < dp_local and given:
            break  # the last node used hosts fewer: chosen below from every value's nodes
        _, not_first, value = heap[0]
        queue = queues[value]
        node = queue[0]
        fits = ranks_fit(node)
        if strict or node is master:
            take = min(dp_local - hosted.get(node.id, 0), remaining)
            queue.popleft()
            if take <= 0:
                take = 0
            elif fits < take:
                short.append((value, node, take))
                take = 0
        elif fits == 0:
            queue.popleft()
            if node.id not in given:
                skipped.append(ledger.skip_short(node, 1))
            take = 0
        else:
            take = 1
        if take:
            ledger.take(node, take)
            given[node.id] = given.get(node.id, 0) + take
            placed[value] += take
            remaining -= take
        if queue:
            replace(heap, (placed[value], not_first, value))
        else:
            heapq.heappop(heap)
    if remaining and strict:
        # The last node used may host fewer than dp_local: the first node with room in the value holding the
        # fewest ranks (ties as above) takes what is left, whether it came up short before or not.
        left = [(v, n) for _, _, v in sorted(heap) for n in queues[v]]
        rest = sorted([*left, *((v, n) for v, n, _ in short)], key=lambda p: (placed[p[0]], p[0] != first_value, p[0]))
        last = next(
            (
                p
                for p in rest
                if ledger.ranks_fit(p[1]) >= remaining
                and p[1].id not in given
                and hosted.get(p[1].id, 0) + remaining <= dp_local  # a scale-up: a node holds dp_local at most
            ),
            None,
        )
        if last is not None:
            value, node = last
            ledger.take(node, remaining)
            given[node.id] = remaining
            placed[value] += remaining
            remaining = 0
    skipped += [ledger.skip_short(node, need) for _, node, need in short if node.id not in given]
    strategy = STRATEGY[spec.pack]
    devices = (spec.world_size,)
    ranks: list[RankPlacement] = []
    for node_id, taken in given.items():
        have = hosted.get(node_id, 0)
        first = first_rank + len(ranks)
        ranks += [RankPlacement(first + i, have + i, strategy, (node_id,), devices, node_id) for i in range(taken)]
    return ranks
