"""A deployment's supervisor from the outside: found by name, started, asked for its state, stopped.

The supervisor itself (the actor that repairs) is `launcher.supervisor`; this handle is what commands and
`status` use, so that nothing that starts or asks a supervisor imports what it runs.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dpctl_ray.config import Recovery
from dpctl_ray.deployment.status import SupervisorPhase, SupervisorState
from dpctl_ray.launcher.records import NAMESPACE, prefix
from dpctl_ray.launcher.supervisor import RemoteSupervisor


def supervisor_name(deployment: str) -> str:
    """`dpctl/<deployment>/supervisor`: under the deployment's prefix, so that `down` and a sweep find it."""
    return f"{prefix(deployment)}supervisor"


def start(deployment: str, recovery: Recovery, head: str | None, runtime_env: dict[str, Any] | None, ports: Any) -> Any:
    """The deployment's supervisor, detached, on the head node, no CPU; `ports` makes its cluster's ports there.

    The head, strictly: Ray spills even a zero-CPU actor under soft affinity to a worker node now and then
    (seen in the tests' GCS logs), and a supervisor on a worker dies with it, in the middle of its repair.
    """
    options: dict[str, Any] = {
        "name": supervisor_name(deployment),
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "num_cpus": 0,
        "max_concurrency": 4,  # state() answers while the watch thread works
        "max_restarts": -1,  # a crashed supervisor comes back (its budget from the events)
    }
    if head is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=False)
    if runtime_env is not None:
        options["runtime_env"] = runtime_env
    actor = RemoteSupervisor.options(**options).remote(deployment, recovery, time.time(), ports)
    ray.get(actor.state.remote(), timeout=60)  # started (a failure to start is the launch's)
    return actor


def find(deployment: str) -> Any | None:
    """The deployment's supervisor, if it has one."""
    try:
        return ray.get_actor(supervisor_name(deployment), namespace=NAMESPACE)
    except ValueError:
        return None


def status(deployment: str, timeout: float = 10.0) -> SupervisorState | None:
    """The deployment's supervisor's state, None without one; one that does not answer says so in its state."""
    actor = find(deployment)
    if actor is None:
        return None
    deadline = time.monotonic() + timeout
    while True:
        try:
            state: SupervisorState = ray.get(actor.state.remote(), timeout=max(deadline - time.monotonic(), 0.1))
        except ActorUnavailableError:  # a connection to it broke (a node died nearby): it may answer again
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            return SupervisorState(SupervisorPhase.NOT_ANSWERING, "ActorUnavailableError", 0, 0, 0.0)
        except Exception as exc:  # noqa: BLE001 - a dead or slow supervisor is a finding, not a failed command
            return SupervisorState(SupervisorPhase.NOT_ANSWERING, type(exc).__name__, 0, 0, 0.0)
        return state


def stop(deployment: str) -> bool:
    """Remove the deployment's supervisor (first thing `down` does); whether there was one."""
    actor = find(deployment)
    if actor is None:
        return False
    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)
    return True
