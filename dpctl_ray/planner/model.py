"""The planner's vocabulary: frozen inputs (nodes, placement spec) and outputs (plan or infeasible)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Literal, TypeGuard

from dpctl_ray.planner.labels import LabelMatch

Pack = Literal["strict", "fill", "span"]
PACKS: tuple[Pack, ...] = ("strict", "fill", "span")
# How a rank's placement group is cut into bundles: one per node of the rank (its devices there, plus the
# control CPUs on its control node), or the seed's layout of one bundle per device plus a control bundle,
# kept for engines that start one Ray worker per device themselves.
Layout = Literal["per_node", "per_device"]
LAYOUTS: tuple[Layout, ...] = ("per_node", "per_device")
# Spares hold a rank's placement group; `started` ones also run its engine hosts (idle Ray actors), so a lost
# rank takes one over without waiting for Ray to place or start anything.
SparesMode = Literal["reserved", "started"]
SPARES_MODES: tuple[SparesMode, ...] = ("reserved", "started")

# Ray placement strategy per pack mode: one rank per node, or a rank over several nodes.
STRATEGY: Mapping[str, str] = {"strict": "STRICT_PACK", "fill": "STRICT_PACK", "span": "PACK"}

# Deployment names become Ray object names and a directory on every node: no path separators, no dot first.
NAME_RULE = "1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def valid_name(value: object) -> TypeGuard[str]:
    """Whether `value` is a deployment name (NAME_RULE)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


# Resource amounts are compared in Ray's own granularity (1/10000 of a unit), so 0.1 + 0.2 fits in 0.3.
GRANULARITY = 10_000


def units(amount: float) -> int:
    """An amount of a resource in Ray's fixed-point units."""
    return round(amount * GRANULARITY)


