"""`dpctl up`, `status` and `down`: launch a deployment, watch its ranks, remove everything it owns."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dpctl_ray.cli import console, options
from dpctl_ray.cli.plan_cmd import make_delta, make_plan
from dpctl_ray.cli.render import (
    RANK_COLUMNS,
    STATUS_COLUMNS,
    delta_rows,
    delta_title,
    plan_title,
    plural,
    status_rows,
    table,
)
from dpctl_ray.config import Config, Timeouts
from dpctl_ray.errors import BadInput, ClusterUnreachable
from dpctl_ray.files import dump_yaml, load_document

if TYPE_CHECKING:
    from dpctl_ray.launcher.deploy import DeploymentStatus, DownResult, ScaleResult, UpResult
    from dpctl_ray.planner.model import Plan

NameArg = Annotated[
    Optional[str], typer.Argument(help="Deployment name (default: from the config, else demo).", metavar="NAME")
]


def register(app: typer.Typer) -> None:
    """Add `up`, `status` and `down` to the app."""
    app.command("up")(up_command)
    app.command("status")(status_command)
    app.command("scale")(scale_command)
    app.command("logs")(logs_command)
    app.command("down")(down_command)


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
        Optional[float],
        typer.Option("--placement-timeout", help="Seconds for placement (timeouts.placement).", metavar="S"),
    ] = None,
    ready_timeout: Annotated[
        Optional[float],
        typer.Option("--ready-timeout", help="Seconds for engines to be ready (timeouts.ready).", metavar="S"),
    ] = None,
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
    """Apply the plan: one placement group and engine per rank, readiness streamed live."""
    console.session.json_errors = output is not options.Output.table
    flags = {
        "--dp": dp,
        "--dp-local": dp_local,
        "--tp": tp,
        "--pp": pp,
        "--pack": pack,
        "--device": device,
        "--master": master,
        "--nodes": nodes,
        "--cpus": cpus,
    }
    planned = None
    if plan_file:
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise BadInput(f"--plan fixes the placement; drop {', '.join(given)}", hint="or plan again with them")
        planned = load_plan_file(plan_file)
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
    config = _with_timeouts(config, placement_timeout, ready_timeout)
    check_engine(config)
    if planned is not None:
        if name is not None:
            planned = dataclasses.replace(planned, name=config.name)
        config = dataclasses.replace(config, name=planned.name)

    from dpctl_ray.cli.live import LiveView  # noqa: PLC0415
    from dpctl_ray.launcher.cluster import connect  # noqa: PLC0415

    view = LiveView(config.name)
    with connect(config.cluster, start_local=True, say=console.info):
        from dpctl_ray.launcher import deploy  # noqa: PLC0415 - imports Ray: only once connect() set its environment

        result = deploy.up(
            config,
            make_plan=lambda snapshot: make_plan(config, snapshot),
            make_delta=make_delta,
            planned=planned,
            observer=view,
            keep_on_failure=keep_on_failure,
            recreate=recreate,
            say=console.info,
            show_plan=lambda plan: console.info(plan_title(plan)),
            show_delta=lambda delta: console.info(delta_title(delta)),
        )
        _report_up(result, output)


def check_engine(config: Config) -> None:
    """A python engine's class must load here and keep the contract: a config error now, not a crash on a node."""
    if config.engine.kind != "python":
        return
    from dpctl_ray.engines.base import EngineError  # noqa: PLC0415
    from dpctl_ray.engines.loader import load_engine_class  # noqa: PLC0415

    try:
        load_engine_class(config.engine.cls)
    except EngineError as exc:
        raise BadInput(
            str(exc),
            hint="dpctl checks the class where you run it; it must also be importable on every node",
            code="bad_engine",
        ) from None


