"""`dpctl plan` and `dpctl inventory`: the placement, offline or against a live cluster."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from dpctl_ray.cli import console, options
from dpctl_ray.cli.explain import SKIP_COLUMNS, skip_rows, worth_showing
from dpctl_ray.cli.render import (
    RANK_COLUMNS,
    Column,
    node_columns,
    node_rows,
    nodes_title,
    plan_title,
    rank_rows,
    short_ids,
    shown_labels,
    summarised_nodes,
    table,
)
from dpctl_ray.config import Config
from dpctl_ray.engines.processes import Command, Granted, commands, master_port
from dpctl_ray.engines.spec import CommandSpec, EngineSpec
from dpctl_ray.errors import BadInput
from dpctl_ray.files import dump_yaml, load_document
from dpctl_ray.planner import Node, Plan, PlanRequest, feasible, plan
from dpctl_ray.planner.inventory import nodes_from_document, nodes_to_document
from dpctl_ray.planner.plan_text import dumps, plan_json, plan_yaml

TABLE_LIMIT = 32

Inventory = Annotated[
    Optional[str],
    typer.Option(
        "--inventory",
        "-i",
        help="Plan against this inventory file (YAML or JSON) instead of a live cluster.",
        metavar="FILE",
    ),
]


@options.placement_flags
def plan_command(
    file: options.ConfigFile = None,
    inventory: Inventory = None,
    address: options.Address = None,
    name: options.Name = None,
    output: options.OutputOpt = options.Output.table,
    out: Annotated[
        Optional[str],
        typer.Option("--out", help="Also write the plan document here, for `dpctl up --plan`.", metavar="FILE"),
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Show every rank and node, however many.")] = False,
    command_lines: Annotated[
        bool, typer.Option("--commands", help="Show each process's whole command line and environment.")
    ] = False,
    *,
    placement: dict[str, object],
) -> None:
    """Show where every DP rank would go: node and devices per rank, and what runs where. Touches no GPU."""
    config = options.resolve_config(file, name=name, address=address, placement=placement)
    config = options.resolve_engine(config)
    snapshot = load_inventory(inventory) if inventory is not None else live_nodes(config)
    result = feasible(plan(PlanRequest(config.name, config.placement, snapshot, config.spelled)))
    for warning in result.warnings:
        console.warn(warning)
    procs = dry_run(result, config.engine)
    extra = {"processes": [process_document(result, c) for c in procs]} if procs else None
    text = plan_json(result, extra) if (output is options.Output.json or out) else None
    if out and text is not None:
        write_file(out, text)
        console.info(f"wrote {out} (cluster fingerprint {result.fingerprint}); apply it with `dpctl up --plan {out}`")
    if output is options.Output.json and text is not None:
        console.write_stdout(text)
    elif output is options.Output.yaml:
        console.write_stdout(plan_yaml(result, extra))
    else:
        show_plan(result, full=full)
        if procs:
            show_processes(result, procs, full=full, whole=command_lines)


def dry_run(result: Plan, engine: EngineSpec) -> list[Command]:
    """A command engine's processes as they would start: launch-only values (device ids, free ports) as <...>."""
    if not isinstance(engine, CommandSpec):
        return []
    return commands(result, engine, Granted({}, {}), master_port(result.name, engine.master_port))


def process_document(result: Plan, command: Command) -> dict[str, object]:
    """One process as the plan and status documents list it."""
    ips = {n.id: n.ip for n in result.nodes}
    slot = command.slot
    return {
        "node": slot.node,
        "ip": ips.get(slot.node, ""),
        "ranks": list(slot.ranks),
        "api": slot.api,
        "argv": list(command.argv),
        "env": dict(command.env),
    }


def show_processes(result: Plan, procs: list[Command], *, full: bool, whole: bool) -> None:
    """The processes, compactly (node, ranks, role, the start of the command line), or each in full."""
    ips = {n.id: n.ip for n in result.nodes}
    names = short_ids(n.id for n in result.nodes)
    if whole:
        for c in procs:
            role = "serves" if c.slot.api else "headless"
            console.print_data(
                f"# {names[c.slot.node]} ({ips.get(c.slot.node, '')}), ranks {_ranks(c.slot.ranks)}, {role}"
            )
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in c.env)
            console.print_data((f"{env} " if env else "") + shlex.join(c.argv))
        return
    # The arguments every process shares say little: show the program, then what sets each process apart.
    argvs = [c.argv for c in procs]
    distinct = _distinct(argvs) if len(procs) > 1 else [list(c.argv[3:]) for c in procs]
    placed = {(r.rank, n): count for r in result.ranks for n, count in zip(r.nodes, r.devices, strict=True)}
    device = result.spec.device
    rows = [
        (
            names[c.slot.node],
            ips.get(c.slot.node, ""),
            _ranks(c.slot.ranks),
            f"{sum(placed[(r, c.slot.node)] for r in c.slot.ranks)} {device}",
            "serves" if c.slot.api else "headless",
            shlex.join(c.argv[:3]) + (" … " + shlex.join(rest) if rest else ""),
        )
        for c, rest in list(zip(procs, distinct, strict=True))[: None if full else TABLE_LIMIT]
    ]
    title = f"processes ({len(procs)}; --commands shows each command line and environment in full)"
    console.print_data(table(PROCESS_COLUMNS, rows, title=title, total=len(procs), what="processes"))