@dataclass(frozen=True, slots=True)
class Node:
    """One cluster node as the planner sees it: identity, totals and what is free now."""

    id: str
    ip: str
    head: bool = False
    resources: Mapping[str, float] = field(default_factory=dict)
    available: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    def free_devices(self, device: str) -> int:
        """Whole free devices; a fractional remainder (another job's 0.5 GPU) is not a device."""
        return int(units(self.available.get(device, 0.0)) // GRANULARITY)

    def total_devices(self, device: str) -> int:
        """Whole devices the node has in all."""
        return int(units(self.resources.get(device, 0.0)) // GRANULARITY)


@dataclass(frozen=True, slots=True)
class Placement:
    """What the user asked for: `dp` ranks of `tp x pp` devices, and how to pack them."""

    dp: int
    tp: int = 1
    pp: int = 1
    dp_local: int | None = None  # None: as many as fit on the master
    pack: Pack = "strict"
    device: str = "GPU"
    master: str = "auto"
    nodes: tuple[str, ...] = ()  # allow-list of node ids or ips; empty = all
    cpus: float = 1.0
    bundles: Layout | None = None  # None: what the engine needs (per_node unless it says otherwise)
    select: tuple[LabelMatch, ...] = ()  # only nodes whose labels match every selector
    within: str | None = None  # a label: the whole deployment inside one of its values
    rank_within: str | None = None  # a label: each rank's nodes share one of its values
    spread: str | None = None  # a label: ranks spread evenly across its values
    spares: int = 0  # rank-sized reservations beyond dp, for repair and scale-up to take first
    spares_mode: SparesMode = "reserved"

    @property
    def world_size(self) -> int:
        """Devices one rank needs."""
        return self.tp * self.pp

    @property
    def labels(self) -> tuple[str, ...]:
        """The label keys planning reads, each once, in a fixed order."""
        keys = [m.key for m in self.select]
        keys += [k for k in (self.within, self.rank_within, self.spread) if k is not None]
        return tuple(dict.fromkeys(keys))


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Everything `plan()` reads: the deployment name, the spec and a snapshot of the nodes.

    `spelled` says how the user gave placement keys, for messages: {"dp_local": "--dp-local"} for a flag;
    a key not in it is `placement.KEY`.
    """

    name: str
    spec: Placement
    nodes: tuple[Node, ...]
    spelled: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Bundle:
    """One placement-group bundle, pinned to a node."""

    node: str
    resources: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class RankPlacement:
    """Where one DP rank goes: its nodes, how many of its devices each holds, and the engine actor's node."""

    rank: int
    local_rank: int
    strategy: str
    nodes: tuple[str, ...]
    devices: tuple[int, ...]  # per entry of `nodes`
    control: str  # node of the control bundle, where the engine actor sits

    def bundles(self, device: str, cpus: float, layout: Layout = "per_node") -> tuple[Bundle, ...]:
        """The placement group's bundles in `layout`.

        per_node: one bundle per node of the rank, in order, with that node's devices; the control node's also
        holds the control CPUs (one CPU count when the device is CPU itself). per_device: one bundle per
        device, node by node, then the control bundle.
        """
        pairs = zip(self.nodes, self.devices, strict=True)
        if layout == "per_device":
            one = ((device, 1.0),)
            per_device = [Bundle(node, one) for node, count in pairs for _ in range(count)]
            return (*per_device, Bundle(self.control, (("CPU", cpus),)))
        out = []
        for node, count in pairs:
            if node != self.control:
                out.append(Bundle(node, ((device, float(count)),)))
            elif device == "CPU":
                out.append(Bundle(node, (("CPU", count + cpus),)))
            else:
                out.append(Bundle(node, ((device, float(count)), ("CPU", cpus))))
        return tuple(out)

    def control_bundle(self, layout: Layout) -> int:
        """The index of the bundle the rank's engine actor takes its CPUs from."""
        return sum(self.devices) if layout == "per_device" else self.nodes.index(self.control)


@dataclass(frozen=True, slots=True)
class Usage:
    """What a plan puts on its nodes, by node id: device counts and control CPUs (Plan.holders says whose)."""

    devices: Mapping[str, int]
    cpus: Mapping[str, float]

    @classmethod
    def of(cls, ranks: Iterable[RankPlacement], cpus: float, spares: Iterable[RankPlacement] = ()) -> Usage:
        """The usage of these ranks and spares, each with a control bundle of `cpus`."""
        devices: dict[str, int] = {}
        planned_cpus: dict[str, float] = {}
        for rank in itertools.chain(ranks, spares):
            for node, count in zip(rank.nodes, rank.devices, strict=True):
                devices[node] = devices.get(node, 0) + count
            planned_cpus[rank.control] = planned_cpus.get(rank.control, 0.0) + cpus
        return cls(devices, planned_cpus)


@dataclass(frozen=True, slots=True)
class ResolvedSpec(Placement):
    """The spec a plan used: the request with `auto` resolved (dp_local a number, master a node id).

    It is a Placement itself: planning it again against the same cluster gives the same plan.
    """

    dp_local: int = 1
    bundles: Layout = "per_node"
    within_value: str | None = None  # with `within`: the label value chosen to hold the deployment

    @classmethod
    def of(cls, spec: Placement, *, dp_local: int, master: str, within_value: str | None = None) -> ResolvedSpec:
        """`spec` with these values for what it left to the planner."""
        values = {f.name: getattr(spec, f.name) for f in fields(Placement)}
        resolved = {"dp_local": dp_local, "master": master, "bundles": spec.bundles or "per_node"}
        return cls(**{**values, **resolved, "within_value": within_value})

    def selector(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The label selector (Ray's syntax) a bundle on a node with these labels is given besides its node id.

        The selectors, the `within` value, and the node's own `rank_within` value: Ray then holds the group to
        the same rules the plan followed. A label a node lacks (an empty value) is left to the node id pin.
        """
        out = {m.key: m.ray_value for m in self.select}
        if self.within is not None and self.within_value:
            out[self.within] = self.within_value
        if self.rank_within is not None and labels.get(self.rank_within):
            out[self.rank_within] = labels[self.rank_within]
        return out


class SkipReason(str, Enum):
    """Why a node holds none of the ranks it could have held."""

    NOT_ALLOWED = "not_allowed"  # not in the allow-list
    NO_DEVICE = "no_device"  # has none of the device resource at all
    TOO_FEW_DEVICES = "too_few_devices"  # free devices below what one rank (or dp_local ranks) needs
    TOO_FEW_CPUS = "too_few_cpus"  # devices fit, the control bundle's CPUs do not
    HETEROGENEOUS = "heterogeneous"  # span: free devices differ from the master's
    LABEL = "label"  # its labels do not match `select`, or it is outside the `within` value


@dataclass(frozen=True, slots=True)
class Skip:
    """A node the plan passed over, with what it has and what it would have needed."""

    node: str
    ip: str
    reason: SkipReason
    free_devices: int = 0
    free_cpus: float = 0.0
    need_devices: int = 0
    need_cpus: float = 0.0
    label: str = ""  # LABEL: the label that ruled the node out
    value: str | None = None  # LABEL: the node's value of it (None: the node lacks the label)


@dataclass(frozen=True, slots=True)
class Offer:
    """What one node still has free after the ranks placed so far."""

    node: str
    ip: str
    free_devices: int
    free_cpus: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A feasible placement: ranks 0..dp-1 in order, the nodes it considered, and the cluster state it assumed."""

    name: str
    spec: ResolvedSpec
    ranks: tuple[RankPlacement, ...]
    nodes: tuple[Node, ...]  # the master first, then in the planner's order
    skipped: tuple[Skip, ...]
    warnings: tuple[str, ...]
    fingerprint: str
    spares: tuple[RankPlacement, ...] = ()  # reservations shaped like a rank; `rank` numbers them from 0

    def bundles(self, rank: RankPlacement) -> tuple[Bundle, ...]:
        """A rank's placement-group bundles under this plan's device, control-bundle CPUs and layout."""
        return rank.bundles(self.spec.device, self.spec.cpus, self.spec.bundles)

    def usage(self) -> Usage:
        """What the plan puts on each node (derived from its ranks and spares)."""
        return Usage.of(self.ranks, self.spec.cpus, self.spares)

    def holders(self) -> dict[str, list[tuple[int | str, int]]]:
        """By node id, the (rank, devices there) of each rank on the node, then of each spare (`sN`)."""
        held: dict[str, list[tuple[int | str, int]]] = {}
        named: list[tuple[int | str, RankPlacement]] = [(r.rank, r) for r in self.ranks]
        named += [(f"s{r.rank}", r) for r in self.spares]
        for name, rank in named:
            for node, count in zip(rank.nodes, rank.devices, strict=True):
                held.setdefault(node, []).append((name, count))
        return held

    def whole(self) -> Plan:
        """The plan with its spares as ranks dp..dp+K-1 (how they were planned): for checks that hold both."""
        if not self.spares:
            return self
        dp = self.spec.dp
        spares = tuple(replace(r, rank=dp + r.rank) for r in self.spares)
        spec = replace(self.spec, dp=dp + len(spares), spares=0)
        return replace(self, spec=spec, ranks=(*self.ranks, *spares), spares=())


class InfeasibleCode(str, Enum):
    """Why no plan exists."""

    NO_NODES = "no_nodes"  # the inventory (or allow-list) leaves no node with the device
    MASTER_UNUSABLE = "master_unusable"  # the master is skipped (allow-list, no device)
    MASTER_CANNOT_FIT = "master_cannot_fit"  # fewer than dp_local ranks fit on the master
    SPAN_TOO_SMALL = "span_too_small"  # world_size fits on one node: span is the wrong mode
    SPAN_UNEVEN = "span_uneven"  # world_size is not a multiple of the devices per node
    INSUFFICIENT = "insufficient"  # ranks left over when the nodes ran out


@dataclass(frozen=True, slots=True)
class Infeasible:
    """No plan: the first rank that could not be placed, what it needs, the best offer, and skipped nodes."""

    name: str
    code: InfeasibleCode
    spec: Placement
    rank: int | None  # first rank not placed (None when nothing could be tried)
    placed: int
    need_devices: int
    need_cpus: float
    best: Offer | None
    skipped: tuple[Skip, ...]
    master: str | None = None  # node id, once chosen
    dp_local: int | None = None  # ranks per node in strict mode, once resolved
    detail: str = ""  # the user-given value the code refers to (a master name, ...)
    fingerprint: str = ""
    within: tuple[tuple[str, int], ...] = ()  # with `within`: each value of the label and its free devices
