"""Plans as rows (pure functions) and rows as Rich tables (one helper)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dpctl_ray.launcher.progress import RankPhase, RankProgress
from dpctl_ray.planner.inventory import number
from dpctl_ray.planner.model import Node, Plan, ResolvedSpec, Usage
from dpctl_ray.planner.scale import ScalePlan
from dpctl_ray.values import printable

if TYPE_CHECKING:
    from dpctl_ray.deployment.status import DeploymentStatus, RankStatus

_HEX_ID = re.compile(r"^[0-9a-f]{20,}$")
FREE = "·"
BUSY = "x"


def plural(count: int, word: str) -> str:
    """`1 rank`, `2 ranks`."""
    return f"{count} {word}{'' if count == 1 else 's'}"


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: header and alignment."""

    header: str
    justify: str = "left"
    no_wrap: bool = False


def short_ids(ids: Iterable[str], minimum: int = 8) -> dict[str, str]:
    """Ray's 56-hex node ids cut to the shortest prefix (at least `minimum`) that stays unique; names kept."""
    ids = list(dict.fromkeys(ids))
    hexes = [i for i in ids if _HEX_ID.match(i)]
    out = {i: i for i in ids}
    if not hexes:
        return out
    length = minimum
    while length < max(len(h) for h in hexes) and len({h[:length] for h in hexes}) < len(hexes):
        length += 2
    for h in hexes:
        out[h] = h[:length]
    return out


def plan_title(plan: Plan) -> str:
    """One line saying what the plan is (the nodes table marks the master); more for its label rules and spares."""
    s = plan.spec
    shape = f"TP {s.tp}" + (f" x PP {s.pp}" if s.pp > 1 else "")
    nodes_used = len({n for r in plan.ranks for n in r.nodes})
    first = (
        f"{plan.name}: {s.dp} rank{'s' if s.dp != 1 else ''} of {shape} "
        f"({s.dp * s.world_size} {s.device} on {nodes_used} node{'s' if nodes_used != 1 else ''}), "
        f"pack {s.pack}, dp_local {s.dp_local}, bundles {s.bundles}"
    )
    lines = [first]
    if s.labels:
        lines.append(labels_line(s))
    if s.spares:
        held = "idle engine hosts in each" if s.spares_mode == "started" else "a placement group each"
        lines.append(f"spares: {s.spares} ({s.spares_mode}: {held}); repair and scale-up take them first")
    return "\n".join(lines)


def labels_line(spec: ResolvedSpec) -> str:
    """The label options of a spec as a title states them, on a line under the shape of a plan or deployment."""
    rules = [f"select {', '.join(map(str, spec.select))}"] if spec.select else []
    if spec.within is not None:
        rules.append(f"within {spec.within}={spec.within_value or '(none)'}")
    rules += [
        f"{name} {label}" for name, label in (("rank_within", spec.rank_within), ("spread", spec.spread)) if label
    ]
    return "labels: " + "; ".join(rules)


def rank_rows(plan: Plan, limit: int | None = None, *, spares: bool = False) -> list[tuple[str, ...]]:
    """rank, local rank, node(s), ip(s), devices, strategy; the first `limit` ranks (then spares, `spare N`)."""
    ips = {n.id: n.ip for n in plan.nodes}
    names = short_ids(n.id for n in plan.nodes)
    device = plan.spec.device
    rows: list[tuple[str, ...]] = []
    shown = [(str(r.rank), r) for r in plan.ranks]
    if spares:
        shown += [(f"spare {r.rank}", r) for r in plan.spares]
    for label, r in shown[:limit]:
        devices = "+".join(map(str, r.devices)) + f" {device}"
        rows.append(
            (
                label,
                str(r.local_rank),
                ", ".join(names[n] for n in r.nodes),
                ", ".join(ips.get(n, "?") for n in r.nodes),
                devices,
                r.strategy,
            )
        )
    return rows


