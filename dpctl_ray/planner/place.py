"""plan(request): DP ranks onto nodes for the strict, fill and span pack modes, as named steps."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TypeVar

from dpctl_ray.errors import BadInput, InfeasibleError
from dpctl_ray.planner.labels import LabelError, LabelMatch, check_key, value_of
from dpctl_ray.planner.model import (
    LAYOUTS,
    PACKS,
    SPARES_MODES,
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
from dpctl_ray.planner.ranks import Ledger, packed_ranks, span_ranks
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
    from dpctl_ray.planner.scale import ScalePlan, remaining, scale  # noqa: PLC0415 - scale builds on this module

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
    ranks, dp_local = placed
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
            outside = [_label_skip(n, spec, label) for n in candidates if value_of(n.labels, label) != value]
            return dataclasses.replace(result, skipped=(*result.skipped, *outside))
        failed.append(result)
    return dataclasses.replace(failed[0], within=tuple((v, capacity[v]) for v in sorted(groups)))


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
    spares = spec.spares
    if not isinstance(spares, int) or isinstance(spares, bool) or not 0 <= spares <= MAX_RANKS - spec.dp:
        raise SpecError(
            f"{key('spares')}: must be an integer >= 0 with dp + spares at most {MAX_RANKS:,}, got {show(spares)}"
        )
    if spec.spares_mode not in SPARES_MODES:
        raise SpecError(f"{key('spares_mode')}: must be one of {', '.join(SPARES_MODES)}, got {show(spec.spares_mode)}")
    count("tp", spec.tp, MAX_WORLD_SIZE)
    count("pp", spec.pp, MAX_WORLD_SIZE)
    if spec.world_size > MAX_WORLD_SIZE:
        raise SpecError(
            f"{key('tp')} x {key('pp')}: a rank of {spec.world_size:,} devices; dpctl plans at most "
            f"{MAX_WORLD_SIZE:,} per rank"
        )
    if (spec.dp + spares) * spec.world_size > MAX_DEVICES:
        raise SpecError(
            f"{key('dp')} x {key('tp')} x {key('pp')}: {(spec.dp + spares) * spec.world_size:,} devices"
            f"{' with the spares' if spares else ''}; dpctl plans at most {MAX_DEVICES:,} in one deployment"
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
    _check_labels(spec, key)


def _check_labels(spec: Placement, key: Callable[[str], str]) -> None:
    """The label options: selectors as Ray writes them, one per key; label keys; within and spread apart."""
    seen: set[str] = set()
    for match in spec.select:
        if not isinstance(match, LabelMatch):
            raise SpecError(f"{key('select')}: must map label names to values, got {show(match)}")
        if match.key in seen:
            raise SpecError(f"{key('select')}: selects the label {show(match.key)} twice", hint="give each label once")
        seen.add(match.key)
    for name in ("within", "rank_within", "spread"):
        label = getattr(spec, name)
        if label is not None:
            try:
                check_key(label)
            except LabelError as exc:
                raise SpecError(f"{key(name)}: {exc}") from None
    if spec.within is not None and spec.within == spec.spread:
        raise SpecError(
            f"{key('within')} and {key('spread')}: both name the label {show(spec.within)}",
            hint="a deployment inside one value cannot spread across its values; drop one",
        )


def cluster_fingerprint(
    nodes: Sequence[Node], device: str, layout: Layout = "per_node", labels: Sequence[str] = ()
) -> str:
    """A digest of what planning reads (ids, ips, head, free devices and CPUs, labels used) and the layout.

    A changed cluster changes it, and so does planning the same cluster for the other layout. A spec that
    reads no label digests no label, so relabelling a node does not invalidate such plans. The nodes are
    digested column by column in id order (the same in any input order), each column one list's repr:
    a row string per node cost twice as much on 16k labelled nodes.
    """
    ordered = sorted(nodes, key=attrgetter("id"))
    free = [n.available for n in ordered]
    columns = [
        [n.id for n in ordered],
        [n.ip for n in ordered],
        [n.head for n in ordered],
        [*map(units, [a.get(device, 0.0) for a in free])],
        [*map(units, [a.get("CPU", 0.0) for a in free])],
        *([n.labels.get(key) for n in ordered] for key in labels),  # None where the node lacks the label
    ]
    text = f"v3\t{device}\t{layout}\t{[*labels]!r}\n{columns!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def node_order_key(node: Node) -> tuple[int, bytes, str, str]:
    """Nodes after the master: by IP address (numerically; IPv4 before IPv6, unparsable last), then id."""
    # An address's packed bytes compare as its numbers do. (try, not contextlib.suppress: this runs per node.)
    try:
        return (0, socket.inet_pton(socket.AF_INET, node.ip), "", node.id)
    except OSError:
        pass
    try:
        return (1, socket.inet_pton(socket.AF_INET6, node.ip), "", node.id)
    except OSError:
        return (2, b"", node.ip, node.id)


# --- steps -----------------------------------------------------------------------------------------


def filter_nodes(
    ordered: Sequence[Node],
    spec: Placement,
    spelled: Mapping[str, str] | None = None,
    within_value: str | None = None,
) -> tuple[list[Node], list[Skip], list[str]]:
    """Step 1: keep allowed nodes that have the device and match the selectors; say why the others are out.

    Given `within_value` (a running deployment's), a node must also hold that value of the `within` label.
    """
    allowed = set(spec.nodes)
    seen: set[str] = set()
    candidates: list[Node] = []
    skipped: list[Skip] = []
    select = spec.select
    within = spec.within if within_value is not None else None
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
        miss = None
        for match in select:  # a loop, not next(generator): this runs per node
            if not match.matches(node.labels):
                miss = match
                break
        if miss is not None:
            skipped.append(_label_skip(node, spec, miss.key))
            continue
        if within is not None and value_of(node.labels, within) != within_value:
            skipped.append(_label_skip(node, spec, within))
            continue
        candidates.append(node)
    key = (spelled or {}).get("nodes", "placement.nodes")
    if allowed and not seen:
        raise SpecError(f"{key}: matches no node id or ip", hint="`dpctl inventory` lists node ids and ips")
    warnings = [f"{key}: {quoted(entry)} matches no node id or ip" for entry in spec.nodes if entry not in seen]
    return candidates, skipped, warnings


def missing_label_warnings(candidates: Iterable[Node], spec: Placement, spelled: Mapping[str, str]) -> list[str]:
    """A warning per grouping label (within, rank_within, spread) that some candidate nodes lack."""
    out = []
    for name in ("within", "rank_within", "spread"):
        label = getattr(spec, name)
        if label is None:
            continue
        lacking = sum(1 for n in candidates if label not in n.labels)
        if lacking:
            key = spelled.get(name, f"placement.{name}")
            out.append(f"{key}: {lacking} node(s) have no label {quoted(label)}; they count as its empty value")
    return out


def named_nodes(nodes: Sequence[Node], name: str) -> list[Node]:
    """The node whose id is `name`, else the nodes with that ip (several: the name is ambiguous)."""
    return [n for n in nodes if n.id == name] or [n for n in nodes if n.ip == name]


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


def _place_packed(run: Planning, order: list[Node]) -> tuple[list[RankPlacement], int] | Infeasible:
    """Step 3 (strict, fill): whole ranks per node; the master takes dp_local, the others per the mode."""
    spec = run.request.spec
    master = order[0]
    master_fits = run.ledger.ranks_fit(master)
    dp_local = spec.dp_local if spec.dp_local is not None else min(master_fits, spec.dp)
    if dp_local == 0 or master_fits < dp_local:
        offer = run.ledger.offer(master)
        return run.infeasible(InfeasibleCode.MASTER_CANNOT_FIT, offer, ranks=max(dp_local, 1), master=master)
    ranks = None
    if spec.dp_local is None and spec.spread is not None:
        ranks, dp_local = _even_share(run, order, dp_local, spec.spread)
    if ranks is None:
        ranks = packed_ranks(
            order, master, run.ledger, run.skipped, spec, dp_local, hosted={}, first_rank=0, count=spec.dp
        )
    if len(ranks) < spec.dp:
        best = run.ledger.best_offer(order)
        return run.infeasible(InfeasibleCode.INSUFFICIENT, best, rank=len(ranks), master=master, dp_local=dp_local)
    return ranks, dp_local


def _even_share(run: Planning, order: list[Node], most: int, label: str) -> tuple[list[RankPlacement] | None, int]:
    """Auto dp_local under spread: the master's even share of dp (dp over the values that can host a rank).

    Under strict a smaller dp_local can shut nodes out, so the even share is kept only when its plan is
    whole and no less even than the plan with the master taking `most`; else (None, most) plans that.
    """
    spec = run.request.spec
    if most <= 1:
        return None, most
    hosting = {value_of(n.labels, label) for n in order if run.ledger.ranks_fit(n) >= 1}
    even = min(most, -(-spec.dp // max(len(hosting), 1)))
    if even == most:
        return None, most
    trial, skipped = run.ledger.copy(), list(run.skipped)
    ranks = packed_ranks(order, order[0], trial, skipped, spec, even, hosted={}, first_rank=0, count=spec.dp)
    if len(ranks) < spec.dp:
        return None, most
    other_ledger, other_skipped = run.ledger.copy(), list(run.skipped)
    other = packed_ranks(
        order, order[0], other_ledger, other_skipped, spec, most, hosted={}, first_rank=0, count=spec.dp
    )
    labels = {n.id: value_of(n.labels, label) for n in order}

    def crowded(placed: list[RankPlacement]) -> int:
        return max(Counter(labels[r.control] for r in placed).values())

    if len(other) == spec.dp and crowded(other) < crowded(ranks):
        run.ledger, run.skipped = other_ledger, other_skipped
        return other, most
    run.ledger, run.skipped = trial, skipped
    return ranks, even


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


def _label_skip(node: Node, spec: Placement, label: str) -> Skip:
    return dataclasses.replace(_skip(node, SkipReason.LABEL, spec), label=label, value=node.labels.get(label))


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
