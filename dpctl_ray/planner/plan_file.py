"""Reading a plan file back (`up --plan`): strict and bounded, then held to its spec's rules (`verify`).

Types are strict and every bound is checked before anything is expanded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpctl_ray.planner.checks import MAX_CPUS, MAX_RANKS, MAX_WORLD_SIZE, SpecError, check_spec
from dpctl_ray.planner.document import (
    HINT,
    VERSION,
)
from dpctl_ray.planner.inventory import MAX_AMOUNT, valid_ip
from dpctl_ray.planner.labels import MAX_SELECTORS, LabelError, LabelMatch, check_key
from dpctl_ray.planner.model import (
    LAYOUTS,
    PACKS,
    SPARES_MODES,
    Node,
    Plan,
    RankPlacement,
    ResolvedSpec,
    SparesMode,
    valid_name,
)
from dpctl_ray.planner.verify import PlanFileError, check_plan
from dpctl_ray.values import show


def plan_from_document(doc: object) -> Plan:
    """A plan document written by `plan_to_document`, checked in full; anything else is a PlanFileError.

    Types are strict and every bound is checked before anything is expanded, so a hand-edited file costs
    no more than a real one; then the plan must obey the rules of its spec (`verify.check_plan`).
    """
    d = _mapping(doc, "plan")
    version = d.get("version")
    if type(version) is not int or version != VERSION:
        raise PlanFileError(
            f"version: expected the integer {VERSION}, got {show(version)}",
            hint="write the plan again with `dpctl plan --out` from this version of dpctl",
        )
    name, spec = _spec(_mapping(_field(d, "spec", "plan"), "spec"))
    try:
        check_spec(spec, {k: f"spec.{k}" for k in ("dp", "dp_local", "tp", "pp", "pack", "device", "cpus", "master")})
    except SpecError as exc:
        raise PlanFileError(exc.message, hint=exc.hint) from None
    raw_ranks = _list(_field(d, "ranks", "plan"), "ranks")
    if len(raw_ranks) != spec.dp:
        raise PlanFileError(f"ranks: must list {spec.dp} ranks (spec.dp), got {len(raw_ranks)}")
    raw_nodes = _list(_field(d, "nodes", "plan"), "nodes")
    if len(raw_nodes) > MAX_RANKS * 4:
        raise PlanFileError(f"nodes: lists {len(raw_nodes):,} nodes; dpctl plans on at most {MAX_RANKS * 4:,}")
    nodes = [_node(n, i, spec.device) for i, n in enumerate(raw_nodes)]
    ids = set()
    for i, node in enumerate(nodes):
        if node.id in ids:
            raise PlanFileError(f"nodes[{i}].id: {show(node.id)} is given twice")
        ids.add(node.id)
    ranks = tuple(_rank(r, i, spec) for i, r in enumerate(raw_ranks))
    raw_spares = _list(d.get("spares", []), "spares")
    if len(raw_spares) != spec.spares:
        raise PlanFileError(f"spares: must list {spec.spares} spares (spec.spares), got {len(raw_spares)}")
    spares = tuple(_spare(r, i, spec) for i, r in enumerate(raw_spares))
    fingerprint = _field(d, "cluster_fingerprint", "plan")
    if not isinstance(fingerprint, str) or not 1 <= len(fingerprint) <= 64 or not fingerprint.isalnum():
        raise PlanFileError(f"cluster_fingerprint: must be the fingerprint `dpctl plan` wrote, got {show(fingerprint)}")
    warnings = d.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise PlanFileError(f"warnings: must be a list of strings, got {show(warnings)}")
    if not isinstance(d.get("skipped", []), list):
        raise PlanFileError(f"skipped: must be a list, got {show(d.get('skipped'))}")
    plan = Plan(
        name=name,
        spec=spec,
        ranks=ranks,
        nodes=tuple(nodes),
        skipped=(),
        warnings=tuple(warnings),
        fingerprint=fingerprint,
        spares=spares,
    )
    check_plan(plan)
    return plan


def _spare(raw: object, i: int, spec: ResolvedSpec) -> RankPlacement:
    """A spare: a rank's bundles, numbered by `spare` (check_plan holds it to the rules of rank dp + i)."""
    path = f"spares[{i}]"
    r = dict(_mapping(raw, path))
    number = _int(_field(r, "spare", path), f"{path}.spare", minimum=0, maximum=MAX_RANKS)
    if number != i:
        raise PlanFileError(f"{path}.spare: must be {i} (spares are numbered 0..K-1 in order), got {number}")
    try:
        return _rank({**r, "rank": number}, i, spec)
    except PlanFileError as exc:
        raise PlanFileError(exc.message.replace(f"ranks[{i}]", path, 1), hint=exc.hint) from None


