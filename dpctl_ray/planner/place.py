"""plan(request): DP ranks onto nodes for the strict, fill and span pack modes, as named steps."""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dpctl_ray.errors import BadInput, InfeasibleError
from dpctl_ray.planner.model import (
    GRANULARITY,
    LAYOUTS,
    PACKS,
    STRATEGY,
    Infeasible,
    InfeasibleCode,
    Layout,
    Node,
    Offer,
    Placement,
    Plan,
    PlanRequest,
    RankPlacement,
    ResolvedSpec,
    Skip,
    SkipReason,
    units,
)
from dpctl_ray.values import printable, quoted, show


class SpecError(BadInput):
    """A placement value no cluster could satisfy (dp_local > dp, cpus <= 0, ...): bad input."""

    default_code = "bad_spec"


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
    """Place ranks 0..dp-1; the same request always gives the same plan, whatever the node order.

    Input that no cluster state could make right (an unknown master, an allow-list that matches no node, no
    nodes at all) raises SpecError; a plan the cluster cannot hold is an Infeasible result.
    """
    spec = request.spec
    check_spec(spec, request.spelled)
    if not request.nodes:
        raise SpecError("inventory: lists no node", hint="an inventory lists the cluster's nodes under `nodes:`")
    ordered = sorted(request.nodes, key=node_order_key)
    candidates, skipped, warnings = filter_nodes(ordered, spec, request.spelled)
    fingerprint = cluster_fingerprint(request.nodes, spec.device, spec.bundles or "per_node")
    run = Planning(request, Ledger.of(candidates, spec), skipped, fingerprint)
    master = _choose_master(run, candidates)
    if isinstance(master, Infeasible):
        return master
    order = [master, *(n for n in candidates if n is not master)]
    placed = _place_span(run, order) if spec.pack == "span" else _place_packed(run, order)
    if isinstance(placed, Infeasible):
        return placed
    ranks, dp_local = placed
    return Plan(
        name=request.name,
        spec=ResolvedSpec.of(spec, dp_local=dp_local, master=master.id),
        ranks=tuple(ranks),
        nodes=(master, *(n for n in ordered if n is not master)),
        skipped=tuple(skipped),
        warnings=tuple(warnings),
        fingerprint=run.fingerprint,
    )


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


MAX_RANKS = 1_000_000  # dp, dp_local
MAX_WORLD_SIZE = 65_536  # tp, pp and tp x pp: devices of one rank
MAX_DEVICES = 4_194_304  # dp x tp x pp: devices of one deployment
MAX_CPUS = 1_000_000.0


