"""`dpctl scale` and `dpctl repair`: changes to a running deployment, applied, or saved as a file to apply later.

A dry run prints the change (`-o json`: with the document `--out FILE` saves); `--change FILE` applies a saved
one only if the deployment and the cluster are still as they were when it was made, as `up --plan` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from dpctl_ray import values
from dpctl_ray.cli import console, options
from dpctl_ray.cli.live import LiveView
from dpctl_ray.cli.render import RANK_COLUMNS, Column, delta_rows, delta_title, plural, table
from dpctl_ray.cli.status_cmd import NameArg, print_document, print_statuses, show_statuses
from dpctl_ray.deployment.change import ARTIFACT_VERSION, artifact
from dpctl_ray.errors import BadInput
from dpctl_ray.files import load_document
from dpctl_ray.launcher import shipping
from dpctl_ray.planner.checks import MAX_RANKS
from dpctl_ray.planner.document import plan_to_document
from dpctl_ray.planner.model import valid_name
from dpctl_ray.planner.repair import Move

if TYPE_CHECKING:
    from dpctl_ray.launcher.progress import LaunchResult
    from dpctl_ray.launcher.results import RepairResult, ScaleResult
    from dpctl_ray.launcher.session import Session

OutFile = Annotated[
    Optional[str],
    typer.Option("--out", help="With --dry-run: save the change to apply later with --change.", metavar="FILE"),
]
ChangeFile = Annotated[
    Optional[str],
    typer.Option("--change", help="Apply a change saved by --dry-run --out, if it is still fresh.", metavar="FILE"),
]


def warn_unstreamed(launch: LaunchResult | None) -> None:
    """Say which nodes could not stream readiness (no pyzmq), and what that costs."""
    if launch is not None and launch.unstreamed:
        console.warn(
            f"no pyzmq on {', '.join(launch.unstreamed)}: readiness came through Ray, without live progress "
            "(pip install pyzmq on the nodes; vLLM brings it)"
        )


def scale_command(
    name: NameArg = None,
    dp: Annotated[Optional[str], typer.Option("--dp", help="The new number of ranks.", metavar="N")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the ranks to add or stop; change nothing.")] = False,
    out: OutFile = None,
    change_file: ChangeFile = None,
    timeout: Annotated[
        Optional[str],
        typer.Option("--timeout", help="Seconds for new ranks to be ready (timeouts.ready).", metavar="S"),
    ] = None,
    file: options.ConfigFile = None,
    address: options.Address = None,
    output: options.OutputOpt = options.Output.table,
) -> None:
    """Grow or shrink a running deployment to --dp ranks: independent ranks keep running untouched, a group restarts."""
    saved = load_change_file(change_file, "scale") if change_file else None
    if saved is not None:
        if dp is not None:
            raise BadInput("--change fixes the new size; drop --dp", hint="or make a new change file with --dp")
        size, name = int(saved["change"]["after"]), _same_name(name, saved)
    elif dp is None:
        raise BadInput("--dp: the new number of ranks is required", hint="e.g. dpctl scale demo --dp 4")
    else:
        # Checked against the deployment's own record once it is found, not against a config file's placement.
        size = values.integer(dp, "--dp", maximum=MAX_RANKS)
    _check_out(out, dry_run)
    config = options.with_timeouts(options.resolve_config(file, address=address), ready=("--timeout", timeout))
    with options.connect(config.cluster, start_local=False, ship=shipping.code_only()) as cluster:
        target = options.target(name, config, cluster)
        result = cluster.scale(target, size, config.timeouts, dry_run=dry_run, observer=LiveView(target), expect=saved)
        if out and result.change is not None:
            _save(out, artifact(result.record, result.change))
        report_scale(cluster, result, output)


def report_scale(cluster: Session, result: ScaleResult, output: options.Output) -> None:
    """What a scale did (or, dry, would do), then the deployment's status."""
    record, delta = result.record, result.delta
    warn_unstreamed(result.launch)
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
                    **({"change_file": artifact(record, result.change)} if result.change else {}),
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
    out: OutFile = None,
    change_file: ChangeFile = None,
    timeout: Annotated[
        Optional[str],
        typer.Option("--timeout", help="Seconds for repaired ranks to be ready (timeouts.ready).", metavar="S"),
    ] = None,
    file: options.ConfigFile = None,
    address: options.Address = None,
    output: options.OutputOpt = options.Output.table,
) -> None:
    """Place lost ranks again (node gone, engine dead, process exited, failed): the healthy ones are not touched."""
    saved = load_change_file(change_file, "repair") if change_file else None
    if saved is not None:
        name = _same_name(name, saved)
    _check_out(out, dry_run)
    config = options.with_timeouts(options.resolve_config(file, address=address), ready=("--timeout", timeout))
    with options.connect(config.cluster, start_local=False, ship=shipping.code_only()) as cluster:
        target = options.target(name, config, cluster)
        result = cluster.repair(target, config.timeouts, dry_run=dry_run, observer=LiveView(target), expect=saved)
        if out and result.change is not None:
            _save(out, artifact(result.record, result.change))
        elif out:
            console.info(f"{result.record.name}: nothing to repair, so no change file was written")
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
                        **({"change_file": artifact(record, result.change)} if result.change else {}),
                    },
                    output,
                )
                return
            console.info("dry run: nothing changed; this is what the repair would do")
            console.print_data(table(REPAIR_COLUMNS, rows, title=f"{record.name}: repair {plural(len(rows), 'rank')}"))
            if result.restarted:
                console.info("the ranks are group-coupled: every rank's process restarts with the repaired ones")
            return
        warn_unstreamed(result.launch)
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


def load_change_file(path: str, operation: str) -> dict[str, Any]:
    """A change saved by `--dry-run --out` for this operation; anything else is bad input naming the file."""
    doc = load_document(path, what="change")
    change = doc.get("change") if isinstance(doc, dict) else None
    if not (
        isinstance(doc, dict)
        and doc.get("version") == ARTIFACT_VERSION
        and isinstance(doc.get("made_against"), dict)
        and isinstance(change, dict)
        and valid_name(change.get("name"))
        and isinstance(change.get("after"), int)
        and not isinstance(change.get("after"), bool)
    ):
        raise BadInput(f"{path}: not a change file", hint=f"make one with `dpctl {operation} ... --dry-run --out FILE`")
    made = change.get("operation")
    if made != operation:
        raise BadInput(
            f"{path}: a {made} change, not a {operation}", hint=f"apply it with `dpctl {made} --change {path}`"
        )
    return doc


def _same_name(name: str | None, saved: dict[str, Any]) -> str:
    saved_name = str(saved["change"]["name"])
    if name is not None and name != saved_name:
        raise BadInput(f"NAME: the change file is for {saved_name!r}, not {name!r}", hint="drop NAME, or use its file")
    return saved_name


def _check_out(out: str | None, dry_run: bool) -> None:
    if out and not dry_run:
        raise BadInput("--out saves a dry run's change; add --dry-run", hint="then apply it with --change FILE")


def _save(path: str, doc: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
    console.info(f"wrote the change to {path}; apply it with --change {path} while it is fresh")
