"""The plan document (DESIGN.md "Plan JSON") as dicts: a plan, its spec, skips and causes.

The fast text writer of the same document is `plan_text`; the strict reader of plan files `plan_file`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpctl_ray.planner.inventory import number
from dpctl_ray.planner.model import (
    Infeasible,
    Node,
    Plan,
    RankPlacement,
    ResolvedSpec,
    Skip,
)

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
