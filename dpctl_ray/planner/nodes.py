"""The cluster as planning sees it: the nodes' order, which of them qualify (and why not), and its fingerprint.

Plan, scale and repair all start here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter

from dpctl_ray.planner.checks import SpecError
from dpctl_ray.planner.labels import value_of
from dpctl_ray.planner.model import Layout, Node, Placement, Skip, SkipReason, units
from dpctl_ray.values import quoted


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
                skipped.append(skip(node, SkipReason.NOT_ALLOWED, spec))
                continue
        if node.total_devices(spec.device) == 0 and node.free_devices(spec.device) == 0:
            skipped.append(skip(node, SkipReason.NO_DEVICE, spec))
            continue
        miss = None
        for match in select:  # a loop, not next(generator): this runs per node
            if not match.matches(node.labels):
                miss = match
                break
        if miss is not None:
            skipped.append(label_skip(node, spec, miss.key))
            continue
        if within is not None and value_of(node.labels, within) != within_value:
            skipped.append(label_skip(node, spec, within))
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


def label_skip(node: Node, spec: Placement, label: str) -> Skip:
    """The node ruled out by `label` (select or within), with its value of it."""
    return dataclasses.replace(skip(node, SkipReason.LABEL, spec), label=label, value=node.labels.get(label))


def skip(node: Node, reason: SkipReason, spec: Placement) -> Skip:
    """A skip record of what the node has free against what one rank of `spec` needs."""
    return Skip(
        node=node.id,
        ip=node.ip,
        reason=reason,
        free_devices=node.free_devices(spec.device),
        free_cpus=node.available.get("CPU", 0.0),
        need_devices=spec.world_size,
        need_cpus=spec.cpus,
    )
