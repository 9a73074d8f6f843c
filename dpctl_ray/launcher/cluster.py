"""Finding the Ray cluster (flag > config > RAY_ADDRESS > local cluster) and joining it as a Session."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpctl_ray.config import ClusterConfig
from dpctl_ray.errors import ClusterUnreachable
from dpctl_ray.local import nodes as local
from dpctl_ray.local import state as local_state

if TYPE_CHECKING:
    from dpctl_ray.launcher.session import Session

# Ray's own record of the cluster `ray start --head` last started on this machine (default temp dir).
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # noqa: S108 - Ray's fixed path
UV_HOOK = "RAY_ENABLE_UV_RUN_RUNTIME_ENV"  # Ray reads it when it is first imported


@dataclass(frozen=True, slots=True)
class Target:
    """The cluster a command talks to, how it was found, and the environment Ray needs for it."""

    address: str
    source: str
    env: dict[str, str] = field(default_factory=dict)
    local: local_state.LocalState | None = None


def resolve(cluster: ClusterConfig, *, start_local: bool, say: Callable[[str], None]) -> Target:
    """Pick the cluster: explicit address (flag or config), RAY_ADDRESS, the local cluster, Ray's own, or start one."""
    address = cluster.address
    if address == "local":
        return _local(cluster, start_local, say, "cluster.address")
    if address != "auto":
        return _explicit(address, "--address / cluster.address")
    env_address = os.environ.get("RAY_ADDRESS", "").strip()
    if env_address and env_address != "auto":
        return _explicit(env_address, "RAY_ADDRESS")
    state = local_state.running_state()
    if state is not None:
        return Target(state.address, "local cluster", state.env(), state)
    if RAY_CURRENT_CLUSTER.is_file():
        current = RAY_CURRENT_CLUSTER.read_text().strip()
        if current and local_state.port_open(current):
            return _explicit(current, "the Ray cluster running on this machine")
    if start_local:
        return _local(cluster, start_local, say, "")
    raise ClusterUnreachable(
        "no Ray cluster found (no --address, cluster.address or RAY_ADDRESS, and no local cluster running)",
        hint="start one with `dpctl cluster up`, pass --address HOST:PORT, or plan offline with --inventory FILE",
    )


def _explicit(address: str, source: str) -> Target:
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise ClusterUnreachable(
            f"{address} (from {source}) is a Ray Client address, and Ray Client needs grpcio",
            hint="pip install 'dpctl-ray[client]', or use the GCS address (host:6379) inside the cluster's network",
            code="client_extra_missing",
        )
    state = local_state.running_state()
    if state is not None and address in (state.address, f"ray://{state.address}"):
        return Target(state.address, f"local cluster (from {source})", state.env(), state)
    if not local_state.port_open(address, timeout=3.0):
        raise ClusterUnreachable(
            f"no Ray cluster answers at {address} (from {source})",
            hint="check the address and that the head node is up; `ray status --address` should answer",
        )
    env: dict[str, str] = {}
    token = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.environ.get("RAY_AUTH_TOKEN")
    if "RAY_AUTH_MODE" not in os.environ and (token or (Path.home() / ".ray" / "auth_token").is_file()):
        # Token auth: `address="auto"` picks it up, an explicit address needs the mode set (DESIGN.md).
        env["RAY_AUTH_MODE"] = "token"
    return Target(address, source, env)


def _local(cluster: ClusterConfig, start_local: bool, say: Callable[[str], None], why: str) -> Target:
    state = local_state.running_state()
    if state is None:
        if not start_local:
            raise ClusterUnreachable(
                "no local cluster is running" + (f" ({why} is local)" if why else ""),
                hint="start it with `dpctl cluster up`",
            )
        shape = cluster.local
        say(
            f"no Ray cluster running: starting a local one (head + {shape.nodes} worker nodes, "
            f"{shape.gpus_per_node} GPU and {shape.cpus_per_node} CPU each); `dpctl cluster down` stops it"
        )
        state = local.start(shape, say)
        return Target(state.address, "local cluster (started)", state.env(), state)
    return Target(state.address, "local cluster", state.env(), state)


@contextmanager
def connect(
    cluster: ClusterConfig,
    *,
    start_local: bool = False,
    say: Callable[[str], None] = lambda _: None,
    ship: dict[str, Any] | None = None,
) -> Iterator[Session]:
    """Resolve and join the cluster; everything Ray-side goes through the Session this yields.

    `ship`: the job's runtime_env, for a command that runs code on the nodes (`shipping.code_only()` or
    `shipping.for_launch(config)`); None for one that does not.
    """
    target = resolve(cluster, start_local=start_local, say=say)
    if "ray" in sys.modules and any(os.environ.get(k) != v for k, v in target.env.items()):
        msg = "ray was imported before connect() set its auth environment; Ray would ignore it"
        raise RuntimeError(msg)
    os.environ.update(target.env)
    if target.local is not None:
        os.environ.pop("RAY_AUTH_TOKEN", None)
    # Ray's uv hook (a driver under `uv run` makes every worker start through `uv run` in a copy of the project)
    # costs ~2 s per engine host here, and dpctl ships what its hosts need itself: off unless asked for.
    os.environ.setdefault(UV_HOOK, "0")
    # The one deferred import of the Ray side: Ray reads its auth settings when it is first imported.
    from dpctl_ray.launcher.session import Session  # noqa: PLC0415

    if target.address.startswith("ray://") and ship is None:
        from dpctl_ray.launcher import shipping  # noqa: PLC0415 - only for Ray Client

        ship = shipping.code_only()  # through Ray Client, dpctl reads the GCS with tasks in the cluster
    with Session.join(target.address, target.source, ship, say) as session:
        yield session
