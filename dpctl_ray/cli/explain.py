"""Infeasible plans in words: one line, a hint, and a short table of the nodes that were passed over."""

from __future__ import annotations

from collections import defaultdict

from dpctl_ray.cli import console
from dpctl_ray.cli.render import Column, short_ids, table
from dpctl_ray.errors import InfeasibleError
from dpctl_ray.planner.document import infeasible_details
from dpctl_ray.planner.inventory import number
from dpctl_ray.planner.model import Infeasible, InfeasibleCode, Skip, SkipReason
from dpctl_ray.planner.place import NoPlan

SKIP_COLUMNS = (Column("node"), Column("ip"), Column("skipped because"))
_ROWS_BEFORE_GROUPING = 8


def _need(device: str, devices: int, cpus: float) -> str:
    return f"{devices} {device} + {number(cpus)} CPU"


def _free(device: str, devices: int, cpus: float) -> str:
    return f"{devices} {device} and {number(cpus)} CPU free"


def reason_text(skip: Skip, device: str) -> str:
    """Why one node was passed over, with numbers."""
    free = _free(device, skip.free_devices, skip.free_cpus)
    match skip.reason:
        case SkipReason.NOT_ALLOWED:
            return "not in placement.nodes"
        case SkipReason.NO_DEVICE:
            return f"has no {device}"
        case SkipReason.TOO_FEW_DEVICES:
            return f"too few free {device}: has {skip.free_devices}, needs {skip.need_devices}"
        case SkipReason.TOO_FEW_CPUS:
            return (
                f"too few free CPU for the engine actor: has {number(skip.free_cpus)}, needs {number(skip.need_cpus)}"
            )
        case SkipReason.HETEROGENEOUS:
            return f"span takes whole nodes of {skip.need_devices} {device}; this one has {skip.free_devices}"
        case SkipReason.LABEL:
            if skip.value is None:
                return f"has no label {skip.label}"
            return f"label {skip.label}={skip.value} is not selected"
    return free  # pragma: no cover - every reason is matched above


def skip_rows(skipped: tuple[Skip, ...], device: str) -> list[tuple[str, ...]]:
    """One row per node, or per reason (with a count and examples) when many nodes were skipped."""
    names = short_ids(s.node for s in skipped)
    if len(skipped) <= _ROWS_BEFORE_GROUPING:
        return [(names[s.node], s.ip, reason_text(s, device)) for s in skipped]
    groups: dict[SkipReason, list[Skip]] = defaultdict(list)
    for s in skipped:
        groups[s.reason].append(s)
    rows: list[tuple[str, ...]] = []
    for group in groups.values():
        examples = ", ".join(names[s.node] for s in group[:3]) + (", ..." if len(group) > 3 else "")
        rows.append((f"{len(group)} nodes", examples, reason_text(group[0], device) + " (first shown)"))
    return rows


def worth_showing(skipped: tuple[Skip, ...], *, show_deviceless: bool) -> tuple[Skip, ...]:
    """The nodes passed over that a table should list: a node without the device (a CPU-only head) is normal."""
    return tuple(s for s in skipped if show_deviceless or s.reason is not SkipReason.NO_DEVICE)


def in_words(exc: NoPlan, *, json_errors: bool) -> InfeasibleError:
    """The error boundary's words for a plan that does not fit; the nodes passed over go to stderr as a table.

    With a JSON document requested (`json_errors`), the causes go into its `error` document instead of a table.
    """
    result = exc.result
    passed_over = worth_showing(result.skipped, show_deviceless=result.code is InfeasibleCode.NO_NODES)
    if passed_over and not json_errors:
        console.print_err(table(SKIP_COLUMNS, skip_rows(passed_over, result.spec.device), title="nodes passed over"))
    message, hint = describe(result)
    return InfeasibleError(message, hint=hint, code=result.code.value, details=infeasible_details(result))


