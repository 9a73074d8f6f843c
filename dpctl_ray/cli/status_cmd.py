"""`dpctl status` and `dpctl logs`: what a deployment's ranks are doing, and what they wrote."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Optional

import typer

from dpctl_ray import values
from dpctl_ray.cli import console, options
from dpctl_ray.cli.render import STATUS_COLUMNS, status_rows, status_title, table
from dpctl_ray.deployment.status import DeploymentStatus, status_document
from dpctl_ray.files import dump_yaml
from dpctl_ray.launcher import shipping

NameArg = Annotated[
    Optional[str],
    typer.Argument(
        help="Deployment name (default: the config's name, else the only deployment there is).", metavar="NAME"
    ),
]


def status_command(
    name: NameArg = None,
    file: options.ConfigFile = None,
    address: options.Address = None,
    output: options.OutputOpt = options.Output.table,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        str, typer.Option("--interval", help="Seconds between refreshes with --watch.", metavar="S")
    ] = "2",
) -> None:
    """Every rank of every deployment (or one): state, node, devices Ray granted, since when."""
    every = values.seconds(interval, "--interval")
    config = options.resolve_config(file, address=address)
    with options.connect(config.cluster, start_local=False) as cluster:
        statuses = cluster.status(name)
        if output is not options.Output.table:
            print_statuses(statuses, output)
        elif not statuses:
            console.info("no deployments in this cluster; `dpctl up` launches one")
        elif not watch:
            show_statuses(statuses)
        else:
            _watch(lambda: cluster.status(name), every)


def logs_command(
    name: NameArg = None,
    rank: Annotated[
        Optional[list[str]], typer.Option("--rank", "-r", help="Only this rank (repeatable).", metavar="R")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    tail: Annotated[
        str, typer.Option("--tail", "-n", help="Lines to show from the end of each log.", metavar="N")
    ] = "50",
    file: options.ConfigFileLongOnly = None,
    address: options.Address = None,
) -> None:
    """Each rank's log, read on its node; prefixed by rank when several are shown."""
    lines = values.integer(tail, "--tail", minimum=0)
    ranks = [values.integer(r, "--rank", minimum=0) for r in rank] if rank else None
    config = options.resolve_config(file, address=address)
    # The logs are read on the nodes, by dpctl's code there.
    with options.connect(config.cluster, start_local=False, ship=shipping.code_only()) as cluster:
        sources = cluster.log_sources(options.target(name, config, cluster), ranks)
        for source in sources:
            if not source.alive:
                console.warn(f"rank {source.rank}: its node is gone, so is its log ({source.path})")
        prefix = len(sources) > 1

        def show(texts: dict[int, str]) -> None:
            for r in sorted(texts):
                for line in texts[r].splitlines():
                    console.write_stdout(f"[rank {r}] {line}\n" if prefix else f"{line}\n")

        show(cluster.read_logs(sources, tail=lines))
        if not follow:
            return
        try:
            while True:
                time.sleep(0.5)
                show(cluster.read_logs(sources, tail=None))
        except KeyboardInterrupt:
            return  # Ctrl-C is how following ends


def print_statuses(
    statuses: list[DeploymentStatus], output: options.Output, extra: Mapping[str, object] | None = None
) -> None:
    """The status document of these deployments, with `extra` top-level keys, on stdout as JSON or YAML."""
    print_document({**status_document(statuses), **(extra or {})}, output)


def print_document(doc: dict[str, Any], output: options.Output) -> None:
    """A status (or other) document on stdout, as JSON or YAML."""
    if output is options.Output.yaml:
        console.write_stdout(dump_yaml(doc))
    else:
        console.print_json(doc)


def show_statuses(statuses: list[DeploymentStatus]) -> None:
    """One block per deployment: a header line and its ranks."""
    now = time.time()
    for s in statuses:
        console.print_data(table(STATUS_COLUMNS, status_rows(s.ranks, now), title=status_title(s)))
        if s.spares or (s.record is not None and s.record.request.spares):
            console.print_data(spares_line(s))
        events = s.record.events[-RECENT_EVENTS:] if s.record else []
        if events:
            console.print_data("recent repairs:\n" + "\n".join(event_line(e) for e in events))


def spares_line(s: DeploymentStatus) -> str:
    """`spares: 0 reserved on 127.0.0.4, 1 lost (127.0.0.5)`, and how many of those asked for are missing."""
    parts = [f"{p.spare} {p.state.value} on {p.ip}" for p in s.spares]
    want = s.record.request.spares if s.record is not None else len(s.spares)
    if len(s.spares) < want:
        parts.append(f"{want - len(s.spares)} of {want} not reserved (no room; `dpctl repair` tries again)")
    return "spares: " + ", ".join(parts)


RECENT_EVENTS = 3  # repair events under a deployment's table (-o json lists every one kept)
EVENT_CAUSE_WIDTH = 60  # a cause is a rank's whole detail; the table above shows it, the event a glimpse


def event_line(event: dict[str, Any]) -> str:
    """`  16:08:21  rank 1  node 1a2b is gone: 127.0.0.3 -> 127.0.0.5, ready`."""
    stamp = time.strftime("%H:%M:%S", time.localtime(float(event.get("time", 0))))
    if event.get("cause") == "supervisor":
        return f"  {stamp}  supervisor: {event.get('result')}"
    move = f"{event.get('from') or '?'} -> {event.get('to')}" if event.get("to") else f"on {event.get('from') or '?'}"
    cause = str(event.get("cause"))
    if len(cause) > EVENT_CAUSE_WIDTH:
        cause = cause[: EVENT_CAUSE_WIDTH - 1] + "…"
    return f"  {stamp}  rank {event.get('rank')}  {cause}: {move}, {event.get('result')}"


def _watch(gather: Callable[[], list[DeploymentStatus]], interval: float) -> None:
    from rich.console import Group  # noqa: PLC0415 - only a watch draws live
    from rich.live import Live  # noqa: PLC0415

    def render() -> Group:
        now = time.time()
        tables = (table(STATUS_COLUMNS, status_rows(s.ranks, now), title=status_title(s)) for s in gather())
        return Group(*(console.live_text(t, sys.stdout) for t in tables))

    try:
        with Live(render(), console=console.stdout_console(), auto_refresh=False) as live:
            while True:
                time.sleep(max(interval, 0.2))
                live.update(render(), refresh=True)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends
