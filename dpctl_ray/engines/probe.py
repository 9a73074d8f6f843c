"""What `dpctl doctor` runs on every node: can it import dpctl, does it have pyzmq, can it reach the driver."""

from __future__ import annotations

import importlib.util
import platform
import socket
from typing import Any

import ray

import dpctl_ray


@ray.remote(num_cpus=0, max_retries=0)
def probe(driver: tuple[str, int] | None) -> dict[str, Any]:
    """The node's view: where dpctl_ray came from, its Ray and Python, pyzmq, and a TCP connect to `driver`."""
    reach: str | None = None
    if driver is not None:
        try:
            with socket.create_connection(driver, timeout=3):
                reach = ""
        except OSError as exc:
            reach = f"{type(exc).__name__}: {exc}"
    return {
        "dpctl": dpctl_ray.__version__,
        "dpctl_path": str(dpctl_ray.__file__),
        "ray": ray.__version__,
        "python": platform.python_version(),
        "pyzmq": importlib.util.find_spec("zmq") is not None,
        "reach_error": reach,  # None: not checked; "": reached
    }