def logs_command(
    name: NameArg = None,
    rank: Annotated[
        Optional[list[int]], typer.Option("--rank", "-r", help="Only this rank (repeatable).", metavar="R")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    tail: Annotated[
        int, typer.Option("--tail", "-n", help="Lines to show from the end of each log.", metavar="N")
    ] = 50,
    file: options.ConfigFileLongOnly = None,
    address: options.Address = None,
) -> None:
    """Each rank's log, read on its node; prefixed by rank when several are shown."""
    if tail < 0:
        raise BadInput(f"--tail: must be a number of lines >= 0, got {tail}")
    config = options.resolve_config(file, address=address)
    target = name or config.name
    from dpctl_ray.launcher.cluster import connect  # noqa: PLC0415

    with connect(config.cluster, start_local=False):
        from dpctl_ray.launcher.deploy import log_sources, read_logs  # noqa: PLC0415 - after connect: imports Ray

        sources = log_sources(target, rank)
        for source in sources:
            if not source.alive:
                console.warn(f"rank {source.rank}: its node is gone, so is its log ({source.path})")
        prefix = len(sources) > 1

        def show(texts: dict[int, str]) -> None:
            for r in sorted(texts):
                for line in texts[r].splitlines():
                    console.write_stdout(f"[rank {r}] {line}\n" if prefix else f"{line}\n")

        show(read_logs(sources, tail=tail))
        if not follow:
            return
        try:
            while True:
                time.sleep(0.5)
                show(read_logs(sources, tail=None))
        except KeyboardInterrupt:
            return  # Ctrl-C is how following ends


def _with_timeouts(config: Config, placement: float | None, ready: float | None) -> Config:
    for flag, value in (("--placement-timeout", placement), ("--ready-timeout", ready)):
        if value is not None and not value > 0:
            raise BadInput(f"{flag}: must be a number of seconds above 0, got {value:g}")
    timeouts = Timeouts(
        placement=placement if placement is not None else config.timeouts.placement,
        ready=ready if ready is not None else config.timeouts.ready,
    )
    return dataclasses.replace(config, timeouts=timeouts)


def load_plan_file(path: str) -> Plan:
    """A plan written by `dpctl plan --out`; anything else is bad input naming the file."""
    from dpctl_ray.planner.document import plan_from_document  # noqa: PLC0415

    try:
        return plan_from_document(load_document(path, what="plan"))
    except BadInput as exc:
        raise type(exc)(f"{path}: {exc.message}", hint=exc.hint) from None


def _report_up(result: UpResult, output: options.Output) -> None:
    from dpctl_ray.launcher.deploy import DeploymentStatus, RankStatus, gather, status_document  # noqa: PLC0415

    record = result.record
    if result.already_running:
        console.info(f"{record.name} already runs with this spec ({plural(record.spec['dp'], 'rank')}): nothing to do")
        statuses = gather(record.name)
    elif result.scaled is not None:
        _report_scale(result.scaled, output)
        return
    elif (launch := result.launch) is not None:
        ips = sorted({r.ip for r in record.ranks})
        dropped = sum(launch.dropped.values())
        note = f"; dropped {dropped} foreign or malformed readiness frames" if dropped else ""
        console.info(
            f"{record.name}: {len(record.ranks)} of {len(record.ranks)} ranks ready in {launch.elapsed:.1f}s "
            f"on {len(ips)} node{'s' if len(ips) != 1 else ''} ({', '.join(ips)}){note}"
        )
        console.info(f"  see `dpctl status {record.name}`; remove with `dpctl down {record.name}`")
        statuses = [
            DeploymentStatus(
                record.name,
                record,
                [
                    RankStatus(
                        r.rank,
                        r.local_rank,
                        "READY",
                        r.control,
                        r.ip,
                        r.granted,
                        r.since,
                        device_ips=r.device_ips,
                        dp=record.spec["dp"],
                    )
                    for r in record.ranks
                ],
            )
        ]
    else:
        statuses = gather(record.name)
    if output is options.Output.table:
        show_statuses(statuses)
        return
    doc = status_document(statuses)
    if result.launch is not None:
        doc["launch"] = {
            "elapsed": round(result.launch.elapsed, 3),
            "dropped_frames": result.launch.dropped,
            "ready_latency_ms": {
                str(r.rank): None if r.latency is None else round(r.latency * 1000, 3)
                for r in result.launch.ranks.values()
            },
        }
    _print_doc(doc, output)


def scale_command(
    name: NameArg = None,
    dp: Annotated[Optional[str], typer.Option("--dp", help="The new number of ranks.", metavar="N")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the ranks to add or stop; change nothing.")] = False,
    timeout: Annotated[
        Optional[float],
        typer.Option("--timeout", help="Seconds for new ranks to be ready (timeouts.ready).", metavar="S"),
    ] = None,
    file: options.ConfigFile = None,
    address: options.Address = None,
    output: options.OutputOpt = options.Output.table,
) -> None:
    """Grow or shrink a running deployment to --dp ranks; the other ranks keep running, untouched."""
    console.session.json_errors = output is not options.Output.table
    if dp is None:
        raise BadInput("--dp: the new number of ranks is required", hint="e.g. dpctl scale demo --dp 4")
    config = options.resolve_config(file, address=address, dp=dp)
    config = _with_timeouts(config, None, timeout)
    target = name or config.name
    from dpctl_ray.cli.live import LiveView  # noqa: PLC0415
    from dpctl_ray.launcher.cluster import connect  # noqa: PLC0415

    with connect(config.cluster, start_local=False):
        from dpctl_ray.launcher import deploy  # noqa: PLC0415 - after connect: imports Ray

        result = deploy.scale(
            target,
            config.placement.dp,
            config,
            make_delta=make_delta,
            dry_run=dry_run,
            observer=LiveView(target),
            say=console.info,
            show_delta=lambda delta: console.info(delta_title(delta)),
        )
        _report_scale(result, output)


def _report_scale(result: ScaleResult, output: options.Output) -> None:
    from dpctl_ray.launcher.deploy import gather, status_document  # noqa: PLC0415

    record, delta = result.record, result.delta
    if delta is None:
        console.info(f"{record.name} already has {plural(len(record.ranks), 'rank')}: nothing to do")
    elif result.dry_run:
        if output is not options.Output.table:
            from dpctl_ray.planner.document import plan_to_document  # noqa: PLC0415

            doc = plan_to_document(delta.plan)
            added = {r.rank for r in delta.added}
            _print_doc(
                {
                    "name": delta.name,
                    "from": delta.before,
                    "to": delta.after,
                    "added": [r for r in doc["ranks"] if r["rank"] in added],
                    "removed": list(delta.removed),
                },
                output,
            )
            return
        if delta.added:
            console.print_data(table(RANK_COLUMNS, delta_rows(delta), title=delta_title(delta)))
        else:
            console.print_data(delta_title(delta))
        console.info("dry run: nothing changed")
        return
    else:
        verb = (
            f"added {plural(len(delta.added), 'rank')}"
            if delta.added
            else (f"stopped {plural(len(delta.removed), 'rank')}")
        )
        took = f" in {result.launch.elapsed:.1f}s" if result.launch else ""
        console.info(f"{record.name}: {verb}{took}; now {plural(delta.after, 'rank')}, the others kept running")
        if result.untold:
            console.warn(f"ranks {', '.join(map(str, result.untold))} did not confirm the new dp size in time")
    statuses = gather(record.name)
    if output is options.Output.table:
        show_statuses(statuses)
    else:
        _print_doc(status_document(statuses), output)


def _print_doc(doc: dict[str, object], output: options.Output) -> None:
    if output is options.Output.yaml:
        console.write_stdout(dump_yaml(doc))
    else:
        console.print_json(doc)


def show_statuses(statuses: list[DeploymentStatus]) -> None:
    """One block per deployment: a header line and its ranks."""
    now = time.time()
    for s in statuses:
        console.print_data(table(STATUS_COLUMNS, status_rows(s.ranks, now), title=_status_title(s)))


def _status_title(s: DeploymentStatus) -> str:
    if s.record is None:
        return f"{s.name}: leftovers without a record (`dpctl down {s.name}` removes them)"
    spec = s.record.spec
    counts: dict[str, int] = {}
    for r in s.ranks:
        counts[r.state] = counts.get(r.state, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    shape = f"TP {spec['tp']}" + (f" x PP {spec['pp']}" if spec["pp"] > 1 else "")
    busy = f"; `dpctl {s.busy['command']}` in progress" if s.busy else ""
    return f"{s.name}: {plural(spec['dp'], 'rank')} of {shape}, pack {spec['pack']}, {s.record.state}: {states}{busy}"


def status_command(
    name: NameArg = None,
    file: options.ConfigFile = None,
    address: options.Address = None,
    output: options.OutputOpt = options.Output.table,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes with --watch.")] = 2.0,
) -> None:
    """Every rank of every deployment (or one): state, node, devices Ray granted, since when."""
    console.session.json_errors = output is not options.Output.table
    config = options.resolve_config(file, address=address)
    from dpctl_ray.launcher.cluster import connect  # noqa: PLC0415

    with connect(config.cluster, start_local=False):
        from dpctl_ray.launcher.deploy import gather, status_document  # noqa: PLC0415 - after connect: imports Ray

        statuses = gather(name)
        if name is not None and statuses[0].record is None and not _has_objects(name):
            from dpctl_ray.launcher import records  # noqa: PLC0415

            others = ", ".join(records.names()) or "none"
            raise BadInput(
                f"no deployment named {name!r} in this cluster (deployments: {others})", code="no_deployment"
            )
        if output is not options.Output.table:
            _print_doc(status_document(statuses), output)
            return
        if not statuses:
            console.info("no deployments in this cluster; `dpctl up` launches one")
            return
        if not watch:
            show_statuses(statuses)
            return
        _watch(name, interval)


def _has_objects(name: str) -> bool:
    from dpctl_ray.launcher.objects import deployments_with_objects  # noqa: PLC0415

    return name in deployments_with_objects()


def _watch(name: str | None, interval: float) -> None:
    from rich.console import Group  # noqa: PLC0415
    from rich.live import Live  # noqa: PLC0415

    from dpctl_ray.launcher.deploy import gather  # noqa: PLC0415

    def render() -> Group:
        now = time.time()
        return Group(*(table(STATUS_COLUMNS, status_rows(s.ranks, now), title=_status_title(s)) for s in gather(name)))

    try:
        with Live(render(), console=console.stdout_console(), auto_refresh=False) as live:
            while True:
                time.sleep(max(interval, 0.2))
                live.update(render(), refresh=True)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends


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
    from dpctl_ray.launcher.cluster import connect  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(connect(config.cluster, start_local=False))
        except ClusterUnreachable:
            if config.cluster.address == "auto" and address is None:
                console.info("no Ray cluster running: nothing to remove")
                return
            raise
        from dpctl_ray.launcher import deploy, records  # noqa: PLC0415 - after connect: imports Ray
        from dpctl_ray.launcher.objects import deployments_with_objects  # noqa: PLC0415

        if all_deployments:
            targets = sorted(set(records.names()) | deployments_with_objects())
            if not targets:
                console.info("no dpctl deployments in this cluster: nothing to remove")
        else:
            targets = [name or config.name]
        for target in targets:
            _report_down(deploy.down(target, force=force))


def _report_down(result: DownResult) -> None:
    if result.nothing:
        console.info(f"{result.name}: nothing to remove")
        return
    engines = result.engines
    console.info(
        f"{result.name}: removed {engines} engine{'s' if engines != 1 else ''} (with their device workers), "
        f"{len(result.groups)} placement group{'s' if len(result.groups) != 1 else ''}"
        + (" and its record" if result.record else "")
    )
