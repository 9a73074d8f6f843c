"""Both bundle layouts on the real cluster: the devices each rank holds, the processes that hold them, and scale.

per_node: one bundle per node of a rank, claimed by the rank's host on that node (one Ray actor per
rank-node). per_device: the seed's layout, one bundle per device plus the control bundle, a device worker
actor on each device bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dpctl_ray.local.state import LocalState
from tests.conftest import demo_config, dpctl, leftovers, ray_driver
from tests.test_engines import fake_vllm_config, ranks_of, stand_ins, started_with
from tests.test_scale import expect_ranks, scale

pytestmark = pytest.mark.ray
LAYOUTS = ["per_node", "per_device"]


def actors_in_groups(state: LocalState, name: str) -> list[dict[str, Any]]:
    """Every live Ray actor scheduled in one of the deployment's placement groups: class, pid, group.

    Read from the GCS actor table (the test cluster runs no dashboard for the state API).
    """
    import ray._private.state
    from ray._common.utils import binary_to_hex
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import placement_group_table

    with ray_driver(state):
        groups = {
            pg_id: info["name"]
            for pg_id, info in placement_group_table().items()
            if info["name"].startswith(f"dpctl/{name}/") and info["state"] != "REMOVED"
        }
        table = ray._private.state.state._connect_and_get_accessor().get_actor_table(None, "ALIVE")
    actors = [gcs_pb2.ActorTableData.FromString(raw) for raw in table]
    return [
        {"class": a.class_name, "pid": a.pid, "group": groups[binary_to_hex(a.placement_group_id)]}
        for a in actors
        if binary_to_hex(a.placement_group_id) in groups
    ]


def check_devices(ranks: list[dict[str, Any]], world_size: int) -> None:
    """Each rank holds world_size device ids, none held twice on a node (by it or another rank)."""
    held: dict[str, list[str]] = {}
    for rank in ranks:
        assert len(rank["devices"]) == world_size, rank
        assert len(rank["device_ips"]) == world_size, rank
        for device, ip in zip(rank["devices"], rank["device_ips"], strict=True):
            assert device != "", rank
            held.setdefault(ip, []).append(device)
    for ip, devices in held.items():
        assert len(devices) == len(set(devices)), f"a device on {ip} was granted twice: {sorted(devices)}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_rank_holds_distinct_complete_devices_in_both_layouts(
    live: LocalState, tmp_path: Path, layout: str
) -> None:
    """dp 6 of TP 2 over 3 nodes: every rank holds its 2 devices; per_node costs one actor per rank, no workers."""
    name = f"lay-{layout.replace('_', '-')}"
    config = demo_config(tmp_path, name, dp=6, tp=2, bundles=layout)
    result = dpctl("up", "-f", config)
    assert result.returncode == 0, result.stderr
    try:
        ranks = ranks_of(name)
        assert [r["state"] for r in ranks] == ["READY"] * 6
        check_devices(ranks, 2)
        actors = actors_in_groups(live, name)
        classes = sorted(a["class"] for a in actors)
        if layout == "per_node":
            assert classes == ["EngineHost"] * 6, "per_node: one Ray actor per rank on one node, nothing else"
        else:
            assert classes == ["DeviceWorker"] * 12 + ["EngineHost"] * 6
        assert len({a["pid"] for a in actors}) == len(actors), "every actor is its own process"
        status = json.loads(dpctl("status", name, "-o", "json").stdout)["deployments"][0]
        assert status["bundles"] == layout
    finally:
        dpctl("down", name)
    assert leftovers(live, name) == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_span_ranks_get_one_host_per_node_in_both_layouts(live: LocalState, tmp_path: Path, layout: str) -> None:
    """A TP-8 span rank over two 4-GPU nodes: a host on each node, holding that node's 4 devices; scale adds one."""
    name = f"span-{layout.replace('_', '-')}"
    config = demo_config(tmp_path, name, dp=1, tp=8, pack="span", bundles=layout)
    assert dpctl("up", "-f", config).returncode == 0
    try:
        expect_ranks(live, name, 1, nodes=2)
        hosts = [a for a in actors_in_groups(live, name) if a["class"] == "EngineHost"]
        assert len(hosts) == 2
        scale(name, 2)
        expect_ranks(live, name, 2, nodes=2)
        ranks = ranks_of(name)
        check_devices(ranks, 8)
        for rank in ranks:
            per_ip = {ip: rank["device_ips"].count(ip) for ip in rank["device_ips"]}
            assert sorted(per_ip.values()) == [4, 4], rank
        owned = actors_in_groups(live, name)
        assert len([a for a in owned if a["class"] == "EngineHost"]) == 4
        assert len(owned) == (4 if layout == "per_node" else 4 + 16)
    finally:
        dpctl("down", name)
    assert leftovers(live, name) == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_command_process_sees_exactly_its_devices_in_both_layouts(
    live: LocalState, tmp_path: Path, layout: str
) -> None:
    """Each vLLM server of a TP-2 rank sees exactly the 2 devices its rank holds, in CUDA_VISIBLE_DEVICES."""
    name = f"see-{layout.replace('_', '-')}"
    config = fake_vllm_config(tmp_path, name, placement={"dp": 3, "tp": 2, "bundles": layout})
    result = dpctl("up", "-f", config)
    assert result.returncode == 0, result.stderr
    try:
        ranks = ranks_of(name)
        check_devices(ranks, 2)
        for rank in ranks:
            started = started_with(rank)
            assert started["cuda_visible_devices"] == ",".join(rank["devices"])
            assert started["devices"] == rank["devices"]
    finally:
        dpctl("down", name)
    assert leftovers(live, name) == []
    assert stand_ins(name) == []


def test_a_per_device_python_engine_runs_its_work_in_each_devices_process(live: LocalState, tmp_path: Path) -> None:
    """A python engine declaring per_device gets a worker per device: each sees exactly its one device."""
    name = "own-workers"
    path = tmp_path / "own.yaml"
    doc = {
        "name": name,
        "placement": {"dp": 2, "tp": 2},
        "engine": {"kind": "python", "class": "tests.engines_for_tests:PerDevice"},
        "timeouts": {"placement": 30, "ready": 60},
    }
    path.write_text(json.dumps(doc))
    result = dpctl("up", "-f", str(path))
    assert result.returncode == 0, result.stderr
    try:
        ranks = ranks_of(name)
        for rank in ranks:
            views = json.loads(rank["detail"])
            assert [v["ids"] for v in views] == [[d] for d in rank["devices"]]
            assert [v["visible"] for v in views] == rank["devices"]
        pids = [v["pid"] for rank in ranks for v in json.loads(rank["detail"])]
        assert len(set(pids)) == 4
    finally:
        dpctl("down", name)
    assert leftovers(live, name) == []
