"""`dpctl up`, `scale` and `down`: launch a deployment, change its size, remove everything it owns."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dpctl_ray.cli import console, options
from dpctl_ray.cli.live import LiveView
from dpctl_ray.cli.render import RANK_COLUMNS, Column, delta_rows, delta_title, plural, table
from dpctl_ray.cli.status_cmd import NameArg, print_document, print_statuses, show_statuses
from dpctl_ray.config import Config
from dpctl_ray.errors import BadInput, ClusterUnreachable
from dpctl_ray.files import load_document
from dpctl_ray.launcher import shipping
from dpctl_ray.planner.document import plan_from_document, plan_to_document
from dpctl_ray.planner.repair import Move
from dpctl_ray.values import seconds

if TYPE_CHECKING:
    from dpctl_ray.launcher.progress import LaunchResult
    from dpctl_ray.launcher.results import DownResult, RepairResult, ScaleResult, UpResult
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
    config = _with_timeouts(
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


def _with_timeouts(config: Config, **flags: tuple[str, str | None]) -> Config:
    """The config's timeouts with the flags given (by field: (flag as typed, value)) laid over them."""
    given = {field: seconds(value, flag) for field, (flag, value) in flags.items() if value is not None}
    return dataclasses.replace(config, timeouts=dataclasses.replace(config.timeouts, **given))


def load_plan_file(path: str) -> Plan:
    """A plan written by `dpctl plan --out`; anything else is bad input naming the file."""
    try:
        return plan_from_document(load_document(path, what="plan"))
    except BadInput as exc:
        raise type(exc)(f"{path}: {exc.message}", hint=exc.hint) from None


def _warn_unstreamed(launch: LaunchResult | None) -> None:
    if launch is not None and launch.unstreamed:
        console.warn(
            f"no pyzmq on {', '.join(launch.unstreamed)}: readiness came through Ray, without live progress "
            "(pip install pyzmq on the nodes; vLLM brings it)"
        )


def _report_up(cluster: Session, result: UpResult, output: options.Output) -> None:
    record = result.record
    if result.scaled is not None:
        _report_scale(cluster, result.scaled, output)
        return
    _warn_unstreamed(result.launch)
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