def describe(result: Infeasible) -> tuple[str, str]:
    """The one-line message and the hint for an infeasible plan."""
    message, hint = _describe(result)
    if result.within:
        label = result.spec.within
        each = ", ".join(f"{value or '(none)'} {free} {result.spec.device}" for value, free in result.within)
        message = f"no value of {label} holds the deployment ({each} free); with the most: {message}"
        hint = f"drop --within {label}, lower --dp or --tp, or free devices in one {label}"
    return message, hint


def _describe(result: Infeasible) -> tuple[str, str]:
    spec = result.spec
    device = spec.device
    need = _need(device, result.need_devices, result.need_cpus)
    best = result.best
    if best is None or best.free_devices == 0:
        best_text = f"no node has a free {device} left"
    else:
        best_text = (
            f"the best node, {short_ids([best.node])[best.node]} ({best.ip}), has "
            f"{_free(device, best.free_devices, best.free_cpus)}"
        )
    match result.code:
        case InfeasibleCode.NO_NODES:
            where = "in placement.nodes " if spec.nodes else ""
            return (
                f"no node {where}has {device}",
                "check --device (Ray resource names are case-sensitive) and --nodes; `dpctl inventory` lists nodes",
            )
        case InfeasibleCode.MASTER_UNUSABLE:
            reason = reason_text(result.skipped[0], device) if result.skipped else "unusable"
            return (f"master {result.detail!r} cannot host ranks: {reason}", "choose another --master, or auto")
        case InfeasibleCode.MASTER_CANNOT_FIT:
            master = result.best
            have = _free(device, master.free_devices, master.free_cpus) if master else "nothing free"
            ranks = max(result.need_devices // max(spec.world_size, 1), 1)
            what = f"{ranks} rank{'s' if ranks != 1 else ''} (dp_local)" if spec.pack != "span" else "rank 0"
            name = short_ids([result.master or "?"])[result.master or "?"]
            return (
                f"the master {name} cannot host {what}: needs {need}, has {have}",
                "lower --dp-local or --tp, or pick a master with more free devices (--master)",
            )
        case InfeasibleCode.SPAN_TOO_SMALL:
            per_node = best.free_devices if best else 0
            return (
                f"pack span: world_size {spec.world_size} fits on one node ({per_node} free {device} on the master)",
                "span is for ranks larger than a node; use --pack strict or fill",
            )
        case InfeasibleCode.SPAN_UNEVEN:
            per_node = best.free_devices if best else 0
            return (
                f"pack span: world_size {spec.world_size} is not a multiple of the {per_node} free {device} per node",
                f"choose tp x pp as a multiple of {per_node}, or free whole nodes",
            )
        case InfeasibleCode.INSUFFICIENT if result.rank is not None and result.rank >= spec.dp:
            spare = result.rank - spec.dp
            return (
                f"cannot place spare {spare} of {spec.spares}: a rank needs {need}; {best_text}",
                f"the {spec.dp} ranks and {spare} of {spec.spares} spares fit; lower --spares, or add nodes",
            )
        case InfeasibleCode.INSUFFICIENT:
            per_node = min(result.dp_local or 1, spec.dp - result.placed)
            if spec.pack == "strict" and per_node > 1:
                per_node_need = _need(device, per_node * result.need_devices, per_node * result.need_cpus)
                what = f"pack strict puts {per_node} ranks ({per_node_need}) on each further node"
                hint = "--pack fill also uses partly free nodes; or lower --dp, --dp-local or --tp"
            else:
                scope = "on one node" if spec.pack != "span" else "over whole nodes"
                what = f"a rank needs {need} {scope}"
                hint = "lower --dp or --tp, free devices, or add nodes"
            return (
                f"cannot place rank {result.rank} of {spec.dp}: {what}; {best_text}",
                f"{result.placed} of {spec.dp} ranks fit; {hint}",
            )
    return (f"infeasible: {result.code.value}", "")  # pragma: no cover
