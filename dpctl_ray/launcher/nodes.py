"""The cluster's nodes as the planner sees them, read from the GCS (no dashboard needed)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import ray
from ray._private.state import state as gcs_state  # per-node availability; the public API needs the dashboard
from ray.exceptions import RuntimeEnvSetupError

from dpctl_ray.errors import ClusterUnreachable
from dpctl_ray.planner.model import Node
from dpctl_ray.values import one_line

NODE_ID_LABEL = "ray.io/node-id"


def snapshot() -> tuple[Node, ...]:
    """Alive nodes with totals, free resources and labels (through Ray Client, read by a task in the cluster)."""
    if ray.util.client.ray.is_connected():
        try:
            nodes: tuple[Node, ...] = ray.get(_in_cluster.remote())
        except RuntimeEnvSetupError as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise ClusterUnreachable(
                f"through Ray Client, dpctl reads the cluster with a task in it, and Ray could not ship dpctl's code "
                f"for it: {one_line(lines[-1] if lines else 'no reason given', 300)}",
                hint="`dpctl doctor` checks code shipping; or run dpctl on a node with the GCS address (host:6379)",
                code="client_failed",
            ) from None
        return nodes
    return _snapshot()


def _snapshot() -> tuple[Node, ...]:
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


def unreachable(ids: set[str], timeout: float = 1.0) -> set[str]:
    """Of these alive nodes, those whose raylet refuses a TCP connection: dead, though the GCS has not noticed yet.

    Ray marks a node dead after its health checks fail for a while (seconds); a repair must not place a rank
    back on it meanwhile. Through Ray Client the raylets are not reachable from here, so none is reported.
    """
    if ray.util.client.ray.is_connected():
        return set()
    targets = {
        n["NodeID"]: (n["NodeManagerAddress"], int(n["NodeManagerPort"]))
        for n in ray.nodes()
        if n.get("Alive") and n["NodeID"] in ids and n.get("NodeManagerPort")
    }

    def refused(address: tuple[str, int]) -> bool:
        try:
            with socket.create_connection(address, timeout=timeout):
                return False
        except OSError:
            return True

    with ThreadPoolExecutor(max_workers=min(max(len(targets), 1), 64)) as pool:
        verdicts = dict(zip(targets, pool.map(refused, targets.values()), strict=True))
    return {node for node, gone in verdicts.items() if gone}


def alive() -> set[str]:
    """Ids of the nodes that are alive now."""
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


_in_cluster = ray.remote(num_cpus=0)(_snapshot)  # the GCS state API works only in the cluster's own processes
