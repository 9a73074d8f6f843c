"""`dpctl plan` and `dpctl inventory`: the placement, offline or against a live cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dpctl_ray.cli import console, options
from dpctl_ray.cli.explain import SKIP_COLUMNS, infeasible_error, skip_rows
from dpctl_ray.cli.render import RANK_COLUMNS, node_columns, node_rows, plan_title, rank_rows, table
from dpctl_ray.config import Config
from dpctl_ray.errors import BadInput, InfeasibleError
from dpctl_ray.files import dump_yaml, load_document
from dpctl_ray.planner import Infeasible, InfeasibleCode, Node, Plan, PlanRequest, Skip, SkipReason, plan
from dpctl_ray.planner.document import dumps, plan_json, plan_to_document
from dpctl_ray.planner.inventory import nodes_from_document, nodes_to_document
from dpctl_ray.planner.scale import ScalePlan, scale

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


def register(app: typer.Typer) -> None:
    """Add `plan` and `inventory` to the app."""
    app.command("plan")(plan_command)
    app.command("inventory")(inventory_command)


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
    dp: options.Dp = None,
    dp_local: options.DpLocal = None,
    tp: options.Tp = None,
    pp: options.Pp = None,
    pack: options.Pack = None,
    device: options.Device = None,
    master: options.Master = None,
    nodes: options.Nodes = None,
    cpus: options.Cpus = None,
) -> None:
    """Show where every DP rank would go: node and devices per rank. Touches no GPU."""
    console.session.json_errors = output is not options.Output.table
    config = options.resolve_config(
        file,
        name=name,
        address=address,
        dp=dp,
        dp_local=dp_local,
        tp=tp,
        pp=pp,
        pack=pack,
        device=device,
        master=master,
        nodes=nodes,
        cpus=cpus,
    )
    snapshot = load_inventory(inventory) if inventory else live_nodes(config)
    result = make_plan(config, snapshot)
    text = plan_json(result) if (output is options.Output.json or out) else None
    if out and text is not None:
        write_file(out, text)
        console.info(f"wrote {out} (cluster fingerprint {result.fingerprint}); apply it with `dpctl up --plan {out}`")
    if output is options.Output.json and text is not None:
        console.write_stdout(text)
    elif output is options.Output.yaml:
        console.write_stdout(dump_yaml(plan_to_document(result)))
    else:
        show_plan(result, full=full)


def make_plan(config: Config, nodes: tuple[Node, ...]) -> Plan:
    """Plan, printing warnings; an infeasible result becomes InfeasibleError after its causes are shown."""
    result = plan(PlanRequest(name=config.name, spec=config.placement, nodes=nodes))
    if isinstance(result, Infeasible):
        raise _infeasible(result)
    _warn(result.warnings)
    return result


def make_delta(current: Plan, nodes: tuple[Node, ...], dp: int) -> ScalePlan:
    """The scale delta, printing warnings; infeasible becomes InfeasibleError after its causes are shown."""
    result = scale(current, nodes, dp)
    if isinstance(result, Infeasible):
        raise _infeasible(result)
    _warn(result.plan.warnings)
    return result


def _infeasible(result: Infeasible) -> InfeasibleError:
    """Show the nodes passed over (unless the output is a JSON document), and return the error to raise."""
    passed_over = _worth_showing(result.skipped, show_deviceless=result.code is InfeasibleCode.NO_NODES)
    if passed_over and not console.session.json_errors:
        rows = skip_rows(passed_over, result.spec.device)
        console.print_err(table(SKIP_COLUMNS, rows, title="nodes passed over"))
    return infeasible_error(result)


def _warn(warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        console.warn(warning)


def show_plan(result: Plan, *, full: bool) -> None:
    """The rank table and the per-node summary with its device map, on stdout."""
    limit = None if full else TABLE_LIMIT
    console.print_data(table(RANK_COLUMNS, rank_rows(result), title=plan_title(result), limit=limit, what="ranks"))
    console.print_data(
        table(node_columns(result.spec.device), node_rows(result), title="nodes", limit=limit, what="nodes")
    )
    passed_over = _worth_showing(result.skipped, show_deviceless=False)
    if passed_over:
        console.print_data(table(SKIP_COLUMNS, skip_rows(passed_over, result.spec.device), title="nodes passed over"))


def _worth_showing(skipped: tuple[Skip, ...], *, show_deviceless: bool) -> tuple[Skip, ...]:
    # A node without the device (a CPU-only head) is normal, not worth a line; the JSON still lists it.
    return tuple(s for s in skipped if show_deviceless or s.reason is not SkipReason.NO_DEVICE)


def load_inventory(path: str) -> tuple[Node, ...]:
    """Nodes from an inventory file; errors name the file and the key path."""
    doc = load_document(path, what="inventory")
    try:
        return nodes_from_document(doc)
    except BadInput as exc:
        raise type(exc)(f"{path}: {exc.message}", hint=exc.hint) from None


def live_nodes(config: Config) -> tuple[Node, ...]:
    """A snapshot of the live cluster (imports Ray: only when no inventory was given)."""
    from dpctl_ray.launcher.cluster import connect, snapshot  # noqa: PLC0415 - the offline path never imports ray

    with connect(config.cluster, start_local=False):
        return snapshot()


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
