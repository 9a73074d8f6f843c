"""`ray://` addresses (Ray Client, the `client` extra): the whole life through the session cluster's client server.

Through Ray Client dpctl is outside the cluster: it reads the GCS with a task in the cluster (shipped code),
and readiness comes through Ray's own signals, as for a driver the nodes cannot reach.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpctl_ray.local import state as local_state
from dpctl_ray.local.state import LocalState
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


def test_the_local_heads_client_server_forks_without_grpcs_fork_handlers(live: LocalState) -> None:
    """Each Ray Client session is a process the head's client server forks; with gRPC's fork handlers on, about
    one in five died at start (Ray issue #63202). A local cluster's head runs its client server without them."""
    proxy_args = {f"--port={live.client_port}", "--mode=proxy"}
    (proxy,) = [proc for proc in Path("/proc").iterdir() if proc.name.isdigit() and proxy_args <= _cmdline(proc)]
    environ = dict(
        entry.split("=", 1) for entry in (proxy / "environ").read_text(errors="replace").split("\0") if "=" in entry
    )
    assert environ.get("GRPC_ENABLE_FORK_SUPPORT") == "false"


def _cmdline(proc: Path) -> set[str]:
    """A process's arguments (none when it is gone or not ours to read)."""
    try:
        return set((proc / "cmdline").read_text(errors="replace").split("\0"))
    except OSError:
        return set()


def test_a_session_the_client_server_cannot_start_is_tried_again_then_named(tmp_path: Path) -> None:
    """A Ray Client server that cannot start a driver's session (here: it gives the session's server no time to
    answer) is asked three times, each retry said on stderr, then one line names the server's reason."""
    home = tmp_path / "home"
    no_time = {"DPCTL_HOME": str(home), "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "0"}
    started = dpctl("cluster", "up", "--nodes", "0", **no_time)
    assert started.returncode == 0, started.stderr
    try:
        state = local_state.load_state_at(home)
        assert state is not None
        assert state.client_port
        # The server keeps a failed session for the client's reconnect grace period (30 s) before it answers.
        quick = {"RAY_CLIENT_RECONNECT_GRACE_PERIOD": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
        address = f"ray://127.0.0.1:{state.client_port}"
        status = dpctl("status", "--address", address, **state.env(), **quick, DPCTL_HOME=str(home))
        assert status.returncode == 2
        assert status.stdout == ""
        *retries, error, hint = status.stderr.strip().splitlines()
        assert [r.split(";")[-1] for r in retries] == [" trying again (2/3)", " trying again (3/3)"]
        assert error.startswith(f"dpctl: error: the Ray Client server at {address} could not start a session")
        # The server's reason: no answer in time (what this head is made to do), or a session server that died
        # at start (Ray issue #63202, rare with the head's gRPC fork handlers off).
        reasons = ("Proxy failed to Connect to backend!", "Starting Ray client server failed.")
        assert any(f"(3 tries): RuntimeError: {reason}" in error for reason in reasons), error
        assert "ray_client_server" in hint
    finally:
        dpctl("cluster", "down", DPCTL_HOME=str(home))