RANK_COLUMNS = (
    Column("rank", "right"),
    Column("local", "right"),
    Column("node"),
    Column("ip"),
    Column("devices"),
    Column("strategy"),
)


MAP_CELLS = 32  # devices a node's map shows one by one; beyond that it counts them


def device_map(node: Node, ranks: Sequence[tuple[int | str, int]], device: str) -> str:
    """One cell per device: the rank that holds it, `x` in use by others, `·` free; counts beyond MAP_CELLS.

    `ranks` are the (rank, devices) the plan puts on the node; a spare is `sN`.
    """
    planned = sum(count for _, count in ranks)
    free = node.free_devices(device)
    total = max(node.total_devices(device), free, planned)
    busy = total - free
    if total > MAP_CELLS:
        parts = [f"{BUSY} {busy:,}"] if busy else []
        parts += [f"{rank}:{count:,}" for rank, count in ranks[:8]]
        if len(ranks) > 8:
            parts.append(f"... {len(ranks) - 8} more ranks")
        parts.append(f"{FREE} {free - planned:,}")
        return "  ".join(parts)
    cells = [BUSY] * busy + [str(rank) for rank, count in ranks for _ in range(count)]
    cells += [FREE] * (total - len(cells))
    width = max((len(c) for c in cells), default=1)
    return " ".join(c.rjust(width) for c in cells)


def summarised_nodes(plan: Plan, usage: Usage) -> list[Node]:
    """The nodes the per-node summary lists: those with the device (a CPU-only head is left out)."""
    device = plan.spec.device
    return [n for n in plan.nodes if n.id in usage.devices or n.total_devices(device)]


def node_rows(plan: Plan, usage: Usage, limit: int | None = None) -> list[tuple[str, ...]]:
    """node, ip, role, devices planned/free, CPUs planned/free, device map, for the first `limit` nodes listed.

    When the device is CPU itself, one column counts both what the ranks' devices and their engines take.
    """
    device = plan.spec.device
    names = short_ids(n.id for n in plan.nodes)
    holders = plan.holders()
    rows: list[tuple[str, ...]] = []
    for node in summarised_nodes(plan, usage)[:limit]:
        role = ", ".join(role for role, on in (("master", node.id == plan.spec.master), ("head", node.head)) if on)
        devices, cpus = usage.devices.get(node.id, 0), usage.cpus.get(node.id, 0.0)
        free_cpus = number(node.available.get("CPU", 0.0))
        if device == "CPU":
            counts: tuple[str, ...] = (f"{number(devices + cpus)}/{free_cpus}",)
        else:
            counts = (f"{devices}/{node.free_devices(device)}", f"{number(cpus)}/{free_cpus}")
        values = tuple(node.labels.get(k, "") for k in shown_labels(plan.spec))
        row = (names[node.id], node.ip, *values, role, *counts)
        rows.append((*row, device_map(node, holders.get(node.id, []), device)))
    return rows


def shown_labels(spec: ResolvedSpec) -> tuple[str, ...]:
    """The labels the node summary shows a column for: those that group nodes (within, rank_within, spread)."""
    return tuple(dict.fromkeys(k for k in (spec.within, spec.rank_within, spec.spread) if k is not None))


def node_columns(device: str, labels: Sequence[str] = ()) -> tuple[Column, ...]:
    """Columns of the per-node summary; `labels` get a column each (named without a prefix/), after the ip.

    With labels shown, the device map's legend moves to the title (`nodes_title`) to keep 100 columns.
    """
    cpus = () if device == "CPU" else (Column("CPU plan/free", "right"),)
    return (
        Column("node"),
        Column("ip"),
        *(Column(label.rpartition("/")[2]) for label in labels),
        Column("role"),
        Column(f"{device} plan/free", "right"),
        *cpus,
        Column("devices" if labels else f"devices ({LEGEND})", no_wrap=True),
    )


