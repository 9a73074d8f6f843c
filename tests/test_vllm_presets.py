"""The vLLM presets render exactly what vLLM 0.33 accepts, and the stand-in refuses what vLLM refuses (no Ray).

Each preset is planned on a fixed inventory; its processes are rendered with known device ids and ports
(as the hosts would report them) and checked flag by flag. The stand-in (tests/fake_vllm.py) then parses
each rendered command line the way vLLM would, and refuses the commands vLLM refuses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from dpctl_ray.config import load_config
from dpctl_ray.engines.processes import Command, Granted, commands
from dpctl_ray.engines.spec import CommandSpec
from dpctl_ray.planner import Node, Plan, PlanRequest, plan
from tests.conftest import ROOT

FAKE_VLLM = str(ROOT / "tests" / "fake_vllm.py")
# Three nodes of 8 GPUs, ids as the node would report them.
NODES = tuple(Node(f"n{i}", f"10.0.0.{i + 2}", False, {"GPU": 8, "CPU": 64}, {"GPU": 8, "CPU": 64}) for i in range(3))


def rendered(preset: str, **placement: Any) -> tuple[Plan, list[Command]]:
    """A preset's processes on NODES, with each host's devices numbered from 0 on its node and port 9000+rank."""
    config = load_config(str(ROOT / "configs" / f"{preset}.yaml"))
    spec = config.engine
    assert isinstance(spec, CommandSpec)
    result = plan(PlanRequest(config.name, replace(config.placement, **placement), NODES))
    assert isinstance(result, Plan)
    devices, ports, used = {}, {}, dict.fromkeys((n.id for n in NODES), 0)
    for r in result.ranks:
        for k, (node, count) in enumerate(zip(r.nodes, r.devices, strict=True)):
            devices[(r.rank, k)] = tuple(str(used[node] + i) for i in range(count))
            used[node] += count
            ports[(r.rank, k)] = 9000 + r.rank
    return result, commands(result, spec, Granted(devices, ports), 13345)


def flags(argv: tuple[str, ...]) -> dict[str, str]:
    """Flag -> value (True for a bare flag) of an argv after `vllm serve MODEL`."""
    out: dict[str, Any] = {}
    rest = list(argv[3:])
    while rest:
        flag = rest.pop(0)
        out[flag] = rest.pop(0) if rest and not rest[0].startswith("--") else True
    return out


PARALLEL = ("--tensor-parallel-size", "1", "--pipeline-parallel-size", "1")


def test_dense_replicas_have_no_data_parallel_flags() -> None:
    """vllm-dense: one server per rank on its own port and devices, without --data-parallel-* (dense refuses them)."""
    _, procs = rendered("vllm-dense")
    assert [c.slot.ranks for c in procs] == [(0,), (1,)]
    assert [c.argv for c in procs] == [
        ("vllm", "serve", "Qwen/Qwen3-8B", "--host", "10.0.0.2", "--port", str(9000 + r), *PARALLEL) for r in (0, 1)
    ]
    assert [dict(c.env) for c in procs] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]


def test_moe_external_lb_gives_each_rank_its_rank_and_rank_0s_address() -> None:
    """vllm-moe-external-lb: a server per rank with --data-parallel-rank R, all pointing at rank 0's RPC port."""
    _, procs = rendered("vllm-moe-external-lb")
    for rank, command in enumerate(procs):
        f = flags(command.argv)
        assert (f["--data-parallel-size"], f["--data-parallel-rank"]) == ("4", str(rank))
        assert (f["--data-parallel-address"], f["--data-parallel-rpc-port"]) == ("10.0.0.2", "13345")
        assert "--data-parallel-size-local" not in f
        assert dict(command.env)["CUDA_VISIBLE_DEVICES"] == f"{2 * rank},{2 * rank + 1}"


def test_moe_hybrid_lb_runs_one_process_per_node_with_its_ranks_devices_in_order() -> None:
    """vllm-moe-hybrid-lb: a process per node, its size-local and start rank, its ranks' devices as --device-ids."""
    _, procs = rendered("vllm-moe-hybrid-lb")
    assert [(c.slot.node, c.slot.ranks) for c in procs] == [("n0", (0, 1)), ("n1", (2, 3))]
    for command, start in zip(procs, (0, 2), strict=True):
        f = flags(command.argv)
        assert f["--data-parallel-size-local"] == "2"
        assert f["--data-parallel-start-rank"] == str(start)
        assert f["--device-ids"] == "0,1,2,3"  # local rank 0's two devices, then local rank 1's
        assert "--headless" not in f
        assert dict(command.env) == {}  # nothing narrows what the process sees: --device-ids picks
        assert command.unset == ("CUDA_VISIBLE_DEVICES",)


