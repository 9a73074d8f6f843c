"""One planning run and its Ledger: what each candidate node has left while ranks are placed, and what is wanted.

Plan, scale and repair each make a `Planning` run; the placing functions (`ranks`, `span`) book ranks in its
ledger and note the nodes they pass over in its `skipped`, and take what they are to place as one `Wanted`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dpctl_ray.planner.model import (
    GRANULARITY,
    Infeasible,
    InfeasibleCode,
    Node,
    Offer,
    Placement,
    PlanRequest,
    Skip,
    SkipReason,
    units,
)


@dataclass(frozen=True, slots=True)
class Wanted:
    """The ranks one call places: how many, numbered from which, beside what the deployment already has."""

    count: int
    first_rank: int = 0
    hosted: Mapping[str, int] = field(default_factory=dict)  # node id -> ranks it already holds (a scale-up)
    spread_counts: Mapping[str, int] = field(default_factory=dict)  # spread value -> ranks it already holds


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

    @property
    def spec(self) -> Placement:
        """What is planned."""
        return self.request.spec

    def trial(self) -> Planning:
        """A run with its own copy of the ledger and the nodes passed over: to try a placement, kept or not."""
        return dataclasses.replace(self, ledger=self.ledger.copy(), skipped=list(self.skipped))
