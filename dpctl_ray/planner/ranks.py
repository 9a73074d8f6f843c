"""Ranks onto nodes, for plan, scale and repair alike: a planning run, the Ledger of what is left, the ranks.

Both kinds also place under `spread` (the value holding the fewest ranks goes next) and `rank_within`.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from dpctl_ray.planner.labels import value_of
from dpctl_ray.planner.model import (
    GRANULARITY,
    STRATEGY,
    Infeasible,
    InfeasibleCode,
    Node,
    Offer,
    Placement,
    PlanRequest,
    RankPlacement,
    Skip,
    SkipReason,
    units,
)


def packed_ranks(
    order: Iterable[Node],
    master: Node | None,
    ledger: Ledger,
    skipped: list[Skip],
    spec: Placement,
    dp_local: int,
    *,
    hosted: Mapping[str, int],
    first_rank: int,
    count: int,
    spread_counts: Mapping[str, int] | None = None,
) -> list[RankPlacement]:
    """Up to `count` strict/fill ranks numbered from `first_rank`, node by node in `order`.

    `hosted` counts the ranks each node already holds (a running deployment's, for a scale-up): the master
    and, under strict, every node is filled up to dp_local; under fill other nodes take what fits. Local
    ranks continue from what a node already holds. With `spread`, `spread_counts` are the ranks each value
    already holds.
    """
    if spec.spread is not None:
        return _spread_packed(
            order, master, ledger, skipped, spec, dp_local, hosted, first_rank, count, spread_counts or {}, spec.spread
        )
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
    order: Iterable[Node],
    master: Node | None,
    ledger: Ledger,
    skipped: list[Skip],
    spec: Placement,
    dp_local: int,
    hosted: Mapping[str, int],
    first_rank: int,
    count: int,
    spread_counts: Mapping[str, int],
    label: str,
) -> list[RankPlacement]:
    """packed_ranks under `spread` (`label`): the next ranks always go to the value holding the fewest so far.

    Each value's nodes are taken in order. Under strict a node takes its dp_local ranks at once (a node
    hosts dp_local or none); under fill one rank at a time, the node staying first until it is full. Ranks
    are then numbered node by node in the order the nodes were first used, so a node's ranks stay
    consecutive (vLLM's per-node processes count on it). Ties go to the master's value, then by value.
    """
    queues: dict[str, deque[Node]] = {}
    for node in order:
        queues.setdefault(value_of(node.labels, label), deque()).append(node)
    first_value = value_of(master.labels, label) if master is not None else None
    placed = Counter(spread_counts)
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


def span_ranks(
    order: Iterable[Node],
    per_node: int,
    spec: Placement,
    ledger: Ledger,
    skipped: list[Skip],
    *,
    first_rank: int,
    count: int,
    spread_counts: Mapping[str, int] | None = None,
) -> list[RankPlacement]:
    """Up to `count` span ranks from nodes with exactly `per_node` free devices, numbered from first_rank.

    The first node in `order` (the master) starts rank `first_rank`. With `rank_within`, a rank's nodes share
    the label's value. With `spread`, see _spread_span.
    """
    nodes = list(order)
    if spec.spread is None:
        groups = list(itertools.islice(_span_stream(nodes, per_node, spec, ledger, skipped), count))
    else:
        groups = _spread_span(nodes, per_node, spec, ledger, skipped, count, spread_counts or {}, spec.spread)
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


@dataclass(slots=True)
class Ledger:
    """What each candidate node has left while ranks are placed, in Ray's fixed-point units.

    Devices count in whole units. When the device is CPU itself, the control bundle draws on the same
    pool: `dev` and `cpu` are then one dict and a rank's CPUs are part of `rank_dev`.
    """

    device: str
    world_size: int
    cpus: float
    span: bool
    dev: dict[str, int]  # node id -> free device units
    cpu: dict[str, int]  # node id -> free CPU units
    rank_dev: int  # units one rank takes from `dev`
    rank_cpu: int  # units one rank takes from `cpu` (0 when the device is CPU)

    @classmethod
    def of(cls, nodes: Sequence[Node], spec: Placement) -> Ledger:
        """Free devices and CPUs of these nodes, and what one rank of `spec` takes."""
        cpu = {n.id: units(n.available.get("CPU", 0.0)) for n in nodes}
        if spec.device == "CPU":
            return cls(
                spec.device,
                spec.world_size,
                spec.cpus,
                spec.pack == "span",
                cpu,
                cpu,
                units(spec.world_size) + units(spec.cpus),
                0,
            )
        device = spec.device
        dev = {n.id: n.free_devices(device) * GRANULARITY for n in nodes}  # whole devices, in units
        return cls(
            device, spec.world_size, spec.cpus, spec.pack == "span", dev, cpu, units(spec.world_size), units(spec.cpus)
        )

    def copy(self) -> Ledger:
        """An independent ledger with the same bookings (one dict still serves both when the device is CPU)."""
        dev = dict(self.dev)
        cpu = dev if self.cpu is self.dev else dict(self.cpu)
        return dataclasses.replace(self, dev=dev, cpu=cpu)

    @property
    def need_devices(self) -> int:
        """Devices one rank needs."""
        return self.world_size

    def ranks_fit(self, node: Node) -> int:
        """Whole ranks the node can still take."""
        fits = self.dev[node.id] // self.rank_dev
        if self.rank_cpu:
            fits = min(fits, self.cpu[node.id] // self.rank_cpu)
        return fits

    def hosts_one(self, node: Node) -> bool:
        """Whether the node can be a master: hold one whole rank (span: some devices and the control bundle)."""
        if node.id not in self.dev:
            return False
        if not self.span:
            return self.ranks_fit(node) >= 1
        return self.dev[node.id] >= units(1) and self.has_cpus(node)

    def has_cpus(self, node: Node) -> bool:
        """Whether the node can still take a control bundle."""
        return self.cpu[node.id] >= units(self.cpus)

    def take(self, node: Node, ranks: int) -> None:
        """Book `ranks` whole ranks on the node."""
        self.dev[node.id] -= ranks * self.rank_dev
        self.cpu[node.id] -= ranks * self.rank_cpu

    def take_devices(self, node: Node, count: int) -> None:
        """Book devices on the node (span)."""
        self.dev[node.id] -= units(count)

    def take_cpus(self, node: Node, cpus: float) -> None:
        """Book a control bundle on the node (span)."""
        self.cpu[node.id] -= units(cpus)

    def offer(self, node: Node) -> Offer:
        """What the node has left."""
        if node.id not in self.dev:
            return Offer(node.id, node.ip, node.free_devices(self.device), node.available.get("CPU", 0.0))
        return Offer(node.id, node.ip, self.dev[node.id] // units(1), self.cpu[node.id] / units(1))

    def best_offer(self, nodes: Iterable[Node]) -> Offer | None:
        """The node with the most left: devices, then CPUs, then id."""
        offers = [self.offer(n) for n in nodes]
        if not offers:
            return None
        return min(offers, key=lambda o: (-o.free_devices, -o.free_cpus, o.node))

    def skip(self, node: Node, reason: SkipReason, need_devices: int, need_cpus: float) -> Skip:
        """A skip record with what the node has left."""
        offer = self.offer(node)
        return Skip(
            node=node.id,
            ip=node.ip,
            reason=reason,
            free_devices=offer.free_devices,
            free_cpus=offer.free_cpus,
            need_devices=need_devices,
            need_cpus=need_cpus,
        )

    def skip_short(self, node: Node, ranks: int) -> Skip:
        """A node that cannot host `ranks` ranks: short of devices, else of CPUs."""
        short_of_devices = self.dev[node.id] < ranks * self.rank_dev
        reason = SkipReason.TOO_FEW_DEVICES if short_of_devices else SkipReason.TOO_FEW_CPUS
        return self.skip(node, reason, ranks * self.world_size, ranks * self.cpus)


@dataclass(slots=True)
class Planning:
    """One planning run: the request, what each node has left, the nodes passed over, the cluster's fingerprint."""

    request: PlanRequest
    ledger: Ledger
    skipped: list[Skip]
    fingerprint: str

    def infeasible(
        self,
        code: InfeasibleCode,
        best: Offer | None,
        *,
        rank: int = 0,
        ranks: int = 1,
        master: Node | None = None,
        dp_local: int | None = None,
        detail: str = "",
        skipped: tuple[Skip, ...] | None = None,
    ) -> Infeasible:
        """No plan: `rank` is the first rank not placed, needing `ranks` ranks' worth of devices and CPUs at once."""
        spec = self.request.spec
        return Infeasible(
            name=self.request.name,
            code=code,
            spec=spec,
            rank=rank,
            placed=rank,
            need_devices=ranks * self.ledger.need_devices,
            need_cpus=ranks * spec.cpus,
            best=best,
            skipped=tuple(self.skipped) if skipped is None else skipped,
            master=master.id if master is not None else None,
            dp_local=dp_local,
            detail=detail,
            fingerprint=self.fingerprint,
        )
