"""The cluster's nodes as the planner sees them, read from the GCS (no dashboard needed)."""

from __future__ import annotations

import ray
from ray._private.state import state as gcs_state  # per-node availability; the public API needs the dashboard

from dpctl_ray.planner.model import Node

NODE_ID_LABEL = "ray.io/node-id"


def snapshot() -> tuple[Node, ...]:
    """Alive nodes with totals, free resources and labels."""
    available = gcs_state.available_resources_per_node()
    nodes = []
    for raw in ray.nodes():
        if not raw.get("Alive"):
            continue
        node_id = raw["NodeID"]
        totals = raw.get("Resources", {})
        resources = {k: float(v) for k, v in totals.items() if not k.startswith("node:")}
        free = available.get(node_id, {})
        nodes.append(
            Node(
                id=node_id,
                ip=raw["NodeManagerAddress"],
                head="node:__internal_head__" in totals,
                resources=resources,
                available={k: float(free.get(k, 0.0)) for k in resources},
                labels={k: v for k, v in raw.get("Labels", {}).items() if k != NODE_ID_LABEL},
            )
        )
    return tuple(nodes)


def alive() -> set[str]:
    """Ids of the nodes that are alive now."""
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
