"""`dpctl up` and `down`: launch a deployment (or converge a running one), remove everything it owns."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dpctl_ray.cli import console, options
from dpctl_ray.cli.change_cmd import report_scale, warn_unstreamed
from dpctl_ray.cli.live import LiveView
from dpctl_ray.cli.render import plural
from dpctl_ray.cli.status_cmd import NameArg, print_statuses, show_statuses
from dpctl_ray.errors import BadInput, ClusterUnreachable
from dpctl_ray.files import load_document
from dpctl_ray.launcher import shipping
from dpctl_ray.planner.plan_file import plan_from_document

if TYPE_CHECKING:
    from dpctl_ray.launcher.results import DownResult, UpResult
    from dpctl_ray.launcher.session import Session
    from dpctl_ray.planner.model import Plan


@options.placement_flags
def up_command(
    file: options.ConfigFile = None,
    plan_file: Annotated[
        Optional[str],
        typer.Option(
            "--plan", help="Apply this plan file (from `dpctl plan --out`) instead of planning.", metavar="FILE"
        ),
    ] = None,
    address: options.Address = None,
    name: options.Name = None,
    output: options.OutputOpt = options.Output.table,
    keep_on_failure: Annotated[
        bool, typer.Option("--keep-on-failure", help="Keep what a failed launch created, for debugging.")
    ] = False,
    recreate: Annotated[
        bool, typer.Option("--recreate", help="Replace a running deployment whose spec differs (not just dp).")
    ] = False,
    placement_timeout: Annotated[
        Optional[str],
        typer.Option("--placement-timeout", help="Seconds for placement (timeouts.placement).", metavar="S"),
    ] = None,
    ready_timeout: Annotated[
        Optional[str],
        typer.Option("--ready-timeout", help="Seconds for engines to be ready (timeouts.ready).", metavar="S"),
    ] = None,
    *,
    placement: dict[str, object],
) -> None:
    """Apply the plan: one placement group and engine per rank, readiness streamed live."""
    planned = None
    if plan_file:
        given = options.given_flags(placement)
        if given:
            raise BadInput(f"--plan fixes the placement; drop {', '.join(given)}", hint="or plan again with them")
        planned = load_plan_file(plan_file)
    config = options.resolve_config(file, name=name, address=address, placement=placement)
    config = options.with_timeouts(
        config, placement=("--placement-timeout", placement_timeout), ready=("--ready-timeout", ready_timeout)
    )
    config = options.resolve_engine(config)
    if planned is not None:
        if name is not None:
            planned = dataclasses.replace(planned, name=config.name)
        config = dataclasses.replace(config, name=planned.name)
    ship = shipping.for_launch(config)
    with options.connect(config.cluster, start_local=True, say=console.info, ship=ship) as cluster:
        result = cluster.up(
            config, planned=planned, observer=LiveView(config.name), keep_on_failure=keep_on_failure, recreate=recreate
        )
        _report_up(cluster, result, output)


def load_plan_file(path: str) -> Plan:
    """A plan written by `dpctl plan --out`; anything else is bad input naming the file."""
    try:
        return plan_from_document(load_document(path, what="plan"))
    except BadInput as exc:
        raise type(exc)(f"{path}: {exc.message}", hint=exc.hint) from None


def _report_up(cluster: Session, result: UpResult, output: options.Output) -> None:
    record = result.record
    if result.scaled is not None:
        report_scale(cluster, result.scaled, output)
        return
    warn_unstreamed(result.launch)
    if result.already_running:
        size = plural(record.spec.dp, "rank")
        if result.respared:
            console.info(f"{record.name} runs its {size} as before: only its spares changed")
        else:
            console.info(f"{record.name} already runs with this spec ({size}): nothing to do")
        statuses = cluster.status(record.name)
    elif (launch := result.launch) is not None:
        ips = sorted({r.ip for r in record.ranks})
        dropped = sum(launch.dropped.values())
        note = f"; dropped {dropped} foreign or malformed readiness frames" if dropped else ""
        console.info(
            f"{record.name}: {len(record.ranks)} of {len(record.ranks)} ranks ready in {launch.elapsed:.1f}s "
            f"on {plural(len(ips), 'node')} ({', '.join(ips)}){note}"
        )
        console.info(f"  see `dpctl status {record.name}`; remove with `dpctl down {record.name}`")
        statuses = cluster.status(record.name)  # as `status` shows them, with each rank's detail
    else:
        statuses = cluster.status(record.name)
    if output is options.Output.table:
        show_statuses(statuses)
        return
    if result.launch is None:
        print_statuses(statuses, output)
        return
    launched = {
        "elapsed": round(result.launch.elapsed, 3),
        "dropped_frames": result.launch.dropped,
        "ready_latency_ms": {
            str(r.rank): None if r.latency is None else round(r.latency * 1000, 3) for r in result.launch.ranks.values()
        },
    }
    print_statuses(statuses, output, {"launch": launched})


def down_command(
    name: NameArg = None,
    all_deployments: Annotated[
        bool, typer.Option("--all", help="Remove every dpctl deployment in the cluster.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Remove even while another dpctl command holds the deployment.")
    ] = False,
    file: options.ConfigFile = None,
    address: options.Address = None,
) -> None:
    """Remove everything a deployment owns: engines, workers, placement groups, its record."""
    if name and all_deployments:
        raise BadInput("give a deployment name or --all, not both")
    config = options.resolve_config(file, address=address)
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(options.connect(config.cluster, start_local=False))
        except ClusterUnreachable:
            if config.cluster.address == "auto" and address is None:
                console.info("no Ray cluster running: nothing to remove")
                return
            raise
        if all_deployments:
            targets = cluster.deployments()
            if not targets:
                console.info("no dpctl deployments in this cluster: nothing to remove")
        else:
            targets = [options.target(name, config, cluster)]
        for target in targets:
            _report_down(cluster.down(target, force=force))


def _report_down(result: DownResult) -> None:
    if result.nothing:
        console.info(f"{result.name}: nothing to remove")
        return
    console.info(
        f"{result.name}: removed {plural(result.engines, 'engine')}, "
        f"{plural(len(result.groups), 'placement group')}" + (" and its record" if result.record else "")
    )
    for line in result.killed:
        console.info(f"{result.name}: killed a process it left running: {line}")