def test_moe_internal_lb_serves_on_rank_0s_node_only() -> None:
    """vllm-moe-internal-lb: rank 0's node serves; every other node runs --headless with its start rank."""
    _, procs = rendered("vllm-moe-internal-lb")
    first, other = (flags(c.argv) for c in procs)
    assert "--headless" not in first
    assert "--data-parallel-start-rank" not in first
    assert (other["--headless"], other["--data-parallel-start-rank"]) == (True, "2")
    assert [c.ready is not None for c in procs] == [True, False]
    assert [dict(c.env)["CUDA_VISIBLE_DEVICES"] for c in procs] == ["0,1,2,3", "0,1,2,3"]


def test_multinode_rank_runs_a_process_per_node_the_first_serving() -> None:
    """vllm-multinode: TP 16 over two nodes, --nnodes 2, --node-rank 0/1, both pointing at the rank's first node."""
    _, procs = rendered("vllm-multinode")
    assert [(c.slot.node, c.slot.node_rank) for c in procs] == [("n0", 0), ("n1", 1)]
    first, second = (flags(c.argv) for c in procs)
    for f, node_rank in ((first, "0"), (second, "1")):
        assert (f["--nnodes"], f["--node-rank"]) == ("2", node_rank)
        assert (f["--master-addr"], f["--master-port"]) == ("10.0.0.2", "13345")
    assert "--headless" not in first
    assert second["--headless"] is True
    assert [dict(c.env)["CUDA_VISIBLE_DEVICES"] for c in procs] == [",".join(map(str, range(8)))] * 2


def test_devices_by_env_name_or_on_the_command_line() -> None:
    """TPUs get TPU_VISIBLE_CHIPS; visible_devices_env names another variable; `none` leaves them to the argv."""
    base = load_config(str(ROOT / "configs" / "vllm-dense.yaml")).engine
    assert isinstance(base, CommandSpec)
    result = plan(PlanRequest("d", replace(load_config(str(ROOT / "configs" / "vllm-dense.yaml")).placement), NODES))
    assert isinstance(result, Plan)
    granted = Granted({(0, 0): ("3",), (1, 0): ("4",)}, {})
    tpu = plan(
        PlanRequest(
            "t",
            replace(result.spec, device="TPU"),
            tuple(replace(n, resources={"TPU": 4, "CPU": 8}, available={"TPU": 4, "CPU": 8}) for n in NODES),
        )
    )
    assert isinstance(tpu, Plan)
    assert dict(commands(tpu, base, granted, 1)[0].env) == {"TPU_VISIBLE_CHIPS": "3"}
    hip = replace(base, visible_devices_env="HIP_VISIBLE_DEVICES")
    assert dict(commands(result, hip, granted, 1)[0].env) == {"HIP_VISIBLE_DEVICES": "3"}
    none = replace(base, visible_devices_env="none", argv=(*base.argv, "--device-ids", "{devices}"))
    command = commands(result, none, granted, 1)[0]
    assert (dict(command.env), command.unset, command.argv[-1]) == ({}, ("CUDA_VISIBLE_DEVICES",), "3")


def stand_in(argv: tuple[str, ...], **env: str) -> subprocess.CompletedProcess[str]:
    """The stand-in's answer to a command line (it exits at its first refusal, before loading)."""
    environ = {**os.environ, "FAKE_VLLM_LOAD_SECONDS": "0", "FAKE_VLLM_HANDSHAKE_SECONDS": "0.3", **env}
    return subprocess.run(
        [sys.executable, FAKE_VLLM, *argv[1:]], capture_output=True, text=True, env=environ, timeout=30, check=False
    )


