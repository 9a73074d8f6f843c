"""The inventory document (DESIGN.md format) to nodes and back, with errors that name the key path."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from dpctl_ray.errors import BadInput
from dpctl_ray.planner.model import Node
from dpctl_ray.values import quoted, show

_NODE_KEYS = ("id", "ip", "head", "resources", "available", "labels")
_NODE_KEY_SET = frozenset(_NODE_KEYS)
_NO_LABELS: Mapping[str, str] = MappingProxyType({})
_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
MAX_AMOUNT = 1e15  # of any resource on one node (memory is counted in bytes)
_RESOURCE_NAMES: set[str] = set()  # names already found printable


class InventoryError(BadInput):
    """The inventory document is malformed; the message names the key path."""

    default_code = "bad_inventory"


def nodes_from_document(doc: object) -> tuple[Node, ...]:
    """Validate an inventory document and build its nodes; `available` defaults to the totals."""
    if not isinstance(doc, Mapping):
        raise InventoryError(f"inventory: must be a mapping with a 'nodes' list, got {_kind(doc)}")
    unknown = [k for k in doc if k != "nodes"]
    if unknown:
        raise InventoryError(f"{unknown[0]}: unknown key", hint="an inventory has one key, 'nodes'")
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list):
        raise InventoryError(f"nodes: must be a list of nodes, got {_kind(raw_nodes)}")
    if not raw_nodes:
        raise InventoryError("nodes: lists no node", hint="an inventory lists the cluster's nodes under `nodes:`")
    checked: set[tuple[str, str]] = set()  # label pairs already found valid
    nodes = tuple(_node(raw, i, checked) for i, raw in enumerate(raw_nodes))
    seen: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.id in seen:
            raise InventoryError(
                f"nodes[{i}].id: {quoted(node.id)} is also the id of nodes[{seen[node.id]}]",
                hint="node ids must be unique; give nodes that share an ip an explicit id",
            )
        seen[node.id] = i
    return nodes


def nodes_to_document(nodes: Iterable[Node]) -> dict[str, Any]:
    """The inventory document for nodes, in the order given."""
    return {
        "nodes": [
            {
                "id": n.id,
                "ip": n.ip,
                "head": n.head,
                "resources": {k: number(v) for k, v in n.resources.items()},
                "available": {k: number(v) for k, v in n.available.items()},
                "labels": dict(n.labels),
            }
            for n in nodes
        ]
    }


def number(value: float) -> float | int:
    """A resource amount as written in documents: integral amounts without a trailing .0."""
    return int(value) if float(value).is_integer() else value


def _node(raw: object, i: int, checked: set[tuple[str, str]]) -> Node:
    # Paths are built only on error: a 16k-node inventory validates in a few tens of milliseconds.
    if not isinstance(raw, dict):
        raise InventoryError(f"nodes[{i}]: must be a mapping, got {_kind(raw)}")
    if not raw.keys() <= _NODE_KEY_SET:
        key = next(k for k in raw if k not in _NODE_KEY_SET)
        hint = f"node keys are {', '.join(_NODE_KEYS)}"
        raise InventoryError(f"nodes[{i}].{show(key)[1:-1]}: unknown key", hint=hint)
    ip = raw.get("ip")
    if type(ip) is not str or not valid_ip(ip):
        raise InventoryError(f"nodes[{i}].ip: must be an IPv4 or IPv6 address, got {show(ip)}")
    node_id = raw.get("id", ip)
    if type(node_id) is not str or not _printable(node_id):
        raise InventoryError(f"nodes[{i}].id: must be 1-256 printable characters, got {show(node_id)}")
    head = raw.get("head", False)
    if type(head) is not bool:
        raise InventoryError(f"nodes[{i}].head: must be true or false, got {show(head)}")
    resources = _amounts(raw.get("resources"), i, "resources")
    given = raw.get("available")
    if given is not None or "available" in raw:
        free = _amounts(given, i, "available")
        for key, amount in free.items():
            if key not in resources:
                raise InventoryError(
                    f"nodes[{i}].available.{key}: not in nodes[{i}].resources",
                    hint="available lists free amounts of the resources the node has",
                )
            if amount > resources[key] + 1e-9:
                raise InventoryError(
                    f"nodes[{i}].available.{key}: {number(amount)} exceeds the total {number(resources[key])}"
                )
        available = {**resources, **free}
    else:
        available = resources
    labels = raw.get("labels", _NO_LABELS)
    if labels is _NO_LABELS or (not labels and isinstance(labels, dict)):
        labels = _NO_LABELS
    elif not isinstance(labels, dict) or not _labels_ok(labels, checked):
        raise InventoryError(
            f"nodes[{i}].labels: must map label names to values (printable strings), got {_kind(labels)}",
            hint="e.g. labels: {zone: us-east-1a}; leave the key out (or {}) for a node without labels",
        )
    else:
        labels = dict(labels)
    return Node(node_id, ip, head, resources, available, labels)


def _amounts(raw: object, i: int, field: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise InventoryError(f"nodes[{i}].{field}: must map resource names to amounts, got {_kind(raw)}")
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key not in _RESOURCE_NAMES:  # a cluster has a few resource names, on every node: check each once
            if type(key) is not str or not _printable(key):
                raise InventoryError(f"nodes[{i}].{field}: resource names must be printable strings, got {show(key)}")
            _RESOURCE_NAMES.add(key)
        # type() rather than isinstance(): True is not an amount; the range check also rejects NaN and infinity,
        # and runs before an integer becomes a float.
        if type(value) not in (int, float) or not value >= 0:
            raise InventoryError(f"nodes[{i}].{field}.{key}: must be a number >= 0, got {show(value)}")
        if not value <= MAX_AMOUNT:  # infinity too; checked before an integer becomes a float
            raise InventoryError(f"nodes[{i}].{field}.{key}: must be at most {MAX_AMOUNT:g}, got {show(value)}")
        out[key] = float(value)
    return out


def valid_ip(text: str) -> bool:
    """Whether `text` is an IPv4 or IPv6 address literal."""
    if _IPV4.fullmatch(text):
        return True
    if ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _labels_ok(labels: dict[object, object], checked: set[tuple[str, str]]) -> bool:
    """Names non-empty, values possibly empty, all printable strings of at most 256 characters.

    Each distinct pair is checked once (`checked` remembers them): nodes share label names and most values,
    so most nodes' labels are all known pairs, which one set comparison tells.
    """
    try:
        if labels.items() <= checked:
            return True
    except TypeError:  # an unhashable value (a list): refused below
        pass
    for k, v in labels.items():
        if type(k) is not str or type(v) is not str or not k:
            return False
        if len(k) > 256 or len(v) > 256 or not k.isprintable() or not v.isprintable():
            return False
        checked.add((k, v))
    return True


def _printable(text: str) -> bool:
    # Ids and names go into tables, messages and Ray object names: one line, nothing invisible, bounded.
    return 0 < len(text) <= 256 and text.isprintable()


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {show(value)}"
    return type(value).__name__