LEGEND = "rank; x busy, · free"


def nodes_title(labels: Sequence[str]) -> str:
    """The per-node summary's title."""
    return f"nodes (devices: {LEGEND})" if labels else "nodes"


@dataclass(frozen=True, slots=True)
class Table:
    """Rows under a header, with an optional title line and a note under them; rendered at a width."""

    columns: Sequence[Column]
    rows: Sequence[Sequence[str]]
    title: str | None = None
    note: str | None = None

    def render(self, width: int | None = None, *, bold: bool = False) -> str:
        """Plain text: columns three spaces apart, a rule under the header, every cell on one line.

        Control characters in cells are escaped. When the table is wider than `width`, its widest wrapping
        columns are cut (with an ellipsis) until it fits.
        """
        header = [c.header for c in self.columns]
        cells = [[printable(cell) for cell in row] for row in self.rows]
        widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
        if width is not None:
            _fit(widths, self.columns, width)
        lines = [self._line(header, widths), "─" * (sum(widths) + 3 * (len(widths) - 1))]
        lines += [self._line(row, widths) for row in cells]
        if self.note:
            lines.append(self.note)
        if self.title is not None:
            title = "\n".join(printable(line) for line in self.title.split("\n"))
            lines.insert(0, f"\x1b[1m{title}\x1b[0m" if bold else title)
        return "\n".join(lines)

    def _line(self, row: Sequence[str], widths: list[int]) -> str:
        parts = []
        for cell, w, column in zip(row, widths, self.columns, strict=True):
            text = cell if len(cell) <= w else cell[: max(w - 1, 0)] + "…"
            parts.append(text.rjust(w) if column.justify == "right" else text.ljust(w))
        return "   ".join(parts).rstrip()


def _fit(widths: list[int], columns: Sequence[Column], width: int) -> None:
    """Narrow the widest columns that may be cut (not no_wrap ones) until the table fits `width`."""
    while sum(widths) + 3 * (len(widths) - 1) > width:
        cuttable = [i for i, c in enumerate(columns) if not c.no_wrap and widths[i] > 8]
        if not cuttable:
            return
        widest = max(cuttable, key=lambda i: widths[i])
        widths[widest] -= 1


def table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    limit: int | None = None,
    total: int | None = None,
    what: str = "rows",
) -> Table:
    """The one table helper: at most `limit` rows, and a note counting the rest (`total` when rows were cut before)."""
    count = len(rows) if total is None else total
    shown = rows if limit is None or len(rows) <= limit else rows[:limit]
    note = None
    if len(shown) < count:
        note = f"... {count - len(shown)} more {what} (--full shows all; -o json gives the document)"
    return Table(columns, shown, title, note)


# --- launches and deployments ---------------------------------------------------------------------------

LAUNCH_COLUMNS = (
    Column("rank", "right"),
    Column("node"),
    Column("devices"),
    Column("phase"),
    Column("elapsed", "right"),
)


def devices_text(devices: Sequence[str], device_ips: Sequence[str] = ()) -> str:
    """Granted device ids; per node (ip:ids) when a rank spans nodes; `-` when Ray grants no ids."""
    if not devices or not any(devices):
        return "-"
    if device_ips and len(set(device_ips)) > 1:
        groups: dict[str, list[str]] = {}
        for ip, dev in zip(device_ips, devices, strict=False):
            groups.setdefault(ip, []).append(dev)
        return " ".join(f"{ip}:{','.join(ids)}" for ip, ids in groups.items())
    return ",".join(devices)