def spec_from_document(doc: Mapping[str, Any]) -> ResolvedSpec:
    """The resolved spec of a deployment record: its values checked one by one.

    A running deployment may hold dp_local above dp after a scale-down (dp_local is how many ranks a node
    takes when it grows again), so the rules across values that a plan file obeys are not applied here.
    """
    return _spec(doc)[1]


def _spec(doc: Mapping[str, Any]) -> tuple[str, ResolvedSpec]:
    name = _field(doc, "name", "spec")
    if not valid_name(name):
        raise PlanFileError(f"spec.name: must be a deployment name (letters, digits, -_.), got {show(name)}")
    pack = _field(doc, "pack", "spec")
    if pack not in PACKS:
        raise PlanFileError(f"spec.pack: must be one of {', '.join(PACKS)}, got {show(pack)}")
    device = _field(doc, "device", "spec")
    master = _field(doc, "master", "spec")
    for key, value in (("device", device), ("master", master)):
        if not isinstance(value, str) or not 1 <= len(value) <= 256 or not value.isprintable():
            raise PlanFileError(f"spec.{key}: must be a non-empty string, got {show(value)}")
    cpus = _field(doc, "cpus", "spec")
    if type(cpus) not in (int, float) or not 0 < cpus <= MAX_CPUS:
        raise PlanFileError(f"spec.cpus: must be a number above 0 and at most {MAX_CPUS:g}, got {show(cpus)}")
    allow = doc.get("nodes", [])
    if not isinstance(allow, list) or not all(isinstance(n, str) and n.isprintable() for n in allow):
        raise PlanFileError(f"spec.nodes: must be a list of node ids or ips, got {show(allow)}")
    layout = doc.get("bundles", "per_device")  # plan files written before layouts were per_device
    if layout not in LAYOUTS:
        raise PlanFileError(f"spec.bundles: must be one of {', '.join(LAYOUTS)}, got {show(layout)}")
    options = _label_options(doc)
    spec = ResolvedSpec(
        **options,
        bundles=layout,
        dp=_int(_field(doc, "dp", "spec"), "spec.dp", maximum=MAX_RANKS),
        dp_local=_int(_field(doc, "dp_local", "spec"), "spec.dp_local", maximum=MAX_RANKS),
        tp=_int(_field(doc, "tp", "spec"), "spec.tp", maximum=MAX_WORLD_SIZE),
        pp=_int(_field(doc, "pp", "spec"), "spec.pp", maximum=MAX_WORLD_SIZE),
        pack=pack,
        device=device,
        cpus=float(cpus),
        master=master,
        nodes=tuple(allow),
        spares=_int(doc.get("spares", 0), "spec.spares", minimum=0, maximum=MAX_RANKS),
        spares_mode=_spares_mode(doc.get("spares_mode", "reserved")),
    )
    world_size = doc.get("world_size", spec.world_size)
    if world_size != spec.world_size:
        raise PlanFileError(f"spec.world_size: must be tp x pp ({spec.world_size}), got {show(world_size)}")
    return name, spec


def _spares_mode(value: object) -> SparesMode:
    if value not in SPARES_MODES:
        raise PlanFileError(f"spec.spares_mode: must be one of {', '.join(SPARES_MODES)}, got {show(value)}")
    return value


def _label_options(doc: Mapping[str, Any]) -> dict[str, Any]:
    """spec.select, within, within_value, rank_within and spread, each checked as the config checks it."""
    out: dict[str, Any] = {}
    raw_select = doc.get("select", {})
    if not isinstance(raw_select, Mapping) or len(raw_select) > MAX_SELECTORS:
        raise PlanFileError(f"spec.select: must map at most {MAX_SELECTORS} label names to values")
    try:
        out["select"] = tuple(LabelMatch.parse(k, v) for k, v in raw_select.items())
        for key in ("within", "rank_within", "spread"):
            if doc.get(key) is not None:
                out[key] = check_key(doc[key])
    except LabelError as exc:
        raise PlanFileError(f"spec: {exc}") from None
    value = doc.get("within_value")
    if value is not None and (not isinstance(value, str) or len(value) > 63):
        raise PlanFileError(f"spec.within_value: must be a label value, got {show(value)}")
    if (value is None) != (out.get("within") is None):
        raise PlanFileError("spec.within_value: must be given exactly when spec.within is")
    out["within_value"] = value
    return out