def check_spec(spec: Placement, spelled: Mapping[str, str] | None = None) -> None:
    """Reject values that are wrong whatever the cluster; each error names its key as the user wrote it.

    `spelled` maps a key to how the user gave it (`--dp-local` for a flag); the default is `placement.KEY`.
    """

    def key(name: str) -> str:
        return (spelled or {}).get(name, f"placement.{name}")

    def count(name: str, value: object, maximum: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
            raise SpecError(f"{key(name)}: must be a positive integer of at most {maximum:,}, got {show(value)}")

    count("dp", spec.dp, MAX_RANKS)
    count("tp", spec.tp, MAX_WORLD_SIZE)
    count("pp", spec.pp, MAX_WORLD_SIZE)
    if spec.world_size > MAX_WORLD_SIZE:
        raise SpecError(
            f"{key('tp')} x {key('pp')}: a rank of {spec.world_size:,} devices; dpctl plans at most "
            f"{MAX_WORLD_SIZE:,} per rank"
        )
    if spec.dp * spec.world_size > MAX_DEVICES:
        raise SpecError(
            f"{key('dp')} x {key('tp')} x {key('pp')}: {spec.dp * spec.world_size:,} devices; dpctl plans at most "
            f"{MAX_DEVICES:,} in one deployment"
        )
    if spec.dp_local is not None:
        count("dp_local", spec.dp_local, MAX_RANKS)
        if spec.dp_local > spec.dp:
            raise SpecError(
                f"{key('dp_local')}: must be at most {key('dp')} ({spec.dp}), got {spec.dp_local}",
                hint="lower --dp-local, raise --dp, or use dp_local: auto",
            )
    if spec.pack not in PACKS:
        raise SpecError(f"{key('pack')}: must be one of {', '.join(PACKS)}, got {show(spec.pack)}")
    if spec.pack == "span" and spec.dp_local not in (None, 1):
        raise SpecError(
            f"{key('dp_local')}: must be 1 (or auto) with pack span, got {spec.dp_local}",
            hint="a span rank takes whole nodes, so each node hosts part of one rank",
        )
    if not isinstance(spec.device, str) or not spec.device or printable(spec.device) != spec.device:
        raise SpecError(f"{key('device')}: must name a Ray resource, got {show(spec.device)}")
    cpus = spec.cpus
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 < cpus <= MAX_CPUS or units(cpus) <= 0:
        raise SpecError(f"{key('cpus')}: must be a number above 0 and at most {MAX_CPUS:g}, got {show(cpus)}")
    if spec.bundles is not None and spec.bundles not in LAYOUTS:
        raise SpecError(f"{key('bundles')}: must be one of {', '.join(LAYOUTS)}, got {show(spec.bundles)}")
    if not isinstance(spec.master, str) or not spec.master:
        raise SpecError(f"{key('master')}: must be auto, a node id or an ip, got {show(spec.master)}")


def cluster_fingerprint(nodes: Iterable[Node], device: str, layout: Layout = "per_node") -> str:
    """A digest of what planning reads (ids, ips, head, free devices and CPUs), and of the bundle layout.

    A changed cluster changes it, and so does planning the same cluster for the other layout.
    """
    rows = sorted(
        f"{n.id}\t{n.ip}\t{n.head:d}\t{units(n.available.get(device, 0.0))}\t{units(n.available.get('CPU', 0.0))}"
        for n in nodes
    )
    return hashlib.sha256("\n".join([f"v2\t{device}\t{layout}", *rows]).encode()).hexdigest()[:16]


def node_order_key(node: Node) -> tuple[int, bytes, str, str]:
    """Nodes after the master: by IP address (numerically; IPv4 before IPv6, unparsable last), then id."""
    # An address's packed bytes compare as its numbers do.
    with contextlib.suppress(OSError):
        return (0, socket.inet_pton(socket.AF_INET, node.ip), "", node.id)
    with contextlib.suppress(OSError):
        return (1, socket.inet_pton(socket.AF_INET6, node.ip), "", node.id)
    return (2, b"", node.ip, node.id)


# --- steps -----------------------------------------------------------------------------------------


def filter_nodes(
    ordered: Sequence[Node], spec: Placement, spelled: Mapping[str, str] | None = None
) -> tuple[list[Node], list[Skip], list[str]]:
    """Step 1: keep nodes in the allow-list that have the device at all; say why the others are out."""
    allowed = set(spec.nodes)
    seen: set[str] = set()
    candidates: list[Node] = []
    skipped: list[Skip] = []
    for node in ordered:
        if allowed:
            hit = {node.id, node.ip} & allowed
            seen |= hit
            if not hit:
                skipped.append(_skip(node, SkipReason.NOT_ALLOWED, spec))
                continue
        if node.total_devices(spec.device) == 0 and node.free_devices(spec.device) == 0:
            skipped.append(_skip(node, SkipReason.NO_DEVICE, spec))
            continue
        candidates.append(node)
    key = (spelled or {}).get("nodes", "placement.nodes")
    if allowed and not seen:
        raise SpecError(f"{key}: matches no node id or ip", hint="`dpctl inventory` lists node ids and ips")
    warnings = [f"{key}: {quoted(entry)} matches no node id or ip" for entry in spec.nodes if entry not in seen]
    return candidates, skipped, warnings


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
    by_id = [n for n in run.request.nodes if n.id == spec.master]
    named = by_id or [n for n in run.request.nodes if n.ip == spec.master]
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


def _place_packed(run: Planning, order: list[Node]) -> tuple[list[RankPlacement], int] | Infeasible:
    """Step 3 (strict, fill): whole ranks per node; the master takes dp_local, the others per the mode."""
    spec = run.request.spec
    master = order[0]
    master_fits = run.ledger.ranks_fit(master)
    dp_local = spec.dp_local if spec.dp_local is not None else min(master_fits, spec.dp)
    if dp_local == 0 or master_fits < dp_local:
        offer = run.ledger.offer(master)
        return run.infeasible(InfeasibleCode.MASTER_CANNOT_FIT, offer, ranks=max(dp_local, 1), master=master)
    ranks = packed_ranks(order, master, run.ledger, run.skipped, spec, dp_local, hosted={}, first_rank=0, count=spec.dp)
    if len(ranks) < spec.dp:
        best = run.ledger.best_offer(order)
        return run.infeasible(InfeasibleCode.INSUFFICIENT, best, rank=len(ranks), master=master, dp_local=dp_local)
    return ranks, dp_local


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
) -> list[RankPlacement]:
    """Up to `count` strict/fill ranks numbered from `first_rank`, node by node in `order`.

    `hosted` counts the ranks each node already holds (a running deployment's, for a scale-up): the master
    and, under strict, every node is filled up to dp_local; under fill other nodes take what fits. Local
    ranks continue from what a node already holds.
    """
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


