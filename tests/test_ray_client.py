"""`ray://` addresses (Ray Client, the `client` extra): the whole life through the session cluster's client server.

Through Ray Client dpctl is outside the cluster: it reads the GCS with a task in the cluster (shipped code),
and readiness comes through Ray's own signals, as for a driver the nodes cannot reach.
"""

from __future__ import annotations

import json

import pytest

from dpctl_ray.launcher.local import LocalState
from tests.conftest import dpctl, leftovers

pytestmark = pytest.mark.ray


def test_up_status_logs_scale_and_down_through_ray_client(live: LocalState) -> None:
    assert live.client_port, "the session cluster's head serves Ray Client when grpcio is installed (dev group)"
    address = f"ray://127.0.0.1:{live.client_port}"
    hook_off = {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    name = "via-client"
    up = dpctl("up", "--name", name, "--dp", "2", "--tp", "1", "--address", address, **hook_off)
    assert up.returncode == 0, up.stderr
    assert "ready on 127.0.0." in up.stderr
    try:
        status = dpctl("status", name, "--address", address, "-o", "json", **hook_off)
        assert status.returncode == 0, status.stderr
        (deployment,) = json.loads(status.stdout)["deployments"]
        assert [r["state"] for r in deployment["ranks"]] == ["READY", "READY"]
        logs = dpctl("logs", name, "--rank", "1", "--address", address, **hook_off)
        assert "dpctl: ready" in logs.stdout, logs.stderr
        scaled = dpctl("scale", name, "--dp", "3", "--address", address, **hook_off)
        assert scaled.returncode == 0, scaled.stderr
        (deployment,) = json.loads(dpctl("status", name, "-o", "json").stdout)["deployments"]
        assert len(deployment["ranks"]) == 3
    finally:
        down = dpctl("down", name, "--address", address, **hook_off)
        assert down.returncode == 0, down.stderr
    assert leftovers(live, name) == []
