"""Every vLLM preset on the real cluster through the strict stand-in: up, status, scale in its coupling, down.

Independent ranks (dense replicas, multi-node ranks) scale without touching the running ones. A group (MoE
data parallelism in every load-balancing mode) restarts every process at the new size on the placement
groups it keeps; a failed restart brings it back at its old size; a process that dies fails the group.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from dpctl_ray.local.state import LocalState
from tests.conftest import dpctl, dpctl_background, leftovers, ray_driver, wait_for
from tests.test_engines import alive, fake_vllm_config, stand_ins, started_with
from tests.test_scale import identities

pytestmark = pytest.mark.ray


def status_of(name: str) -> dict[str, Any]:
    result = dpctl("status", name, "-o", "json")
    assert result.returncode == 0, result.stderr
    deployment: dict[str, Any] = json.loads(result.stdout)["deployments"][0]
    return deployment


def groups_of(state: LocalState, name: str) -> dict[str, str]:
    """Placement group name -> id, for the deployment's groups not removed."""
    from ray.util.placement_group import placement_group_table

    with ray_driver(state):
        return {
            info["name"]: pg_id
            for pg_id, info in placement_group_table().items()
            if info["name"].startswith(f"dpctl/{name}/") and info["state"] != "REMOVED"
        }


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def served(process: dict[str, Any]) -> dict[str, Any]:
    """What an API process was started with (GET /dpctl-test on its port)."""
    port = flag(process["argv"], "--port")
    return started_with({"ip": process["ip"], "port": port})


def ready_at(name: str, dp: int) -> dict[str, Any]:
    """The deployment is running at dp ranks, all READY; its status."""
    status = status_of(name)
    assert (status["state"], status["dp"]) == ("running", dp)
    assert [(r["rank"], r["state"]) for r in status["ranks"]] == [(r, "READY") for r in range(dp)], status["ranks"]
    return status


def down_leaves_nothing(state: LocalState, name: str) -> None:
    result = dpctl("down", name)
    assert result.returncode == 0, result.stderr
    assert leftovers(state, name) == []
    assert stand_ins(name) == [], "a stand-in process outlived `down`"


def test_dense_replicas_scale_without_touching_running_ranks(live: LocalState, tmp_path: Path) -> None:
    """vllm-dense: 2 -> 3 -> 1 replicas; the running ranks keep their host actors, processes and devices."""
    name = "v-dense"
    assert dpctl("up", "-f", fake_vllm_config(tmp_path, name)).returncode == 0
    try:
        status = ready_at(name, 2)
        assert [p["ranks"] for p in status["processes"]] == [[0], [1]]
        assert all(not any(a.startswith("--data-parallel") for a in p["argv"]) for p in status["processes"])
        before = identities(live, name)
        pids = {r["rank"]: r["process_pid"] for r in status["ranks"]}

        result = dpctl("scale", name, "--dp", "3")
        assert result.returncode == 0, result.stderr
        assert "the others kept running" in result.stderr
        status = ready_at(name, 3)
        after = identities(live, name)
        assert {r: after[r][:4] for r in (0, 1)} == {r: before[r][:4] for r in (0, 1)}
        assert {r["rank"]: r["process_pid"] for r in status["ranks"] if r["rank"] < 2} == pids

        assert dpctl("scale", name, "--dp", "1").returncode == 0
        status = ready_at(name, 1)
        assert status["ranks"][0]["process_pid"] == pids[0]
        assert not alive(pids[1])
    finally:
        down_leaves_nothing(live, name)


