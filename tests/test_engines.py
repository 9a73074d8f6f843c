"""Engines: the command engine's rendering and config checks, python engine classes, and real processes per rank."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpctl_ray.config import config_from_document
from dpctl_ray.engines import leftovers as leftovers_module
from dpctl_ray.engines.processes import Command, Granted, commands
from dpctl_ray.engines.spec import CommandSpec
from dpctl_ray.local.state import LocalState
from dpctl_ray.planner import Node, Placement, Plan, PlanRequest, plan
from tests.conftest import EXAMPLE_INVENTORY, ROOT, Invoke, dpctl, dpctl_background, interrupt, leftovers, ray_driver

FAKE_VLLM = str(ROOT / "tests" / "fake_vllm.py")


def rendered(spec: CommandSpec, device: str = "GPU") -> Command:
    """The one process of a TP-2 rank on one node, granted devices 2 and 3 there."""
    node = Node("n1", "10.0.0.3", False, {device: 4, "CPU": 8}, {device: 4, "CPU": 8})
    result = plan(PlanRequest("d", Placement(dp=1, tp=2, device=device), (node,)))
    assert isinstance(result, Plan)
    (command,) = commands(result, spec, Granted({(0, 0): ("2", "3")}, {(0, 0): 8001}), 13345)
    return command


def test_device_visibility_follows_the_device_key_or_the_config() -> None:
    """GPU ranks get CUDA_VISIBLE_DEVICES, TPU ranks TPU_VISIBLE_CHIPS; engine.visible_devices_env overrides it."""
    spec = CommandSpec(argv=("serve", "{devices}"))
    assert rendered(spec).env == (("CUDA_VISIBLE_DEVICES", "2,3"),)
    assert rendered(spec, device="TPU").env == (("TPU_VISIBLE_CHIPS", "2,3"),)
    assert rendered(replace(spec, visible_devices_env="HIP_VISIBLE_DEVICES")).env == (("HIP_VISIBLE_DEVICES", "2,3"),)
    assert rendered(spec, device="fancy_accelerator").env == ()


def test_visible_devices_none_puts_the_devices_on_the_command_line_only() -> None:
    """With visible_devices_env: none the process gets no variable and loses the one Ray set for its host."""
    command = rendered(CommandSpec(argv=("serve", "--device-ids", "{devices}"), visible_devices_env="none"))
    assert command.argv == ("serve", "--device-ids", "2,3")
    assert command.env == ()
    assert command.unset == ("CUDA_VISIBLE_DEVICES",)


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        (
            {"kind": "command", "argv": ["serve", "--rank", "{rnk}"], "ready": {"tcp": "{port}"}},
            "engine.argv[2]: unknown placeholder {rnk} in '{rnk}'",
        ),
        (
            {"kind": "command", "argv": ["serve"], "env": {"X": "{nope}"}, "ready": {"tcp": "{port}"}},
            "engine.env.X: unknown placeholder {nope}",
        ),
        (
            {"kind": "command", "argv": "vllm serve model", "ready": {"tcp": "{port}"}},
            "engine.argv: must be a non-empty list of strings",
        ),
        ({"kind": "command", "argv": ["serve"]}, "engine.ready: required for engine.kind command"),
        (
            {"kind": "command", "argv": ["serve"], "ready": {"http": "{node_ip}:{port}/health"}},
            "engine.ready.http: must be an http:// or https:// URL",
        ),
        ({"kind": "command", "argv": ["serve"], "ready": {"grpc": "x"}}, "engine.ready: must be one of"),
        ({"kind": "command", "argv": ["serve"], "ready": {"log": "("}}, "engine.ready.log: not a valid regular"),
        ({"kind": "demo", "argv": ["serve"]}, "engine.argv: only for engine.kind command, not demo"),
        ({"kind": "python", "class": "nocolon"}, 'engine.class: must be "package.module:Class"'),
    ],
    ids=[
        "argv-placeholder",
        "env-placeholder",
        "shell-string",
        "no-ready",
        "ready-url",
        "ready-kind",
        "ready-regex",
        "wrong-kind",
        "class-form",
    ],
)
def test_engine_config_errors_name_the_key(engine: dict[str, Any], message: str) -> None:
    """Each engine config mistake is a config error naming its key path (exit 2 at the CLI)."""
    from dpctl_ray.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        config_from_document({"engine": engine})
    assert message in err.value.message


def test_unknown_placeholder_is_exit_2_with_a_suggestion(cli: Invoke, write_yaml: Callable[[str, Any], str]) -> None:
    """At the CLI an unknown placeholder is one error line, exit 2, with the nearest known one."""
    path = write_yaml(
        "bad.yaml", {"engine": {"kind": "command", "argv": ["serve", "{rnk}"], "ready": {"tcp": "{port}"}}}
    )
    result = cli("plan", "-f", path, "--inventory", str(EXAMPLE_INVENTORY))
    assert result.exit_code == 2, result.output
    assert "engine.argv[1]: unknown placeholder {rnk}" in result.stderr
    assert "did you mean {rank}?" in result.stderr


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        ("tests.engines_for_tests:NoStop", "does not implement the engine contract: no set_dp(), stop()"),
        ("tests.engines_for_tests:Missing", "has no class 'Missing'"),
        ("no_such_module.engines:Engine", "no module named 'no_such_module' (looked in "),
    ],
    ids=["missing-methods", "missing-class", "missing-module"],
)
def test_python_engine_that_breaks_the_contract_is_exit_2(
    cli: Invoke, write_yaml: Callable[[str, Any], str], cls: str, message: str
) -> None:
    """A python engine class that cannot load or lacks a method fails `up` at once (exit 2), before any cluster."""
    path = write_yaml("py.yaml", {"engine": {"kind": "python", "class": cls}})
    result = cli("up", "-f", path, env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "no Ray cluster" not in result.stderr


def test_a_python_engine_that_needs_per_device_gets_it_and_nothing_else(
    cli: Invoke, write_yaml: Callable[[str, Any], str]
) -> None:
    """A class declaring dpctl_bundles = "per_device" is planned so; asking for per_node is exit 2 naming the flag."""
    path = write_yaml("py.yaml", {"engine": {"kind": "python", "class": "tests.engines_for_tests:PerDevice"}})
    result = cli("plan", "-f", path, "--inventory", str(EXAMPLE_INVENTORY), "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["spec"]["bundles"] == "per_device"
    refused = cli("plan", "-f", path, "--inventory", str(EXAMPLE_INVENTORY), "--bundles", "per_node")
    assert refused.exit_code == 2
    assert "--bundles: tests.engines_for_tests:PerDevice needs per_device bundles" in refused.stderr
    plain = write_yaml("plain.yaml", {"engine": {"kind": "python", "class": "tests.engines_for_tests:Complete"}})
    result = cli("plan", "-f", plain, "--inventory", str(EXAMPLE_INVENTORY), "-o", "json")
    assert json.loads(result.stdout)["spec"]["bundles"] == "per_node"
    bad = write_yaml("bad.yaml", {"engine": {"kind": "python", "class": "tests.engines_for_tests:BadLayout"}})
    result = cli("plan", "-f", bad, "--inventory", str(EXAMPLE_INVENTORY))
    assert result.exit_code == 2
    assert "BadLayout.dpctl_bundles must be one of per_node, per_device, got 'per_gpu'" in result.stderr


# --- real processes on the cluster ----------------------------------------------------------------------


def fake_vllm_config(
    directory: Path,
    name: str,
    *,
    ready: dict[str, str] | None = None,
    preset: str = "vllm-dense",
    placement: dict[str, Any] | None = None,
    knobs: dict[str, str] | None = None,
    **engine: Any,
) -> str:
    """A shipped vLLM preset with `vllm` replaced by the stand-in, free ports, short loading, short timeouts.

    `knobs` are the stand-in's FAKE_VLLM_* settings (load seconds default 0.4), `engine` overrides engine keys.
    """
    doc = yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text())
    doc["name"] = name
    doc["placement"] = {**doc["placement"], **(placement or {})}
    doc["engine"]["argv"] = [sys.executable, FAKE_VLLM, *doc["engine"]["argv"][1:]]
    if ready is not None:
        doc["engine"]["ready"] = ready
    doc["engine"]["base_port"] = 0
    doc["engine"]["master_port"] = 0
    doc["engine"]["stop_grace"] = 5
    env = {"FAKE_VLLM_LOAD_SECONDS": "0.4", "FAKE_VLLM_EXTRA": "rank {rank} of {dp}"}
    env.update({f"FAKE_VLLM_{key.upper()}": value for key, value in (knobs or {}).items()})
    doc["engine"]["env"] = env
    doc["engine"].update(engine)
    doc["timeouts"] = {"placement": 30, "ready": 60}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def ranks_of(name: str) -> list[dict[str, Any]]:
    result = dpctl("status", name, "-o", "json")
    assert result.returncode == 0, result.stderr
    ranks: list[dict[str, Any]] = json.loads(result.stdout)["deployments"][0]["ranks"]
    return ranks


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stand_ins(name: str) -> list[int]:
    """Pids of the deployment's stand-in server processes on this machine (marked by dpctl with its name).

    A test looks at its own deployment only: others may run meanwhile (pytest-xdist).
    """
    mark = f"{leftovers_module.DEPLOYMENT}={name}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"fake_vllm.py" in cmdline and mark in environ:
                found.append(int(entry.name))
    return found


def started_with(rank: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://{rank['ip']}:{rank['port']}/dpctl-test", timeout=5) as response:
        started: dict[str, Any] = json.loads(response.read())
    return started


@pytest.mark.ray
@pytest.mark.parametrize(
    "ready",
    [{"http": "http://{node_ip}:{port}/health"}, {"log": "Application startup complete"}, {"tcp": "{node_ip}:{port}"}],
    ids=["http", "log", "tcp"],
)
def test_each_rank_runs_its_own_process_until_ready(live: LocalState, tmp_path: Path, ready: dict[str, str]) -> None:
    """Every readiness kind brings each rank's process to READY, started with its own rank, devices and env."""
    name = f"proc-{next(iter(ready))}"
    result = dpctl("up", "-f", fake_vllm_config(tmp_path, name, ready=ready))
    assert result.returncode == 0, result.stderr
    try:
        ranks = ranks_of(name)
        assert [r["state"] for r in ranks] == ["READY", "READY"]
        pids = [r["process_pid"] for r in ranks]
        assert all(alive(pid) for pid in pids)
        for rank in ranks:
            started = started_with(rank)
            assert started["pid"] == rank["process_pid"]
            assert started["cuda_visible_devices"] == ",".join(rank["devices"])
            argv = started["argv"]
            assert argv[argv.index("--port") + 1] == str(rank["port"])
            assert not any(arg.startswith("--data-parallel") for arg in argv)
            assert started["extra"] == f"rank {rank['rank']} of 2"
        assert ranks[0]["port"] != ranks[1]["port"] or ranks[0]["ip"] != ranks[1]["ip"]
    finally:
        down = dpctl("down", name)
    assert down.returncode == 0, down.stderr
    assert not any(alive(pid) for pid in pids), "a rank's process outlived `down`"
    assert leftovers(live, name) == []


