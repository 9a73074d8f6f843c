"""Engines: the command engine's rendering and config checks, python engine classes, and real processes per rank."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpctl_ray.config import config_from_document, load_config
from dpctl_ray.engines.base import EngineContext
from dpctl_ray.engines.command import render
from dpctl_ray.engines.spec import CommandSpec
from dpctl_ray.launcher.local import LocalState
from tests.conftest import EXAMPLE_INVENTORY, ROOT, Invoke, dpctl, dpctl_background, interrupt, leftovers, ray_driver

FAKE_VLLM = str(ROOT / "tests" / "fake_vllm.py")


def context(**changes: Any) -> EngineContext:
    base: dict[str, Any] = {
        "deployment": "vllm-dp",
        "rank": 1,
        "local_rank": 1,
        "dp": 4,
        "dp_local": 2,
        "world_size": 2,
        "device": "GPU",
        "devices": ("2", "3"),
        "device_ips": ("10.0.0.3", "10.0.0.3"),
        "node_id": "n1",
        "node_ip": "10.0.0.3",
        "master_ip": "10.0.0.2",
        "master_port": 13345,
        "port": 8001,
        "tp": 2,
        "pp": 1,
    }
    return EngineContext(**{**base, **changes})


def test_vllm_example_renders_exactly_what_vllm_expects() -> None:
    """configs/vllm-dp.yaml gives each rank vLLM's external-LB command line, and its GPUs in CUDA_VISIBLE_DEVICES."""
    engine = load_config(str(ROOT / "configs" / "vllm-dp.yaml")).engine
    assert isinstance(engine, CommandSpec)
    argv, env = render(engine, context())
    assert argv == [
        "vllm",
        "serve",
        "Qwen/Qwen3-0.6B",
        "--host",
        "10.0.0.3",
        "--port",
        "8001",
        "--tensor-parallel-size",
        "2",
        "--pipeline-parallel-size",
        "1",
        "--data-parallel-size",
        "4",
        "--data-parallel-rank",
        "1",
        "--data-parallel-address",
        "10.0.0.2",
        "--data-parallel-rpc-port",
        "13345",
    ]
    assert env == {"VLLM_LOGGING_LEVEL": "INFO", "CUDA_VISIBLE_DEVICES": "2,3"}
    assert engine.to_document()["ready"] == {"http": "http://{node_ip}:{port}/health"}


def test_device_visibility_follows_the_device_key_or_the_config() -> None:
    """TPU ranks get TPU_VISIBLE_CHIPS; engine.visible_devices_env overrides the default variable."""
    spec = CommandSpec(argv=("serve",))
    assert render(spec, context(device="TPU"))[1] == {"TPU_VISIBLE_CHIPS": "2,3"}
    assert render(CommandSpec(argv=("serve",), visible_devices_env="HIP_VISIBLE_DEVICES"), context())[1] == {
        "HIP_VISIBLE_DEVICES": "2,3"
    }
    assert render(spec, context(device="fancy_accelerator"))[1] == {}


def test_span_ranks_see_only_the_devices_on_the_process_node() -> None:
    """In span mode the process runs on the control node; {devices} and the variable list that node's devices."""
    ctx = context(devices=("0", "1", "0", "1"), device_ips=("10.0.0.3", "10.0.0.3", "10.0.0.4", "10.0.0.4"))
    argv, env = render(CommandSpec(argv=("x", "{devices}")), ctx)
    assert argv == ["x", "0,1"]
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1"}


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
        ("no_such_module.engines:Engine", "cannot import 'no_such_module.engines'"),
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


# --- real processes on the cluster ----------------------------------------------------------------------


def fake_vllm_config(
    directory: Path,
    name: str,
    *,
    ready: dict[str, str],
    dp: int = 2,
    tp: int = 1,
    pack: str = "strict",
    extra: tuple[str, ...] = (),
    **engine: Any,
) -> str:
    """configs/vllm-dp.yaml with `vllm` replaced by the stand-in server."""
    doc = yaml.safe_load((ROOT / "configs" / "vllm-dp.yaml").read_text())
    doc["name"] = name
    doc["placement"] = {"dp": dp, "tp": tp, "pack": pack}
    doc["engine"]["argv"] = [sys.executable, FAKE_VLLM, *doc["engine"]["argv"][1:], "--load-seconds", "0.4", *extra]
    doc["engine"]["ready"] = ready
    doc["engine"]["base_port"] = 0
    doc["engine"]["master_port"] = 0
    doc["engine"]["stop_grace"] = 5
    doc["engine"]["env"] = {"FAKE_VLLM_EXTRA": "rank {rank} of {dp}"}
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


def stand_ins() -> list[int]:
    """Pids of every stand-in server process on this machine (tests run one deployment at a time)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"fake_vllm.py" in cmdline:
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
            assert argv[argv.index("--data-parallel-rank") + 1] == str(rank["rank"])
            assert argv[argv.index("--data-parallel-size") + 1] == "2"
            assert argv[argv.index("--port") + 1] == str(rank["port"])
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
    config = fake_vllm_config(
        tmp_path, "crashy", ready={"http": "http://{node_ip}:{port}/health"}, extra=("--crash-after", "0.2")
    )
    result = dpctl("up", "-f", config)
    assert result.returncode == 4, result.stderr
    assert "exited with code 3 before it was ready; last log lines" in result.stderr
    assert "| ERROR EngineCore failed to start: CUDA out of memory (stand-in)" in result.stderr
    assert leftovers(live, "crashy") == []
    assert stand_ins() == [], "a crashed rank's sibling process was left running"


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
        assert "process exited with code -9" in states[1][1]

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
    config = fake_vllm_config(tmp_path, "shrinking", ready={"tcp": "{node_ip}:{port}"}, dp=3)
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
def test_span_rank_runs_one_process_on_its_control_node(live: LocalState, tmp_path: Path) -> None:
    """A span rank's process runs on its control node and sees that node's devices."""
    config = fake_vllm_config(
        tmp_path, "spanning", ready={"http": "http://{node_ip}:{port}/health"}, dp=1, tp=8, pack="span"
    )
    result = dpctl("up", "-f", config)
    assert result.returncode == 0, result.stderr
    try:
        (rank,) = ranks_of("spanning")
        assert len(set(rank["device_ips"])) == 2
        started = started_with(rank)
        here = [d for d, ip in zip(rank["devices"], rank["device_ips"], strict=True) if ip == rank["ip"]]
        assert started["cuda_visible_devices"] == ",".join(here)
        assert len(here) == 4
    finally:
        dpctl("down", "spanning")


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
