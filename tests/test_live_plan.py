"""`dpctl inventory` and `dpctl plan` against the session's real multi-node Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dpctl_ray.local.state import LocalState
from tests.conftest import CLUSTER_SHAPE, Invoke, ray_driver

pytestmark = pytest.mark.ray


def test_inventory_captures_every_node_by_id(live_cli: Invoke, live: LocalState) -> None:
    """The inventory lists each alive node by Ray node id, with its ip, head flag, totals and free resources."""
    result = live_cli("inventory")
    assert result.exit_code == 0, result.output
    nodes = yaml.safe_load(result.stdout)["nodes"]
    assert len(nodes) == CLUSTER_SHAPE.nodes + 1
    heads = [n for n in nodes if n["head"]]
    assert len(heads) == 1
    workers = sorted((n for n in nodes if not n["head"]), key=lambda n: n["ip"])
    assert [n["ip"] for n in workers] == [f"127.0.0.{i + 2}" for i in range(CLUSTER_SHAPE.nodes)]
    for n in workers:
        assert len(n["id"]) == 56
        assert n["resources"]["GPU"] == CLUSTER_SHAPE.gpus_per_node
        assert n["available"]["GPU"] == CLUSTER_SHAPE.gpus_per_node
        assert not any(k.startswith("node:") for k in n["resources"])
    with ray_driver(live) as ray:
        assert {n["id"] for n in nodes} == {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def test_a_captured_inventory_plans_exactly_like_the_live_cluster(live_cli: Invoke, tmp_path: Path) -> None:
    """Planning against `dpctl inventory -o FILE` gives the same document, fingerprint included, as planning live."""
    captured = tmp_path / "cluster.json"
    result = live_cli("inventory", "-o", str(captured))
    assert result.exit_code == 0, result.output
    assert "wrote 5 nodes" in result.stderr
    args = ("plan", "--dp", "4", "--tp", "2", "-o", "json")
    live_doc = json.loads(live_cli(*args).stdout)
    offline_doc = json.loads(live_cli(*args, "--inventory", str(captured)).stdout)
    assert offline_doc == live_doc
    assert live_doc["spec"]["dp_local"] == 2
    assert all(r["nodes"][0] == live_doc["spec"]["master"] for r in live_doc["ranks"][:2])


def test_inventory_o_json_prints_json_as_other_commands_do(
    live_cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dpctl inventory -o json` prints the inventory as JSON on stdout and writes no file named json."""
    monkeypatch.chdir(tmp_path)
    result = live_cli("inventory", "-o", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["nodes"]) == CLUSTER_SHAPE.nodes + 1
    assert list(tmp_path.iterdir()) == []


def test_live_plan_counts_devices_another_job_holds(live_cli: Invoke, live: LocalState) -> None:
    """GPUs held by another placement group show as busy and are not planned on."""
    from ray.util.placement_group import placement_group, remove_placement_group

    with ray_driver(live) as ray:
        first = next(n for n in ray.nodes() if n["NodeManagerAddress"] == "127.0.0.2")
        pg = placement_group(
            [{"GPU": 3}],
            strategy="STRICT_PACK",
            name="test-squatter",
            lifetime="detached",
            bundle_label_selector=[{"ray.io/node-id": first["NodeID"]}],
        )
        ray.get(pg.ready(), timeout=30)
    try:
        doc = json.loads(live_cli("plan", "--dp", "4", "--tp", "2", "--pack", "fill", "-o", "json").stdout)
        squatted = next(n for n in doc["nodes"] if n["ip"] == "127.0.0.2")
        assert squatted["available"]["GPU"] == 1
        assert squatted["planned"]["GPU"] == 0
        table = live_cli("plan", "--dp", "4", "--tp", "2", "--pack", "fill")
        assert "x x x ·" in table.stdout
    finally:
        with ray_driver(live):
            remove_placement_group(pg)


def test_live_plan_finds_the_cluster_by_address_flag(
    live_cli: Invoke, live: LocalState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--address reaches the cluster even when no local-cluster record is found."""
    monkeypatch.setenv("DPCTL_HOME", "/nonexistent-dpctl-home")
    result = live_cli("plan", "--address", live.address, "--dp", "1", "--tp", "4", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ranks"][0]["strategy"] == "STRICT_PACK"


def test_live_infeasible_is_exit_3(live_cli: Invoke) -> None:
    """Asking the live cluster for more than it has is exit 3 with the causes, not a hang."""
    result = live_cli("plan", "--dp", "3", "--tp", "8")
    assert result.exit_code == 3, result.output
    assert "dpctl: error: the master" in result.stderr
    assert "cannot host 1 rank (dp_local): needs 8 GPU + 1 CPU, has 4 GPU" in result.stderr
