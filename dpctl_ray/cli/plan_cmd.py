"""`dpctl plan` and `dpctl inventory`: the placement, offline or against a live cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dpctl_ray.cli import console, options
from dpctl_ray.cli.explain import SKIP_COLUMNS, skip_rows, worth_showing
from dpctl_ray.cli.render import (
    RANK_COLUMNS,
    node_columns,
    node_rows,
    plan_title,
    rank_rows,
    summarised_nodes,
    table,
)
from dpctl_ray.config import Config
from dpctl_ray.errors import BadInput
from dpctl_ray.files import dump_yaml, load_document
from dpctl_ray.planner import Node, Plan, PlanRequest, feasible, plan
from dpctl_ray.planner.document import dumps, plan_json, plan_yaml
from dpctl_ray.planner.inventory import nodes_from_document, nodes_to_document

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
    *,
    placement: dict[str, object],
) -> None:
    """Show where every DP rank would go: node and devices per rank. Touches no GPU."""
    config = options.resolve_config(file, name=name, address=address, placement=placement)
    snapshot = load_inventory(inventory) if inventory is not None else live_nodes(config)
    result = feasible(plan(PlanRequest(config.name, config.placement, snapshot, config.spelled)))
    for warning in result.warnings:
        console.warn(warning)
    text = plan_json(result) if (output is options.Output.json or out) else None
    if out and text is not None:
        write_file(out, text)
        console.info(f"wrote {out} (cluster fingerprint {result.fingerprint}); apply it with `dpctl up --plan {out}`")
    if output is options.Output.json and text is not None:
        console.write_stdout(text)
    elif output is options.Output.yaml:
        console.write_stdout(plan_yaml(result))
    else:
        show_plan(result, full=full)


def show_plan(result: Plan, *, full: bool) -> None:
    """The rank table and the per-node summary with its device map, on stdout; rows beyond the limit are counted."""
    limit = None if full else TABLE_LIMIT
    ranks = table(
        RANK_COLUMNS, rank_rows(result, limit), title=plan_title(result), total=len(result.ranks), what="ranks"
    )
    console.print_data(ranks)
    usage = result.usage()
    listed = len(summarised_nodes(result, usage))
    rows = node_rows(result, usage, limit)
    nodes = table(node_columns(result.spec.device), rows, title="nodes", total=listed, what="nodes")
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
    from dpctl_ray.launcher.cluster import connect  # noqa: PLC0415 - offline plans never load the launcher

    with connect(config.cluster, start_local=False) as cluster:
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
        typer.Option("-o", "--out", help="Write here (.json for JSON, else YAML) instead of stdout.", metavar="FILE"),
    ] = None,
    file: options.ConfigFile = None,
    address: options.Address = None,
    fmt: Annotated[
        Optional[options.Output],
        typer.Option("--format", help="yaml or json (default: by the file suffix, else yaml)."),
    ] = None,
) -> None:
    """Capture the live cluster's nodes (id, ip, head, totals, free, labels) as an inventory file."""
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