def _ranks(ranks: tuple[int, ...]) -> str:
    return ",".join(map(str, ranks))


def _distinct(argvs: list[tuple[str, ...]]) -> list[list[str]]:
    """Per argv, the arguments where the argvs differ, each value with its flag, in order."""
    width = max(len(a) for a in argvs)
    differ = [i for i in range(width) if len({a[i] if i < len(a) else None for a in argvs}) > 1]
    out = []
    for argv in argvs:
        keep = set()
        for i in differ:
            if i < len(argv):
                keep.add(i)
                if i > 0 and argv[i - 1].startswith("-") and not argv[i].startswith("-"):
                    keep.add(i - 1)
        out.append([argv[i] for i in sorted(keep)])
    return out


PROCESS_COLUMNS = (
    Column("node"),
    Column("ip"),
    Column("ranks"),
    Column("devices"),
    Column("role"),
    Column("command"),
)


def show_plan(result: Plan, *, full: bool) -> None:
    """The rank table and the per-node summary with its device map, on stdout; rows beyond the limit are counted."""
    limit = None if full else TABLE_LIMIT
    ranks = table(
        RANK_COLUMNS,
        rank_rows(result, limit, spares=True),
        title=plan_title(result),
        total=len(result.ranks) + len(result.spares),
        what="ranks",
    )
    console.print_data(ranks)
    usage = result.usage()
    listed = len(summarised_nodes(result, usage))
    rows = node_rows(result, usage, limit)
    labels = shown_labels(result.spec)
    columns = node_columns(result.spec.device, labels)
    nodes = table(columns, rows, title=nodes_title(labels), total=listed, what="nodes")
    console.print_data(nodes)
    passed_over = worth_showing(result.skipped, show_deviceless=False)
    if passed_over:
        console.print_data(table(SKIP_COLUMNS, skip_rows(passed_over, result.spec.device), title="nodes passed over"))


def load_inventory(path: str) -> tuple[Node, ...]:
    """Nodes from an inventory file; errors name the file and the key path."""
    doc = load_document(path, what="inventory")
    try:
        return nodes_from_document(doc)
    except BadInput as exc:
        raise type(exc)(f"{path}: {exc.message}", hint=exc.hint) from None


def live_nodes(config: Config) -> tuple[Node, ...]:
    """A snapshot of the live cluster (imports Ray: only when no inventory was given)."""
    with options.connect(config.cluster, start_local=False) as cluster:
        return cluster.snapshot()


def write_file(path: str, text: str) -> None:
    """Write an output file, turning OS errors into bad-input errors."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None


def inventory_command(
    out: Annotated[
        Optional[str],
        typer.Option(
            "-o",
            "--out",
            help="Write here (.json for JSON, else YAML) instead of stdout; `-o json` or `-o yaml` prints that format.",
            metavar="FILE",
        ),
    ] = None,
    file: options.ConfigFile = None,
    address: options.Address = None,
    fmt: Annotated[
        Optional[options.Output],
        typer.Option("--format", help="yaml or json (default: by the file suffix, else yaml)."),
    ] = None,
) -> None:
    """Capture the live cluster's nodes (id, ip, head, totals, free, labels) as an inventory file."""
    if out in ("json", "yaml") and fmt is None:  # every other command's `-o` is the format: never a file named json
        fmt, out = options.Output(out), None
    config = options.resolve_config(file, address=address)
    nodes = live_nodes(config)
    doc = nodes_to_document(nodes)
    as_json = fmt is options.Output.json or (fmt is None and out is not None and out.endswith(".json"))
    text = dumps(doc) if as_json else dump_yaml(doc)
    if out:
        write_file(out, text)
        console.info(f"wrote {len(nodes)} nodes to {out}")
    else:
        console.write_stdout(text)