def _rank(raw: object, i: int, spec: ResolvedSpec) -> RankPlacement:
    """A rank back from its bundles; they must be exactly the bundles a rank on those nodes has in the layout."""
    path = f"ranks[{i}]"
    r = _mapping(raw, path)
    raw_bundles = _list(_field(r, "bundles", path), f"{path}.bundles")
    most = spec.world_size + 1 if spec.bundles == "per_device" else spec.world_size
    if not 1 <= len(raw_bundles) <= most:
        raise PlanFileError(
            f"{path}.bundles: a rank of {spec.world_size} devices has 1 to {most} bundles, got {len(raw_bundles)}"
        )
    bundles: list[tuple[str, dict[str, float]]] = []
    for j, raw_bundle in enumerate(raw_bundles):
        where = f"{path}.bundles[{j}]"
        b = _mapping(raw_bundle, where)
        amounts: dict[str, float] = {}
        for key, value in _mapping(_field(b, "resources", where), f"{where}.resources").items():
            if key not in (spec.device, "CPU") or type(value) not in (int, float) or not 0 < value <= MAX_AMOUNT:
                raise PlanFileError(f"{where}.resources: must hold amounts of {spec.device} or CPU")
            amounts[key] = float(value)
        bundles.append((_id(_field(b, "node", where), f"{where}.node"), amounts))
    nodes, devices, control = _placed(bundles, spec)
    strategy = _field(r, "strategy", path)
    if not isinstance(strategy, str):
        raise PlanFileError(f"{path}.strategy: must be a string, got {show(strategy)}")
    rank = RankPlacement(
        rank=_int(_field(r, "rank", path), f"{path}.rank", minimum=0, maximum=MAX_RANKS),
        local_rank=_int(_field(r, "local_rank", path), f"{path}.local_rank", minimum=0, maximum=MAX_RANKS),
        strategy=strategy,
        nodes=nodes,
        devices=devices,
        control=control,
    )
    expected = [(b.node, dict(b.resources)) for b in rank.bundles(spec.device, spec.cpus, spec.bundles)]
    if bundles != expected:
        raise PlanFileError(
            f"{path}.bundles: not the {spec.bundles} bundles of a rank of {spec.world_size} {spec.device} on "
            f"{', '.join(nodes)} with {spec.cpus:g} control CPUs"
        )
    if _list(_field(r, "nodes", path), f"{path}.nodes") != list(nodes):
        raise PlanFileError(f"{path}.nodes: must list the nodes of its bundles, in order")
    return rank


def _placed(
    bundles: list[tuple[str, dict[str, float]]], spec: ResolvedSpec
) -> tuple[tuple[str, ...], tuple[int, ...], str]:
    """The nodes, devices per node and control node that bundles describe; their exact shape is checked after."""
    devices: dict[str, int] = {}
    if spec.bundles == "per_device":  # a bundle per device, node by node, then the control bundle
        for node, _ in bundles[:-1]:
            devices[node] = devices.get(node, 0) + 1
        return tuple(devices), tuple(devices.values()), bundles[-1][0]
    if spec.device == "CPU":  # one count per node: the control node's holds the control CPUs on top
        totals = {node: amounts.get("CPU", 0.0) for node, amounts in bundles}
        control = max(totals, key=lambda n: totals[n])
        devices = {node: round(total - (spec.cpus if node == control else 0.0)) for node, total in totals.items()}
        return tuple(devices), tuple(devices.values()), control
    control = next((node for node, amounts in bundles if "CPU" in amounts), bundles[0][0])
    devices = {node: round(amounts.get(spec.device, 0.0)) for node, amounts in bundles}
    return tuple(devices), tuple(devices.values()), control


def _node(raw: object, i: int, device: str) -> Node:
    path = f"nodes[{i}]"
    n = _mapping(raw, path)
    ip = _field(n, "ip", path)
    if not isinstance(ip, str) or not valid_ip(ip):
        raise PlanFileError(f"{path}.ip: must be an IPv4 or IPv6 address, got {show(ip)}")
    head = n.get("head", False)
    if type(head) is not bool:
        raise PlanFileError(f"{path}.head: must be true or false, got {show(head)}")
    available: dict[str, float] = {}
    for key, value in _mapping(_field(n, "available", path), f"{path}.available").items():
        if key not in (device, "CPU") or type(value) not in (int, float) or not 0 <= value <= MAX_AMOUNT:
            raise PlanFileError(f"{path}.available.{show(key)[1:-1]}: must be an amount of {device} or CPU")
        available[key] = float(value)
    labels = n.get("labels", {})
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 317 and len(v) <= 63 for k, v in labels.items()
    ):
        raise PlanFileError(f"{path}.labels: must map label names to values, got {show(labels)}")
    node_id = _id(_field(n, "id", path), f"{path}.id")
    return Node(id=node_id, ip=ip, head=head, resources=available, available=available, labels=dict(labels))


def _field(doc: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in doc:
        raise PlanFileError(f"{path}.{key}: missing", hint=HINT)
    return doc[key]


def _id(value: object, path: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 256 or not value.isprintable():
        raise PlanFileError(f"{path}: must be a node id, got {show(value)}")
    return value


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PlanFileError(f"{path}: must be a mapping, got {show(value)}", hint=HINT)
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise PlanFileError(f"{path}: must be a list, got {show(value)}", hint=HINT)
    return value


def _int(value: object, path: str, *, minimum: int = 1, maximum: int) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise PlanFileError(f"{path}: must be an integer from {minimum} to {maximum:,}, got {show(value)}")
    return value