def launch_rows(ranks: Sequence[RankProgress], now: float, started: float) -> list[tuple[str, ...]]:
    """rank, node ip, devices, phase (with progress or error), seconds since the launch started."""
    rows: list[tuple[str, ...]] = []
    for r in ranks:
        phase = r.phase.value
        if r.phase is RankPhase.LOADING and r.progress is not None:
            phase = f"loading {r.progress:4.0%}"
        elif r.phase is RankPhase.FAILED and r.message:
            phase = f"failed: {r.message.splitlines()[0]}"
        elif r.phase is RankPhase.LOADING and r.message:
            phase += f" {r.message[:40]}"
        elapsed = r.ready_in if r.ready_in is not None else now - started
        rows.append((str(r.rank), r.ip, devices_text(r.devices, r.device_ips), phase, f"{elapsed:.1f}s"))
    return rows


STATUS_COLUMNS = (
    Column("rank", "right"),
    Column("local", "right"),
    Column("state"),
    Column("node"),
    Column("ip"),
    Column("devices"),
    Column("since"),
    Column("detail"),
)


def since_text(ts: float, now: float) -> str:
    """How long ago, compactly: 42s, 5m, 3h, 2d."""
    if not ts:
        return "-"
    age = max(now - ts, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= size:
            return f"{age // size:.0f}{unit} ago"
    return f"{age:.0f}s ago"


def status_rows(ranks: Sequence[RankStatus], now: float) -> list[tuple[str, ...]]:
    """One row per rank of a deployment's status."""
    names = short_ids(r.node for r in ranks)
    return [
        (
            str(r.rank),
            str(r.local_rank),
            r.state.value,
            names.get(r.node, r.node),
            r.ip,
            devices_text(r.devices, r.device_ips),
            since_text(r.since, now),
            r.detail,
        )
        for r in ranks
    ]


def status_title(s: DeploymentStatus) -> str:
    """The line above a deployment's ranks: its shape, its state, its ranks' states and its supervisor's.

    Its label rules go on a second line, as in the plan's title; why a supervisor stopped or waits on a line
    of its own: it can be long.
    """
    if s.record is None:
        return f"{s.name}: leftovers without a record (`dpctl down {s.name}` removes them)"
    spec = s.record.spec
    counts: dict[str, int] = {}
    for r in s.ranks:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    shape = f"TP {spec.tp}" + (f" x PP {spec.pp}" if spec.pp > 1 else "")
    busy = f"; `dpctl {s.busy['command']}` in progress" if s.busy else ""
    state = s.record.state.value
    group = ", group-coupled" if s.record.engine.coupling == "group" else ""
    rules = f"\n{labels_line(spec)}" if spec.labels else ""
    watch = why = ""
    if s.supervisor is not None:
        watch = f"; supervisor {s.supervisor.state.value}"
        why = f"\nsupervisor: {s.supervisor.reason}" if s.supervisor.reason else ""
    return (
        f"{s.name}: {plural(spec.dp, 'rank')} of {shape}, pack {spec.pack}, bundles {spec.bundles}{group}, "
        f"{state}: {states}{busy}{watch}{rules}{why}"
    )


def delta_title(delta: ScalePlan, *, restart: bool) -> str:
    """One line saying what a scale does: to the ranks it adds or stops, and to the others."""
    changed = delta.removed or tuple(r.rank for r in delta.added)
    verb = "stop" if delta.removed else "add"
    ranks = f"rank{'s' if len(changed) != 1 else ''} {', '.join(map(str, changed))}"
    others = "restart every running rank (group coupling)" if restart else "the others keep running"
    spares = ""
    if delta.promoted:
        took = ", ".join(f"{r} onto spare {s}" for r, s in delta.promoted)
        spares = f" ({took})"
    return f"{delta.name}: dp {delta.before} -> {delta.after}: {verb} {ranks}{spares}; {others}"


def delta_rows(delta: ScalePlan) -> list[tuple[str, ...]]:
    """rank, local rank, node(s), ip(s), devices, strategy of the ranks a scale adds."""
    plan = delta.plan
    added = {r.rank for r in delta.added}
    return [row for row, rank in zip(rank_rows(plan), plan.ranks, strict=True) if rank.rank in added]