@pytest.mark.ray
def test_a_process_that_crashes_at_start_is_exit_4_with_its_log_tail(live: LocalState, tmp_path: Path) -> None:
    """A process exiting before it is ready fails the launch with its exit code and last log lines; nothing stays."""
    config = fake_vllm_config(tmp_path, "crashy", knobs={"crash_after": "0.2"})
    result = dpctl("up", "-f", config)
    assert result.returncode == 4, result.stderr
    assert "crashed before it was ready (exit code 3): ERROR EngineCore failed to start: CUDA out of memory" in (
        result.stderr
    )
    assert leftovers(live, "crashy") == []
    assert stand_ins("crashy") == [], "a crashed rank's sibling process was left running"


@pytest.mark.ray
def test_a_killed_process_shows_failed_and_logs_show_every_rank(live: LocalState, tmp_path: Path) -> None:
    """A process killed after ready makes its rank FAILED with its exit code; `logs` prefixes each rank's lines."""
    config = fake_vllm_config(tmp_path, "fragile", ready={"log": "Application startup complete"})
    assert dpctl("up", "-f", config).returncode == 0
    try:
        ranks = ranks_of("fragile")
        os.kill(ranks[1]["process_pid"], signal.SIGKILL)
        time.sleep(0.5)
        states = {r["rank"]: (r["state"], r["detail"]) for r in ranks_of("fragile")}
        assert states[0][0] == "READY"
        assert states[1][0] == "FAILED"
        assert "crashed while serving (killed by SIGKILL)" in states[1][1]

        logs = dpctl("logs", "fragile")
        assert logs.returncode == 0, logs.stderr
        for rank in (0, 1):
            assert f"[rank {rank}] INFO:     Application startup complete." in logs.stdout
            assert f"[rank {rank}] Loading safetensors checkpoint shards: 100% Completed" in logs.stdout
        one = dpctl("logs", "fragile", "--rank", "0", "--tail", "3")
        assert one.returncode == 0, one.stderr
        lines = one.stdout.splitlines()
        assert len(lines) == 3
        assert not any(line.startswith("[rank") for line in lines)
        bad = dpctl("logs", "fragile", "--rank", "7")
        assert bad.returncode == 2
        assert "fragile has no rank 7" in bad.stderr

        follower = dpctl_background("logs", "fragile", "--rank", "0", "-f", "--tail", "0")
        time.sleep(4)
        started_with(ranks[0])  # the stand-in logs each request it serves
        time.sleep(2)
        out, err = interrupt(follower)
        assert follower.returncode == 0, err
        assert '"GET /dpctl-test HTTP/1.1" 200' in out
    finally:
        dpctl("down", "fragile")
    assert leftovers(live, "fragile") == []