def test_moe_external_lb_group_scale_restarts_every_process_on_the_groups_it_keeps(
    live: LocalState, tmp_path: Path
) -> None:
    """vllm-moe-external-lb 2 -> 3 -> 2: each scale restarts every process with the new size on the same groups."""
    name = "v-ext"
    config = fake_vllm_config(tmp_path, name, preset="vllm-moe-external-lb", placement={"dp": 2, "tp": 1})
    assert dpctl("up", "-f", config).returncode == 0
    try:
        status = ready_at(name, 2)
        groups = groups_of(live, name)
        hosts = identities(live, name)
        pids = [p["pid"] for p in status["processes"]]

        dry = dpctl("scale", name, "--dp", "3", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "restart every running rank (group coupling)" in dry.stdout
        assert "every running rank's process restarts with dp 3" in dry.stderr
        assert [p["pid"] for p in status_of(name)["processes"]] == pids

        result = dpctl("scale", name, "--dp", "3")
        assert result.returncode == 0, result.stderr
        assert "restarted the group at 3 ranks" in result.stderr
        status = ready_at(name, 3)
        assert {k: v for k, v in groups_of(live, name).items() if k in groups} == groups
        assert {r: identities(live, name)[r][:2] for r in (0, 1)} == {r: hosts[r][:2] for r in (0, 1)}
        assert not any(alive(pid) for pid in pids), "a process of the old group kept running"
        for process in status["processes"]:
            assert flag(process["argv"], "--data-parallel-size") == "3"
            assert served(process)["argv"] == process["argv"][2:]  # after `python fake_vllm.py`

        assert dpctl("scale", name, "--dp", "2").returncode == 0
        status = ready_at(name, 2)
        assert groups_of(live, name) == groups
        assert [flag(p["argv"], "--data-parallel-size") for p in status["processes"]] == ["2", "2"]
    finally:
        down_leaves_nothing(live, name)


def test_moe_hybrid_lb_runs_a_process_per_node_and_grows_from_4_to_6(live: LocalState, tmp_path: Path) -> None:
    """vllm-moe-hybrid-lb: a process per node sees its ranks' devices in order; 4 -> 6 adds a node's process."""
    name = "v-hybrid"
    config = fake_vllm_config(tmp_path, name, preset="vllm-moe-hybrid-lb")
    assert dpctl("up", "-f", config).returncode == 0
    try:
        status = ready_at(name, 4)
        self_check_hybrid(status, 4)
        groups = groups_of(live, name)

        result = dpctl("scale", name, "--dp", "6")
        assert result.returncode == 0, result.stderr
        status = ready_at(name, 6)
        self_check_hybrid(status, 6)
        assert {k: v for k, v in groups_of(live, name).items() if k in groups} == groups
    finally:
        down_leaves_nothing(live, name)


def self_check_hybrid(status: dict[str, Any], dp: int) -> None:
    """One serving process per node for its 2 ranks, whose devices it sees through --device-ids in rank order."""
    ranks = {r["rank"]: r for r in status["ranks"]}
    assert [p["ranks"] for p in status["processes"]] == [[r, r + 1] for r in range(0, dp, 2)]
    for process in status["processes"]:
        mine = [d for r in process["ranks"] for d in ranks[r]["devices"]]
        assert flag(process["argv"], "--device-ids") == ",".join(mine)
        assert "CUDA_VISIBLE_DEVICES" not in process["env"]
        started = served(process)
        assert started["devices"] == mine
        assert started["cuda_visible_devices"] is None, "the host's own CUDA_VISIBLE_DEVICES leaked into the process"
        assert flag(process["argv"], "--data-parallel-start-rank") == str(process["ranks"][0])
        assert flag(process["argv"], "--data-parallel-size") == str(dp)


def test_moe_internal_lb_serves_on_rank_0s_node_and_shrinks_from_4_to_2(live: LocalState, tmp_path: Path) -> None:
    """vllm-moe-internal-lb: rank 0's node serves, the other runs headless; 4 -> 2 leaves one serving process."""
    name = "v-internal"
    config = fake_vllm_config(tmp_path, name, preset="vllm-moe-internal-lb")
    assert dpctl("up", "-f", config).returncode == 0
    try:
        status = ready_at(name, 4)
        api, headless = status["processes"]
        assert (api["ranks"], api["api"], headless["ranks"], headless["api"]) == ([0, 1], True, [2, 3], False)
        assert "--headless" in headless["argv"]
        assert flag(headless["argv"], "--data-parallel-start-rank") == "2"
        assert served(api)["ranks"] == [0, 1]
        assert [r["port"] for r in status["ranks"][:2]] == [int(flag(api["argv"], "--port"))] * 2

        result = dpctl("scale", name, "--dp", "2")
        assert result.returncode == 0, result.stderr
        status = ready_at(name, 2)
        (only,) = status["processes"]
        assert (only["ranks"], only["api"]) == ([0, 1], True)
        assert sorted(groups_of(live, name)) == [f"dpctl/{name}/pg-0", f"dpctl/{name}/pg-1"]
    finally:
        down_leaves_nothing(live, name)


def test_multinode_ranks_run_a_process_per_node_and_scale_alone(live: LocalState, tmp_path: Path) -> None:
    """vllm-multinode (TP 8 over two 4-GPU nodes): node 0 serves, node 1 is headless; a second rank leaves rank 0 be."""
    name = "v-multi"
    config = fake_vllm_config(tmp_path, name, preset="vllm-multinode", placement={"tp": 8})
    assert dpctl("up", "-f", config).returncode == 0
    try:
        status = ready_at(name, 1)
        first, second = status["processes"]
        assert (first["api"], second["api"]) == (True, False)
        assert [flag(p["argv"], "--node-rank") for p in (first, second)] == ["0", "1"]
        assert flag(second["argv"], "--master-addr") == first["ip"] != second["ip"]
        assert "--headless" in second["argv"]
        (rank,) = status["ranks"]
        here = [d for d, ip in zip(rank["devices"], rank["device_ips"], strict=True) if ip == first["ip"]]
        assert served(first)["cuda_visible_devices"] == ",".join(here)
        there = [d for d, ip in zip(rank["devices"], rank["device_ips"], strict=True) if ip == second["ip"]]
        assert second["env"]["CUDA_VISIBLE_DEVICES"] == ",".join(there)
        assert len(here) == len(there) == 4
        pids = [p["pid"] for p in status["processes"]]

        assert dpctl("scale", name, "--dp", "2").returncode == 0
        status = ready_at(name, 2)
        assert [p["pid"] for p in status["processes"] if p["ranks"] == [0]] == pids
        assert len(status["processes"]) == 4
    finally:
        down_leaves_nothing(live, name)


def test_a_crashed_process_fails_the_whole_group_and_repair_restarts_it(live: LocalState, tmp_path: Path) -> None:
    """Killing one rank's process in a group makes every rank FAILED, naming it; `repair` restarts the group."""
    name = "v-crash"
    config = fake_vllm_config(tmp_path, name, preset="vllm-moe-external-lb", placement={"dp": 3, "tp": 1})
    assert dpctl("up", "-f", config).returncode == 0
    try:
        status = ready_at(name, 3)
        victim = next(p for p in status["processes"] if p["ranks"] == [2])
        os.kill(victim["pid"], signal.SIGKILL)

        def failed() -> dict[str, Any] | None:
            now = status_of(name)
            return now if all(r["state"] == "FAILED" for r in now["ranks"]) else None

        ranks = wait_for(failed, timeout=30)["ranks"]
        for rank in ranks:
            assert (
                f"the process of ranks 2 on {victim['ip']} failed: process {victim['pid']} crashed while serving "
                "(killed by SIGKILL)"
            ) in rank["detail"]

        # `repair` restarts the whole group (its ranks are coupled): every process new, at the same size.
        repaired = dpctl("repair", name)
        assert repaired.returncode == 0, repaired.stderr
        assert "repaired 3 ranks" in repaired.stderr
        assert "the group restarted" in repaired.stderr
        after = ready_at(name, 3)
        assert not {p["pid"] for p in status["processes"]} & {p["pid"] for p in after["processes"]}
        assert [flag(p["argv"], "--data-parallel-size") for p in after["processes"]] == ["3", "3", "3"]
    finally:
        down_leaves_nothing(live, name)


def test_a_failed_group_restart_brings_the_group_back_at_its_old_size(live: LocalState, tmp_path: Path) -> None:
    """A group that cannot start at the new size (exit 4) restarts at its old size on its groups; nothing is left."""
    name = "v-nofit"
    config = fake_vllm_config(
        tmp_path, name, preset="vllm-moe-external-lb", placement={"dp": 2, "tp": 1}, knobs={"crash_at_dp": "3"}
    )
    assert dpctl("up", "-f", config).returncode == 0
    try:
        groups = groups_of(live, name)
        result = dpctl("scale", name, "--dp", "3")
        assert result.returncode == 4, result.stderr
        assert f"{name} restarted at its old size of 2 ranks: the group could not start at 3 ranks" in result.stderr
        assert "crashed before it was ready (exit code 3)" in result.stderr
        status = ready_at(name, 2)
        assert groups_of(live, name) == groups
        assert [flag(p["argv"], "--data-parallel-size") for p in status["processes"]] == ["2", "2"]
    finally:
        down_leaves_nothing(live, name)


def test_a_group_that_cannot_restart_at_all_says_so_and_the_next_scale_recovers(
    live: LocalState, tmp_path: Path
) -> None:
    """Failing at the new and the old size leaves the group down, said plainly; a scale once fixed restarts it."""
    name = "v-down"
    fault = tmp_path / "fault"
    config = fake_vllm_config(
        tmp_path,
        name,
        preset="vllm-moe-external-lb",
        placement={"dp": 2, "tp": 1},
        knobs={"crash_if_exists": str(fault)},
    )
    assert dpctl("up", "-f", config).returncode == 0
    try:
        groups = groups_of(live, name)
        fault.touch()
        result = dpctl("scale", name, "--dp", "3")
        assert result.returncode == 4, result.stderr
        assert f"{name} could not restart at its 2 ranks either and is down" in result.stderr
        status = status_of(name)
        assert status["state"] == "failed"
        assert [r["state"] for r in status["ranks"]] == ["FAILED", "FAILED"]
        assert "the group is down after a failed restart" in status["ranks"][0]["detail"]
        assert groups_of(live, name) == groups, "the group's placement groups are kept while it is down"
        assert stand_ins(name) == []

        fault.unlink()
        again = dpctl("scale", name, "--dp", "2")
        assert again.returncode == 0, again.stderr
        assert "restarted the group at 2 ranks" in again.stderr
        ready_at(name, 2)
        assert groups_of(live, name) == groups
    finally:
        down_leaves_nothing(live, name)


def test_status_shows_the_group_restarting(live: LocalState, tmp_path: Path) -> None:
    """While a group restarts, status says `restarting` for the deployment; it ends running at the new size."""
    name = "v-phase"
    config = fake_vllm_config(
        tmp_path, name, preset="vllm-moe-external-lb", placement={"dp": 2, "tp": 1}, knobs={"load_seconds": "3"}
    )
    assert dpctl("up", "-f", config).returncode == 0
    try:
        scaling = dpctl_background("scale", name, "--dp", "1")
        seen = wait_for(lambda: status_of(name)["state"] == "restarting", timeout=30)
        assert seen
        _, err = scaling.communicate(timeout=120)
        assert scaling.returncode == 0, err
        ready_at(name, 1)
    finally:
        down_leaves_nothing(live, name)


def test_a_group_grows_onto_a_started_spare_whose_host_becomes_the_rank(live: LocalState, tmp_path: Path) -> None:
    """A group-coupled scale-up takes a started spare: the group restarts at the new size, the new rank on the
    spare's own host (its log says so), and `down` leaves nothing."""
    name = "v-spare"
    placement = {"dp": 2, "tp": 1, "spares": 1, "spares_mode": "started"}
    config = fake_vllm_config(tmp_path, name, preset="vllm-moe-external-lb", placement=placement)
    up = dpctl("up", "-f", config)
    assert up.returncode == 0, up.stderr
    try:
        (spare,) = ready_at(name, 2)["spares"]
        assert spare["state"] == "started"
        grown = dpctl("scale", name, "--dp", "3")
        assert grown.returncode == 0, grown.stderr
        assert "2 onto spare 0" in grown.stderr
        after = ready_at(name, 3)
        assert [flag(p["argv"], "--data-parallel-size") for p in after["processes"]] == ["3", "3", "3"]
        assert after["ranks"][2]["ip"] == spare["ip"]
        log = dpctl("logs", name, "--rank", "2", "--tail", "100")
        assert "(was spare 0)" in log.stdout
    finally:
        down_leaves_nothing(live, name)
