"""The plan document as JSON or YAML text, written straight from the plan (the same document `document` makes).

A 16,384-node `dpctl plan -o json` is most of its time here; see the README's planning benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

from dpctl_ray.planner.document import (
    VERSION,
    skip_to_document,
    spec_to_document,
)
from dpctl_ray.planner.inventory import number
from dpctl_ray.planner.model import (
    Node,
    Plan,
    RankPlacement,
)


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
