"""`dpctl cluster up|status|down`: a Ray cluster on this machine, one loopback address per node."""

from __future__ import annotations

import dataclasses
import os
from typing import Annotated, Any, Optional

import typer

from dpctl_ray import values
from dpctl_ray.cli import console, options
from dpctl_ray.cli.render import Column, table
from dpctl_ray.config import MAX_LOCAL_DEVICES, MAX_LOCAL_NODES, load_config, local_labels
from dpctl_ray.errors import BadInput
from dpctl_ray.local import nodes as local
from dpctl_ray.local import state as local_state
from dpctl_ray.local.state import LocalState

cluster_app = typer.Typer(
    name="cluster",
    help="A multi-node Ray cluster on this machine (head + workers on 127.0.0.2, ...).",
    no_args_is_help=True,
)

NODE_COLUMNS = (
    Column("node"),
    Column("ip"),
    Column("pid", "right"),
    Column("state"),
    Column("GPU", "right"),
    Column("CPU", "right"),
    Column("labels"),
)


@cluster_app.command("up")
def cluster_up(
    nodes: Annotated[
        Optional[str], typer.Option("--nodes", help="Worker nodes (cluster.local.nodes).", metavar="N")
    ] = None,
    gpus_per_node: Annotated[
        Optional[str],
        typer.Option("--gpus-per-node", help="GPUs per worker, simulated when there are none.", metavar="N"),
    ] = None,
    cpus_per_node: Annotated[
        Optional[str], typer.Option("--cpus-per-node", help="CPUs per worker.", metavar="N")
    ] = None,
    labels: Annotated[
        Optional[str],
        typer.Option(
            "--labels",
            help="Node labels: worker-1:zone=a,worker-2:zone=b (cluster.local.labels).",
            metavar="NODE:KEY=VALUE,...",
        ),
    ] = None,
    file: options.ConfigFile = None,
) -> None:
    """Start a head and N worker nodes, one at a time, each on its own loopback address."""
    shape = load_config(file).cluster.local
    given: dict[str, Any] = {
        field: values.integer(value, flag, minimum=minimum, maximum=maximum)
        for field, flag, value, minimum, maximum in (
            ("nodes", "--nodes", nodes, 0, MAX_LOCAL_NODES),
            ("gpus_per_node", "--gpus-per-node", gpus_per_node, 0, MAX_LOCAL_DEVICES),
            ("cpus_per_node", "--cpus-per-node", cpus_per_node, 1, MAX_LOCAL_DEVICES),
        )
        if value is not None
    }
    if labels is not None:
        given["labels"] = local_labels(labels, "--labels")
    shape = dataclasses.replace(shape, **given)

    running = local_state.running_state()
    if running is not None:
        console.info(f"a local cluster is already running at {running.address}; `dpctl cluster down` stops it")
        _show(running)
        return
    state = local.start(shape, say=console.info)
    console.info(f"local cluster up at {state.address}; dpctl commands find it, `dpctl cluster down` stops it")
    _show(state)


@cluster_app.command("status")
def cluster_status(output: options.OutputOpt = options.Output.table) -> None:
    """The local cluster's nodes, their processes, and how to reach it from other tools."""
    state = local_state.load_state()
    if output is not options.Output.table:
        doc: dict[str, object] = {"running": False}
        if state is not None:
            doc = {"running": local_state.running_state() is not None, **dataclasses.asdict(state)}
        console.print_json(doc)
        return
    if state is None:
        console.info("no local cluster; `dpctl cluster up` starts one")
        return
    _show(state)


@cluster_app.command("kill-node")
def cluster_kill_node(
    node: Annotated[str, typer.Argument(help="A worker's name, e.g. worker-2 (`dpctl cluster status`).")],
) -> None:
    """SIGKILL one worker node, as if its machine died: rehearse `dpctl repair` on this machine."""
    state = _running()
    killed = local.kill_node(state, node)
    console.info(f"killed {killed.name} ({killed.ip}, pid {killed.pid}); Ray marks it dead within seconds")


@cluster_app.command("add-node")
def cluster_add_node() -> None:
    """Start one more worker node of the cluster's shape, on the next free loopback address."""
    local.add_node(_running(), say=console.info)


def _running() -> LocalState:
    state = local_state.running_state()
    if state is None:
        raise BadInput("no local cluster is running", hint="`dpctl cluster up` starts one")
    return state


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop exactly the processes `dpctl cluster up` started (by PID), never another Ray cluster."""
    state = local_state.load_state()
    if state is None:
        console.info("no local cluster running: nothing to stop")
        return
    local.stop(state, say=console.info)
    console.info("local cluster stopped")


def _show(state: LocalState) -> None:

    alive = local_state.running_state() is not None
    rows = [
        (
            n.name,
            n.ip,
            str(n.pid),
            "up" if local_state.process_alive(n.pid) else "gone",
            f"{n.gpus}{' (simulated)' if state.simulated_gpus and n.gpus else ''}",
            str(n.cpus),
            ", ".join(f"{k}={v}" for k, v in n.labels.items()),
        )
        for n in state.nodes
    ]
    title = f"local cluster at {state.address} ({'up' if alive else 'not answering'})"
    console.print_data(table(NODE_COLUMNS, rows, title=title))
    env = " ".join(f"{k}={v}" for k, v in state.env().items())
    console.info(f"other Ray tools: {env} ray status --address {state.address}")
    if os.environ.get("RAY_ADDRESS"):
        console.info(f"note: RAY_ADDRESS={os.environ['RAY_ADDRESS']} is set and takes precedence for dpctl commands")