def test_the_stand_in_refuses_the_old_dense_preset() -> None:
    """The command the old vllm-dp.yaml rendered (a dense model with external-LB flags) is what vLLM refuses."""
    old = ("vllm", "serve", "Qwen/Qwen3-0.6B", "--port", "8001", "--data-parallel-size", "2")
    old += ("--data-parallel-rank", "1", "--data-parallel-address", "10.0.0.2", "--data-parallel-rpc-port", "13345")
    result = stand_in(old, CUDA_VISIBLE_DEVICES="1")
    assert result.returncode == 1
    assert "Non-MoE models do not support external data parallel mode" in result.stdout


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("--data-parallel-size", "4", "--data-parallel-rank", "4"), "must be in the range [0, 4)"),
        (
            ("-dp", "4", "--data-parallel-rank", "1", "--data-parallel-size-local", "2"),
            "requires `--data-parallel-size-local 1`",
        ),
        (("-dp", "4", "--data-parallel-rank", "1", "--data-parallel-start-rank", "1"), "Only one load-balancing mode"),
        (
            ("-dp", "4", "--data-parallel-hybrid-lb"),
            "`--data-parallel-hybrid-lb` requires `--data-parallel-size-local`",
        ),
        (
            (
                "-tp",
                "4",
            ),
            "world size (4) is larger than the number of visible devices (2)",
        ),
        (("-tp", "8", "--nnodes", "3"), "`--nnodes 3` must evenly divide the total world size (8)"),
        (("-tp", "8", "--nnodes", "2", "--node-rank", "2"), "`--node-rank` must be between 0 and 1"),
        (
            (
                "--device-ids",
                "0,0",
            ),
            "--device-ids must not contain duplicates",
        ),
        (
            (
                "--device-ids",
                "5",
            ),
            "--device-ids index 5 is out of range for CUDA_VISIBLE_DEVICES=2,3",
        ),
        (("--bogus-flag",), "unrecognized arguments: --bogus-flag"),
    ],
    ids=[
        "rank-range",
        "external-size-local",
        "two-lb-modes",
        "hybrid-without-local",
        "devices",
        "nnodes-divides",
        "node-rank-range",
        "duplicate-ids",
        "ids-out-of-range",
        "unknown-flag",
    ],
)
def test_the_stand_in_refuses_what_vllm_refuses(argv: tuple[str, ...], words: str) -> None:
    """Each of vLLM 0.33's refusals, on a MoE model with two devices visible."""
    result = stand_in(("vllm", "serve", "Qwen/Qwen3-30B-A3B", *argv), CUDA_VISIBLE_DEVICES="2,3")
    assert result.returncode != 0
    assert words in result.stdout + result.stderr


def test_the_stand_in_refuses_expert_parallel_for_a_dense_model() -> None:
    """--enable-expert-parallel needs experts."""
    result = stand_in(("vllm", "serve", "Qwen/Qwen3-8B", "--enable-expert-parallel"), CUDA_VISIBLE_DEVICES="0")
    assert result.returncode == 1
    assert "Number of experts in the model must be greater than 0" in result.stdout


def test_a_rank_that_comes_after_the_group_started_is_refused() -> None:
    """Rank 0 listens for its group only while it starts: a rank with no group to join gives up, as vLLM's does."""
    late = ("vllm", "serve", "Qwen/Qwen3-30B-A3B", "-dp", "4", "--data-parallel-rank", "3")
    late += ("--data-parallel-address", "127.0.0.1", "--data-parallel-rpc-port", "1")
    result = stand_in(late, CUDA_VISIBLE_DEVICES="0")
    assert result.returncode == 1
    assert "timed out waiting for the handshake at 127.0.0.1:1" in result.stdout


@pytest.mark.parametrize(
    "preset", ["vllm-dense", "vllm-moe-external-lb", "vllm-moe-hybrid-lb", "vllm-moe-internal-lb", "vllm-multinode"]
)
def test_every_preset_command_parses_as_vllm_would(preset: str) -> None:
    """Each rendered command line passes vLLM's flag parsing and option checks (the stand-in's, up to the handshake)."""
    _, procs = rendered(preset)
    for command in procs:
        env = dict(command.env)
        env.setdefault("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
        if command.unset:
            env["CUDA_VISIBLE_DEVICES"] = ""
        result = stand_in(command.argv, FAKE_VLLM_CRASH_AFTER="0", **env)
        assert result.returncode == 3, (command.argv, result.stdout + result.stderr)  # it got as far as loading