@pytest.mark.ray
def test_scale_down_stops_the_process_and_a_killed_engine_takes_its_process_along(
    live: LocalState, tmp_path: Path
) -> None:
    """Scaling down stops the removed rank's process; killing an engine actor outright kills its process too."""
    config = fake_vllm_config(tmp_path, "shrinking", ready={"tcp": "{node_ip}:{port}"}, placement={"dp": 3})
    assert dpctl("up", "-f", config).returncode == 0
    try:
        pids = {r["rank"]: r["process_pid"] for r in ranks_of("shrinking")}
        assert dpctl("scale", "shrinking", "--dp", "2").returncode == 0
        assert not alive(pids[2])
        assert alive(pids[0]) and alive(pids[1])  # noqa: PT018
        with ray_driver(live) as ray:
            ray.kill(ray.get_actor("dpctl/shrinking/engine-1", namespace="dpctl"), no_restart=True)
        deadline = time.monotonic() + 15
        while alive(pids[1]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(pids[1]), "the process outlived its engine actor"
        assert alive(pids[0])
    finally:
        dpctl("down", "shrinking")
    assert not any(alive(pid) for pid in pids.values())


@pytest.mark.ray
def test_python_engine_serves_through_the_contract(live: LocalState) -> None:
    """The example python engine (configs/python-engine.yaml) starts on each rank and answers on its port."""
    result = dpctl("up", "-f", str(ROOT / "configs" / "python-engine.yaml"), "--name", "echo-test")
    assert result.returncode == 0, result.stderr
    try:
        for rank in ranks_of("echo-test"):
            with socket.create_connection((rank["ip"], rank["port"]), timeout=5) as conn:
                conn.sendall(b"ping")
                assert conn.recv(100) == f"hello from rank {rank['rank']} of 2: ping".encode()
        assert dpctl("scale", "echo-test", "--dp", "1").returncode == 0
        (rank,) = ranks_of("echo-test")
        with socket.create_connection((rank["ip"], rank["port"]), timeout=5) as conn:
            conn.sendall(b"ping")
            assert conn.recv(100) == b"hello from rank 0 of 1: ping"
    finally:
        dpctl("down", "echo-test")
    assert leftovers(live, "echo-test") == []
