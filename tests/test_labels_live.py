"""Label-aware placement on a local cluster of its own whose workers carry labels (`cluster up --labels`).

Four workers of 2 simulated GPUs: zones a and b alternate by address, and so do racks r1 and r2, so that a
rank of TP 4 (two workers) placed in address order would mix racks; rank_within keeps each in one rack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dpctl_ray.launcher.objects import TOPOLOGY
from dpctl_ray.local import state as local_state
from tests.conftest import dpctl, dpctl_env

pytestmark = pytest.mark.ray

LABELS = {
    "worker-1": {"zone": "a", "rack": "r1"},
    "worker-2": {"zone": "b", "rack": "r2"},
    "worker-3": {"zone": "a", "rack": "r1"},
    "worker-4": {"zone": "b", "rack": "r2"},
}


def run(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """dpctl against the cluster of this module (its own DPCTL_HOME)."""
    return dpctl(*args, timeout=timeout, DPCTL_HOME=str(home))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("labels-home")
    labels = ",".join(f"{node}:{k}={v}" for node, pairs in LABELS.items() for k, v in pairs.items())
    started = run(base, "cluster", "up", "--nodes", "4", "--gpus-per-node", "2", "--labels", labels)
    assert started.returncode == 0, started.stderr
    yield base
    run(base, "cluster", "down")


def labels_by_ip(home: Path) -> dict[str, dict[str, str]]:
    nodes = json.loads(run(home, "cluster", "status", "-o", "json").stdout)["nodes"]
    return {n["ip"]: LABELS.get(n["name"], {}) for n in nodes}


def created_groups(home: Path) -> list[dict[str, Any]]:
    """What Ray itself holds for the deployment's live placement groups: each bundle's selector, the topology."""
    state = local_state.load_state_at(home)
    assert state is not None
    code = (
        "import json, ray\n"
        f"ray.init(address={state.address!r}, logging_level='ERROR')\n"
        "from ray._private import state\n"
        "from ray.core.generated import gcs_pb2\n"
        "out = []\n"
        "for raw in state.state._connect_and_get_accessor().get_placement_group_table():\n"
        "    d = gcs_pb2.PlacementGroupTableData.FromString(raw)\n"
        "    if d.state == gcs_pb2.PlacementGroupTableData.CREATED:\n"
        "        out.append({'name': d.name, 'selectors': [dict(b.label_selector) for b in d.bundles],\n"
        "                    'topology': sorted(dict(d.topology_strategy))})\n"
        "print(json.dumps(out))\n"
    )
    env = {**dpctl_env(), **state.env(), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    groups: list[dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return groups


def test_the_inventory_captures_the_nodes_labels(home: Path) -> None:
    """`dpctl inventory` writes each node's custom labels, as the planner reads them."""
    result = run(home, "inventory", "--format", "json")
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)["nodes"]
    by_ip = labels_by_ip(home)
    for node in nodes:
        expected = by_ip[node["ip"]]
        assert {k: node.get("labels", {}).get(k) for k in expected} == expected


def test_up_keeps_each_rank_in_one_rack_and_spreads_ranks_over_zones(home: Path) -> None:
    """up with rank_within and spread: status shows each span rank on one rack, the two ranks in two zones, and
    Ray holds every bundle to its rack with a topology strategy."""
    up = run(home, "up", "--name", "racks", "--dp", "2", "--tp", "4", "--pack", "span", "--rank-within", "rack")
    assert up.returncode == 0, up.stderr
    try:
        status = run(home, "status", "racks", "-o", "json")
        assert status.returncode == 0, status.stderr
        (deployment,) = json.loads(status.stdout)["deployments"]
        assert deployment["rank_within"] == "rack"
        assert "\nlabels: rank_within rack\n" in run(home, "status", "racks").stdout  # the table's title says it
        by_ip = labels_by_ip(home)
        racks = [{by_ip[ip]["rack"] for ip in r["device_ips"]} for r in deployment["ranks"]]
        assert all(len(r) == 1 for r in racks), racks
        assert all(len(set(r["device_ips"])) == 2 for r in deployment["ranks"])
        groups = sorted(created_groups(home), key=lambda g: g["name"])
        assert [g["name"] for g in groups] == ["dpctl/racks/pg-0", "dpctl/racks/pg-1"]
        for group, rack in zip(groups, racks, strict=True):
            assert {s["rack"] for s in group["selectors"]} == rack
            assert group["topology"] == (["rack"] if TOPOLOGY else [])
    finally:
        down = run(home, "down", "racks")
        assert down.returncode == 0, down.stderr


def test_spread_and_select_hold_through_a_scale_up(home: Path) -> None:
    """Strict ranks under spread alternate zones, select keeps them to the selected racks, and a scale-up keeps both."""
    up = run(home, "up", "--name", "zones", "--dp", "2", "--tp", "1", "--spread", "zone", "--select", "rack=in(r1,r2)")
    assert up.returncode == 0, up.stderr
    try:
        scaled = run(home, "scale", "zones", "--dp", "4")
        assert scaled.returncode == 0, scaled.stderr
        (deployment,) = json.loads(run(home, "status", "zones", "-o", "json").stdout)["deployments"]
        assert deployment["spread"] == "zone"
        assert deployment["select"] == {"rack": "in(r1,r2)"}
        by_ip = labels_by_ip(home)
        zones = [by_ip[r["ip"]]["zone"] for r in deployment["ranks"]]
        assert sorted(zones) == ["a", "a", "b", "b"]
        assert zones[0] != zones[1]  # the first two already spread, before the scale-up
        for group in created_groups(home):
            assert all(s["rack"] == "in(r1,r2)" for s in group["selectors"])
    finally:
        down = run(home, "down", "zones")
        assert down.returncode == 0, down.stderr
    assert created_groups(home) == []


def test_within_keeps_the_deployment_in_one_zone_and_ray_holds_it_there(home: Path) -> None:
    """up with within: every rank in the one zone chosen, each bundle selecting that zone, and a scale-up
    beyond the zone's capacity is refused (exit 3) without touching the running ranks."""
    up = run(home, "up", "--name", "inside", "--dp", "2", "--tp", "2", "--within", "zone")
    assert up.returncode == 0, up.stderr
    try:
        (deployment,) = json.loads(run(home, "status", "inside", "-o", "json").stdout)["deployments"]
        zone = deployment["within_value"]
        by_ip = labels_by_ip(home)
        assert {by_ip[r["ip"]]["zone"] for r in deployment["ranks"]} == {zone}
        for group in created_groups(home):
            assert all(s["zone"] == zone for s in group["selectors"])
        beyond = run(home, "scale", "inside", "--dp", "3")
        assert beyond.returncode == 3, beyond.stderr
        (after,) = json.loads(run(home, "status", "inside", "-o", "json").stdout)["deployments"]
        assert [r["since"] for r in after["ranks"]] == [r["since"] for r in deployment["ranks"]]
    finally:
        down = run(home, "down", "inside")
        assert down.returncode == 0, down.stderr
