"""`dpctl doctor`: a preflight of one cluster before a launch, each line a check with a verdict and a fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dpctl_ray.cli import console, options
from dpctl_ray.cli.render import Column, short_ids, table
from dpctl_ray.cli.status_cmd import print_document
from dpctl_ray.errors import LaunchFailed
from dpctl_ray.launcher import shipping

if TYPE_CHECKING:
    from dpctl_ray.launcher.doctor import NodeView, Report

NODE_COLUMNS = (
    Column("node"),
    Column("ip"),
    Column("head"),
    Column("devices", "right"),
    Column("CPU", "right"),
    Column("dpctl"),
    Column("pyzmq"),
    Column("reaches dpctl"),
)


def doctor_command(
    file: options.ConfigFile = None,
    address: options.Address = None,
    output: options.OutputOpt = options.Output.table,
) -> None:
    """Check one cluster: versions, auth, code shipping, readiness reachability, devices, where rank 0 goes.

    Exit 0 when a launch can go ahead (warnings say what works with less), 4 when a check fails.
    """
    config = options.resolve_config(file, address=address)
    with options.connect(config.cluster, start_local=False, ship=shipping.code_only()) as cluster:
        console.info("probing every node with a shipped task")
        report = cluster.doctor(config.placement)
    if output is options.Output.table:
        _show(report)
    else:
        print_document(report.to_document(), output)
    if report.failed:
        failed = [c.name for c in report.checks if c.verdict.value == "fail"]
        raise LaunchFailed(
            f"{', '.join(failed)}: a launch on this cluster would fail",
            hint="each failed check above says what to fix",
            code="doctor_failed",
        )


def _show(report: Report) -> None:
    marks = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
    lines = [f"dpctl doctor: the cluster at {report.address}"]
    for check in report.checks:
        lines.append(f"  {marks[check.verdict.value]}  {check.name:<10} {check.detail}")
        if check.fix and check.verdict.value != "ok":
            lines.append(f"        {'':<10} fix: {check.fix}")
    console.print_data("\n".join(lines))
    ids = short_ids(n.id for n in report.nodes)
    console.print_data(table(NODE_COLUMNS, [_row(n, ids) for n in report.nodes], title=f"nodes ({report.device})"))


def _row(node: NodeView, ids: dict[str, str]) -> list[str]:
    seen = node.seen
    if node.error:
        dpctl = "failed"
    elif "runtime_resources" in seen.get("dpctl_path", ""):
        dpctl = "shipped"
    else:
        dpctl = "installed"
    reach = seen.get("reach_error")
    return [
        ids[node.id],
        node.ip,
        "yes" if node.head else "",
        f"{node.devices:g}",
        f"{node.cpus:g}",
        dpctl,
        "" if not seen else "yes" if seen.get("pyzmq") else "no",
        "" if not seen or reach is None else "yes" if reach == "" else "no",
    ]