def scale_command(
    name: NameArg = None,
    dp: Annotated[Optional[str], typer.Option("--dp", help="The new number of ranks.", metavar="N")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the ranks to add or stop; change nothing.")] = False,
    timeout: Annotated[
        Optional[str],
        typer.Option("--timeout", help="Seconds for new ranks to be ready (timeouts.ready).", metavar="S"),
    ] = None,
    file: options.ConfigFile = None,
    address: options.Address = None,
    output: options.OutputOpt = options.Output.table,
) -> None:
    """Grow or shrink a running deployment to --dp ranks: independent ranks keep running untouched, a group restarts."""
    if dp is None:
        raise BadInput("--dp: the new number of ranks is required", hint="e.g. dpctl scale demo --dp 4")
    config = options.resolve_config(file, address=address, placement={"dp": dp})
    config = _with_timeouts(config, ready=("--timeout", timeout))
    with options.connect(config.cluster, start_local=False, ship=shipping.code_only()) as cluster:
        target = options.target(name, config, cluster)
        result = cluster.scale(target, config.placement.dp, config.timeouts, dry_run=dry_run, observer=LiveView(target))
        _report_scale(cluster, result, output)


def _report_scale(cluster: Session, result: ScaleResult, output: options.Output) -> None:
    record, delta = result.record, result.delta
    _warn_unstreamed(result.launch)
    if delta is None and result.restarted:
        took = f" in {result.launch.elapsed:.1f}s" if result.launch else ""
        console.info(f"{record.name}: restarted the group at {plural(len(record.ranks), 'rank')}{took}")
    elif delta is None:
        console.info(f"{record.name} already has {plural(len(record.ranks), 'rank')}: nothing to do")
    elif result.dry_run:
        if output is not options.Output.table:
            doc = plan_to_document(delta.plan)
            added = {r.rank for r in delta.added}
            print_document(
                {
                    "name": delta.name,
                    "from": delta.before,
                    "to": delta.after,
                    "added": [r for r in doc["ranks"] if r["rank"] in added],
                    "removed": list(delta.removed),
                    "restart": result.restarted,
                },
                output,
            )
            return
        console.info("dry run: nothing changed; this is what the scale would do")
        if delta.added:
            console.print_data(
                table(RANK_COLUMNS, delta_rows(delta), title=delta_title(delta, restart=result.restarted))
            )
        else:
            console.print_data(delta_title(delta, restart=result.restarted))
        if result.restarted:
            console.info(
                f"the ranks are group-coupled: every running rank's process restarts with dp {delta.after} "
                "(their placement groups and devices are kept)"
            )
        return
    else:
        verb = (
            f"added {plural(len(delta.added), 'rank')}"
            if delta.added
            else f"stopped {plural(len(delta.removed), 'rank')}"
        )
        took = f" in {result.launch.elapsed:.1f}s" if result.launch else ""
        if result.restarted:
            console.info(f"{record.name}: {verb} and restarted the group at {plural(delta.after, 'rank')}{took}")
        else:
            console.info(f"{record.name}: {verb}{took}; now {plural(delta.after, 'rank')}, the others kept running")
        if result.untold:
            console.warn(f"ranks {', '.join(map(str, result.untold))} did not confirm the new dp size in time")
    statuses = cluster.status(record.name)
    if output is options.Output.table:
        show_statuses(statuses)
    else:
        print_statuses(statuses, output)


def repair_command(
    name: NameArg = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show which ranks move where; change nothing.")] = False,
    timeout: Annotated[
        Optional[str],
        typer.Option("--timeout", help="Seconds for repaired ranks to be ready (timeouts.ready).", metavar="S"),
    ] = None,
    file: options.ConfigFile = None,
    address: options.Address = None,
    output: options.OutputOpt = options.Output.table,
) -> None:
    """Place lost ranks again (node gone, engine dead, process exited, failed): the healthy ones are not touched."""
    config = options.resolve_config(file, address=address)
    config = _with_timeouts(config, ready=("--timeout", timeout))
    with options.connect(config.cluster, start_local=False, ship=shipping.code_only()) as cluster:
        target = options.target(name, config, cluster)
        result = cluster.repair(target, config.timeouts, dry_run=dry_run, observer=LiveView(target))
        _report_repair(cluster, result, output)


def _report_repair(cluster: Session, result: RepairResult, output: options.Output) -> None:
    record, fix = result.record, result.repair
    if fix is None:
        console.info(f"{record.name}: every rank is healthy: nothing to repair")
    else:
        ips = {n.id: n.ip for n in fix.plan.nodes}
        rows = [
            (
                str(m.rank),
                m.cause,
                _where(m.before.nodes, ips),
                _where(m.after.nodes, ips),
                _move(m),
            )
            for m in fix.moves
        ]
        if result.dry_run:
            if output is not options.Output.table:
                print_document(
                    {
                        "name": record.name,
                        "restart": result.restarted,
                        "moves": [
                            {
                                "rank": m.rank,
                                "cause": m.cause,
                                "from": list(m.before.nodes),
                                "to": list(m.after.nodes),
                                "local_rank": m.after.local_rank,
                                "in_place": m.in_place,
                                "spare": m.spare,
                            }
                            for m in fix.moves
                        ],
                        "spares_dropped": list(fix.dropped),
                    },
                    output,
                )
                return
            console.info("dry run: nothing changed; this is what the repair would do")
            console.print_data(table(REPAIR_COLUMNS, rows, title=f"{record.name}: repair {plural(len(rows), 'rank')}"))
            if result.restarted:
                console.info("the ranks are group-coupled: every rank's process restarts with the repaired ones")
            return
        _warn_unstreamed(result.launch)
        them = "it" if len(rows) == 1 else "them"
        took = f" in {result.seconds:.2f}s from finding {them} lost" if result.seconds else ""
        moved = ", ".join(
            f"{m.rank} -> {_where(m.after.nodes, ips)}{f' (spare {m.spare})' if m.spare is not None else ''}"
            for m in fix.moves
        )
        group = "; the group restarted" if result.restarted else "; the other ranks kept running"
        console.info(f"{record.name}: repaired {plural(len(rows), 'rank')}{took} ({moved}){group}")
    statuses = cluster.status(record.name)
    if output is options.Output.table:
        show_statuses(statuses)
    else:
        print_statuses(statuses, output)


REPAIR_COLUMNS = (Column("rank", "right"), Column("cause"), Column("from"), Column("to"), Column("move"))


def _move(move: Move) -> str:
    if move.spare is not None:
        return f"onto spare {move.spare}"
    return "same node" if move.in_place else "moved"


def _where(node_ids: tuple[str, ...], ips: dict[str, str]) -> str:
    return "+".join(ips.get(n, f"{n[:8]} (gone)") for n in node_ids)


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
