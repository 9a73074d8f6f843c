"""The plan document (DESIGN.md "Plan JSON"): Plan to dict, JSON or YAML text, and a strict reader back to Plan."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

from dpctl_ray.planner.checks import MAX_CPUS, MAX_RANKS, MAX_WORLD_SIZE, SpecError, check_spec
from dpctl_ray.planner.inventory import MAX_AMOUNT, number, valid_ip
from dpctl_ray.planner.labels import MAX_SELECTORS, LabelError, LabelMatch, check_key
from dpctl_ray.planner.model import (
    LAYOUTS,
    PACKS,
    SPARES_MODES,
    Infeasible,
    Node,
    Plan,
    RankPlacement,
    ResolvedSpec,
    Skip,
    SparesMode,
    valid_name,
)
from dpctl_ray.planner.verify import PlanFileError, check_plan
from dpctl_ray.values import show

VERSION = 1
HINT = "is this a file from `dpctl plan --out`? make one with it"


def amounts(device: str, devices: float, cpus: float) -> dict[str, float | int]:
    """Devices and CPUs as a document shows them; one count when the device is CPU itself (no key twice)."""
    if device == "CPU":
        return {"CPU": number(devices + cpus)}
    return {device: number(devices), "CPU": number(cpus)}


def plan_to_document(plan: Plan, extra: Mapping[str, list[Any]] | None = None) -> dict[str, Any]:
    """The DESIGN.md plan document (`extra` lists added before the fingerprint, e.g. a command's processes)."""
    spec = plan.spec
    device = spec.device
    usage = plan.usage()

    def bundles(rank: RankPlacement) -> list[dict[str, Any]]:
        return [{"node": b.node, "resources": {k: number(v) for k, v in b.resources}} for b in plan.bundles(rank)]

    return {
        "version": VERSION,
        "spec": spec_to_document(plan.name, spec),
        "ranks": [
            {
                "rank": r.rank,
                "local_rank": r.local_rank,
                "strategy": r.strategy,
                "nodes": list(r.nodes),
                "bundles": bundles(r),
            }
            for r in plan.ranks
        ],
        **(
            {
                "spares": [
                    {
                        "spare": r.rank,
                        "local_rank": r.local_rank,
                        "strategy": r.strategy,
                        "nodes": list(r.nodes),
                        "bundles": bundles(r),
                    }
                    for r in plan.spares
                ]
            }
            if plan.spares
            else {}
        ),
        "nodes": [
            {
                "id": n.id,
                "ip": n.ip,
                "head": n.head,
                "available": _available(n, device),
                "planned": amounts(device, usage.devices.get(n.id, 0), usage.cpus.get(n.id, 0.0)),
                **({"labels": node_labels(n, spec)} if spec.labels else {}),
            }
            for n in plan.nodes
        ],
        "skipped": [skip_to_document(s, device) for s in plan.skipped],
        "warnings": list(plan.warnings),
        **(extra or {}),
        "cluster_fingerprint": plan.fingerprint,
    }


def _available(node: Node, device: str) -> dict[str, float | int]:
    if device == "CPU":
        return {"CPU": number(node.available.get("CPU", 0.0))}
    return {device: number(node.available.get(device, 0.0)), "CPU": number(node.available.get("CPU", 0.0))}


def spec_to_document(name: str, spec: ResolvedSpec) -> dict[str, Any]:
    """The resolved spec as the plan and status documents show it."""
    return {
        "name": name,
        "dp": spec.dp,
        "dp_local": spec.dp_local,
        "tp": spec.tp,
        "pp": spec.pp,
        "world_size": spec.world_size,
        "pack": spec.pack,
        "device": spec.device,
        "cpus": number(spec.cpus),
        "master": spec.master,
        "nodes": list(spec.nodes),
        "bundles": spec.bundles,
        **({"spares": spec.spares} if spec.spares else {}),
        **({"spares_mode": spec.spares_mode} if spec.spares_mode != "reserved" else {}),
        **label_options(spec),
    }


def label_options(spec: ResolvedSpec) -> dict[str, Any]:
    """The label options a spec uses (none: no keys, so documents without labels read as before)."""
    doc: dict[str, Any] = {}
    if spec.select:
        doc["select"] = {m.key: m.ray_value for m in spec.select}
    for key in ("within", "within_value", "rank_within", "spread"):
        if getattr(spec, key) is not None:
            doc[key] = getattr(spec, key)
    return doc


def node_labels(node: Node, spec: ResolvedSpec) -> dict[str, str]:
    """The labels of a node that the spec reads."""
    return {k: node.labels[k] for k in spec.labels if k in node.labels}


def skip_to_document(skip: Skip, device: str = "GPU") -> dict[str, Any]:
    """One skipped node with what it has and what it would have needed."""
    free = {"devices": skip.free_devices, "CPU": number(skip.free_cpus)}
    need = {"devices": skip.need_devices, "CPU": number(skip.need_cpus)}
    if device == "CPU":
        free, need = {"CPU": number(skip.free_cpus)}, {"CPU": number(skip.need_devices + skip.need_cpus)}
    doc: dict[str, Any] = {"node": skip.node, "ip": skip.ip, "reason": skip.reason.value, "free": free, "need": need}
    if skip.label:
        doc |= {"label": skip.label, "value": skip.value}
    return doc


def infeasible_details(result: Infeasible) -> dict[str, Any]:
    """The machine-readable causes in an infeasible plan's `{"error": {...}}` document."""
    best = result.best
    device = result.spec.device
    free = None
    if best is not None:
        free = (
            {"CPU": number(best.free_cpus)} if device == "CPU" else amounts(device, best.free_devices, best.free_cpus)
        )
    return {
        "rank": result.rank,
        "placed": result.placed,
        "need": amounts(device, result.need_devices, result.need_cpus),
        "best": None if best is None else {"node": best.node, "ip": best.ip, "free": free},
        "master": result.master,
        "dp_local": result.dp_local,
        "skipped": [skip_to_document(s, device) for s in result.skipped],
        **({"within": [{"value": v, "free": {device: free}} for v, free in result.within]} if result.within else {}),
        "cluster_fingerprint": result.fingerprint,
    }


# --- writing: JSON and YAML straight from the plan -------------------------------------------------------


def plan_json(plan: Plan, extra: Mapping[str, list[Any]] | None = None) -> str:
    """`dumps(plan_to_document(plan))`, written straight from the plan.

    Building the document's dicts first doubled a whole `dpctl plan -o json` of 16,384 nodes (830 ms against
    410 ms when measured), and the plan benchmark holds dpctl within 1.5x of the seed's loop.
    """
    parts = _parts(plan, encode_basestring_ascii, extra or {})
    out = ["{\n"]  # pieces joined once: each concatenation of a multi-megabyte string is another copy of it
    for i, (key, value) in enumerate(parts):
        out.append(f"  {json.dumps(key)}: ")
        if isinstance(value, list) and value:
            out += ["[\n    ", ",\n    ".join(value), "\n  ]"]
        else:
            out.append("[]" if isinstance(value, list) else value)
        out.append(",\n" if i < len(parts) - 1 else "\n")
    out.append("}\n")
    return "".join(out)


def plan_yaml(plan: Plan, extra: Mapping[str, list[Any]] | None = None) -> str:
    """The same document as YAML: top-level keys in block style, each list item one line of JSON (which YAML reads).

    A YAML library's emitter takes minutes and gigabytes for a 200,000-node plan; this takes what JSON takes.
    """
    lines = []
    for key, value in _parts(plan, encode_basestring, extra or {}):
        if isinstance(value, list) and value:
            lines.append(f"{key}:")
            lines += [f"- {item}" for item in value]
        else:
            lines.append(f"{key}: {'[]' if isinstance(value, list) else value}")
    return "\n".join(lines) + "\n"


def _parts(plan: Plan, q: Callable[[str], str], extra: Mapping[str, list[Any]]) -> list[tuple[str, str | list[str]]]:
    """The document's top-level keys with their values as text: a scalar or mapping, or a list's items."""
    device = plan.spec.device
    ascii_only = q is encode_basestring_ascii
    numbers: dict[float, str] = {}

    def num(value: float) -> str:
        text = numbers.get(value)
        if text is None:
            text = numbers[value] = json_number(value)
        return text

    dev = q(device)
    control_cpus = plan.spec.cpus

    def per_device(r: RankPlacement) -> str:
        # {"node": N, "resources": {"GPU": 1}} once per device, node by node, then the control bundle.
        one = f'"resources": {{{dev}: 1}}}}, '
        devices = "".join([(f'{{"node": {q(n)}, ' + one) * c for n, c in zip(r.nodes, r.devices, strict=True)])
        return f'[{devices}{{"node": {q(r.control)}, "resources": {{"CPU": {num(control_cpus)}}}}}]'

    written_held: dict[tuple[int, bool], str] = {}

    def held(count: int, *, control: bool) -> str:
        # A per_node bundle's resources: its devices, with the control CPUs on the control node; once per kind.
        text = written_held.get((count, control))
        if text is None:
            if not control:
                text = f"{dev}: {count}"
            elif device == "CPU":
                text = f'"CPU": {num(count + control_cpus)}'
            else:
                text = f'{dev}: {count}, "CPU": {num(control_cpus)}'
            written_held[(count, control)] = text
        return text

    def per_node(r: RankPlacement) -> str:
        # One bundle per node of the rank (RankPlacement.bundles); the control node's has the control CPUs.
        parts = [
            f'{{"node": {q(n)}, "resources": {{{held(c, control=n == r.control)}}}}}'
            for n, c in zip(r.nodes, r.devices, strict=True)
        ]
        return "[" + ", ".join(parts) + "]"

    one_bundle = plan.spec.bundles != "per_device"
    bundles = per_node if one_bundle else per_device

    def item(key: str, r: RankPlacement) -> str:
        # A rank or spare; this runs per rank, so a one-node rank's per_node bundle is written in the same f-string.
        start = f'{{"{key}": {r.rank}, "local_rank": {r.local_rank}, "strategy": {q(r.strategy)}, '
        if one_bundle and len(r.nodes) == 1:
            node, resources = q(r.control), held(r.devices[0], control=True)
            return f'{start}"nodes": [{node}], "bundles": [{{"node": {node}, "resources": {{{resources}}}}}]}}'
        return f'{start}"nodes": [{", ".join(map(q, r.nodes))}], "bundles": {bundles(r)}}}'

    ranks = [item("rank", r) for r in plan.ranks]
    spares = [item("spare", r) for r in plan.spares]
    head = {True: "true", False: "false"}
    spec = plan.spec

    used = spec.labels
    written: dict[tuple[str | None, ...], str] = {}

    def labels(n: Node) -> str:
        # node_labels(n, spec) as JSON, written directly, once per distinct set of values: this runs per node.
        if not used:
            return ""
        values = tuple(map(n.labels.get, used))
        text = written.get(values)
        if text is None:
            pairs = [f"{q(k)}: {q(v)}" for k, v in zip(used, values, strict=True) if v is not None]
            text = written[values] = ', "labels": {' + ", ".join(pairs) + "}"
        return text

    usage = plan.usage()
    devices, cpus = usage.devices, usage.cpus
    if device == "CPU":  # one count: the ranks' devices and their engines draw on the same CPUs
        nodes = [
            f'{{"id": {q(n.id)}, "ip": {q(n.ip)}, "head": {head[n.head]}, '
            f'"available": {{"CPU": {num(n.available.get("CPU", 0.0))}}}, '
            f'"planned": {{"CPU": {num(devices.get(n.id, 0) + cpus.get(n.id, 0.0))}}}{labels(n)}}}'
            for n in plan.nodes
        ]
    else:
        nodes = [
            f'{{"id": {q(n.id)}, "ip": {q(n.ip)}, "head": {head[n.head]}, '
            f'"available": {{{dev}: {num(n.available.get(device, 0.0))}, '
            f'"CPU": {num(n.available.get("CPU", 0.0))}}}, '
            f'"planned": {{{dev}: {devices.get(n.id, 0)}, "CPU": {num(cpus.get(n.id, 0.0))}}}{labels(n)}}}'
            for n in plan.nodes
        ]
    return [
        ("version", str(VERSION)),
        ("spec", json.dumps(spec_to_document(plan.name, plan.spec), ensure_ascii=ascii_only)),
        ("ranks", ranks),
        *((("spares", spares),) if spares else ()),
        ("nodes", nodes),
        ("skipped", [json.dumps(skip_to_document(s, device)) for s in plan.skipped]),
        ("warnings", [q(w) for w in plan.warnings]),
        *((key, [json.dumps(item, ensure_ascii=ascii_only) for item in items]) for key, items in extra.items()),
        ("cluster_fingerprint", q(plan.fingerprint)),
    ]


def json_number(value: float) -> str:
    """A number as JSON writes it, with a dot in any exponent form (`5.0e-05`), which YAML 1.1 also reads as one."""
    text = json.dumps(number(value))
    if "e" in text and "." not in text:
        mantissa, _, exponent = text.partition("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def dumps(doc: Mapping[str, Any]) -> str:
    """JSON with one list item per line: readable, diffable, and fast (the C encoder does each line)."""
    lines = ["{"]
    items = list(doc.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, list) and value:
            lines.append(f"  {json.dumps(key)}: [")
            lines.append(",\n".join("    " + json.dumps(item) for item in value))
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- reading: strict, bounded, then checked as a plan ----------------------------------------------------


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
