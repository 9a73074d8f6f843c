"""Plans as rows (pure functions) and rows as Rich tables (one helper)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dpctl_ray.launcher.progress import RankPhase, RankProgress
from dpctl_ray.launcher.status import DeploymentStatus, RankStatus
from dpctl_ray.planner.inventory import number
from dpctl_ray.planner.model import NodeUse, Plan
from dpctl_ray.planner.scale import ScalePlan

if TYPE_CHECKING:
    from rich.console import RenderableType

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
    """One line saying what the plan is."""
    s = plan.spec
    master = next(u.node for u in plan.nodes if u.node.id == s.master)
    short = short_ids([master.id])[master.id]
    shape = f"TP {s.tp}" + (f" x PP {s.pp}" if s.pp > 1 else "")
    nodes_used = sum(1 for u in plan.nodes if u.device_ranks)
    return (
        f"{plan.name}: {s.dp} rank{'s' if s.dp != 1 else ''} of {shape} "
        f"({s.dp * s.world_size} {s.device} on {nodes_used} node{'s' if nodes_used != 1 else ''}), "
        f"pack {s.pack}, dp_local {s.dp_local}, master {short} ({master.ip})"
    )


def rank_rows(plan: Plan) -> list[tuple[str, ...]]:
    """rank, local rank, node(s), ip(s), devices, strategy."""
    ips = {u.node.id: u.node.ip for u in plan.nodes}
    names = short_ids(u.node.id for u in plan.nodes)
    device = plan.spec.device
    rows: list[tuple[str, ...]] = []
    for r in plan.ranks:
        devices = "+".join(map(str, r.devices)) + f" {device}"
        rows.append(
            (
                str(r.rank),
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


def device_map(use: NodeUse, device: str) -> str:
    """One cell per device: the rank that holds it, `x` in use by others, `·` free."""
    total = max(use.node.total_devices(device), use.node.free_devices(device), len(use.device_ranks))
    busy = total - use.node.free_devices(device)
    cells = [BUSY] * busy + [str(r) for r in use.device_ranks]
    cells += [FREE] * (total - len(cells))
    width = max((len(c) for c in cells), default=1)
    return " ".join(c.rjust(width) for c in cells)


def node_rows(plan: Plan) -> list[tuple[str, ...]]:
    """node, ip, role, devices planned/free, CPUs planned/free, device map; nodes without the device left out."""
    device = plan.spec.device
    names = short_ids(u.node.id for u in plan.nodes)
    rows: list[tuple[str, ...]] = []
    for use in plan.nodes:
        node = use.node
        if node.total_devices(device) == 0 and not use.device_ranks:
            continue
        role = ", ".join(role for role, on in (("master", node.id == plan.spec.master), ("head", node.head)) if on)
        rows.append(
            (
                names[node.id],
                node.ip,
                role,
                f"{len(use.device_ranks)}/{node.free_devices(device)}",
                f"{number(use.planned_cpus)}/{number(node.available.get('CPU', 0.0))}",
                device_map(use, device),
            )
        )
    return rows


def node_columns(device: str) -> tuple[Column, ...]:
    """Columns of the per-node summary."""
    return (
        Column("node"),
        Column("ip"),
        Column("role"),
        Column(f"{device} plan/free", "right"),
        Column("CPU plan/free", "right"),
        Column("devices (rank; x busy, · free)", no_wrap=True),
    )


def table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    limit: int | None = None,
    what: str = "rows",
) -> RenderableType:
    """The one Rich table helper: plain cells (never markup), a title line, at most `limit` rows."""
    from rich import box  # noqa: PLC0415 - JSON output never imports Rich
    from rich.console import Group  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for c in columns:
        t.add_column(c.header, justify=c.justify, no_wrap=c.no_wrap)  # type: ignore[arg-type]
    shown = rows if limit is None or len(rows) <= limit else rows[:limit]
    for row in shown:
        t.add_row(*(Text(cell) for cell in row))
    if len(shown) < len(rows):
        t.caption = f"... {len(rows) - len(shown)} more {what} (--full shows all; -o json gives the document)"
        t.caption_justify = "left"
    if title is None:
        return t
    return Group(Text(title, style="bold"), t)


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
    """The line above a deployment's ranks: its shape, its state, and how many ranks are in each state."""
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
    return f"{s.name}: {plural(spec.dp, 'rank')} of {shape}, pack {spec.pack}, {state}: {states}{busy}"


def delta_title(delta: ScalePlan) -> str:
    """One line saying what a scale does."""
    changed = delta.removed or tuple(r.rank for r in delta.added)
    verb = "stop" if delta.removed else "add"
    ranks = f"rank{'s' if len(changed) != 1 else ''} {', '.join(map(str, changed))}"
    return f"{delta.name}: dp {delta.before} -> {delta.after}: {verb} {ranks}; the others keep running"


def delta_rows(delta: ScalePlan) -> list[tuple[str, ...]]:
    """rank, local rank, node(s), ip(s), devices, strategy of the ranks a scale adds."""
    plan = delta.plan
    added = {r.rank for r in delta.added}
    return [row for row, rank in zip(rank_rows(plan), plan.ranks, strict=True) if rank.rank in added]