def _place_span(run: Planning, order: list[Node]) -> tuple[list[RankPlacement], int] | Infeasible:
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
    ranks = span_ranks(order, per_node, spec, run.ledger, run.skipped, first_rank=0, count=spec.dp)
    if len(ranks) < spec.dp:
        return run.infeasible(InfeasibleCode.INSUFFICIENT, run.ledger.best_offer(order), rank=len(ranks), master=master)
    return ranks, 1


def span_ranks(
    order: Iterable[Node],
    per_node: int,
    spec: Placement,
    ledger: Ledger,
    skipped: list[Skip],
    *,
    first_rank: int,
    count: int,
) -> list[RankPlacement]:
    """Up to `count` span ranks from runs of nodes with exactly `per_node` free devices, numbered from first_rank.

    The control bundle goes on the first node of a run with CPUs for it; a run with none drops its first node.
    """
    group_size = spec.world_size // per_node
    strategy = STRATEGY["span"]
    ranks: list[RankPlacement] = []
    group: list[Node] = []
    for node in order:
        if len(ranks) == count:
            break
        free = node.free_devices(spec.device)
        if free != per_node:
            reason = SkipReason.TOO_FEW_DEVICES if free < per_node else SkipReason.HETEROGENEOUS
            skipped.append(ledger.skip(node, reason, per_node, 0.0))
            continue
        group.append(node)
        if len(group) < group_size:
            continue
        control = next((n for n in group if ledger.has_cpus(n)), None)
        if control is None:
            skipped.append(ledger.skip(group[0], SkipReason.TOO_FEW_CPUS, per_node, spec.cpus))
            group = group[1:]
            continue
        nodes = tuple(n.id for n in group)
        rank = first_rank + len(ranks)
        ranks.append(RankPlacement(rank, 0, strategy, nodes, (per_node,) * group_size, control.id))
        for n in group:
            ledger.take_devices(n, per_node)
        ledger.take_cpus(control, spec.cpus)
        group = []
    return ranks


def _skip(node: Node, reason: SkipReason, spec: Placement) -> Skip:
    return Skip(
        node=node.id,
        ip=node.ip,
        reason=reason,
        free_devices=node.free_devices(spec.device),
        free_cpus=node.available.get("CPU", 0.0),
        need_devices=spec.world_size,
        need_cpus=spec.cpus,
    )


@dataclass(slots=True)
class Ledger:  # shared with the scale planner
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
