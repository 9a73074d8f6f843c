"""`dpctl repair` on a local cluster of its own, whose nodes the tests kill (`dpctl cluster kill-node`).

The session cluster is shared, so these tests start their own: a head and three workers of 2 simulated GPUs.
A rank is TP 2 (one worker each); the third worker is the free capacity a lost rank moves to.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dpctl_ray.local import state as local_state
from tests.conftest import dpctl

pytestmark = pytest.mark.ray


def run(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """dpctl against the cluster of this module (its own DPCTL_HOME)."""
    return dpctl(*args, timeout=timeout, DPCTL_HOME=str(home))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("repair-home")
    started = run(base, "cluster", "up", "--nodes", "3", "--gpus-per-node", "2", "--cpus-per-node", "2")
    assert started.returncode == 0, started.stderr
    yield base
    run(base, "cluster", "down")


def status(home: Path, name: str) -> dict[str, Any]:
    result = run(home, "status", name, "-o", "json")
    assert result.returncode == 0, result.stderr
    deployment: dict[str, Any] = json.loads(result.stdout)["deployments"][0]
    return deployment


def worker_at(home: Path, ip: str) -> str:
    nodes = json.loads(run(home, "cluster", "status", "-o", "json").stdout)["nodes"]
    return next(n["name"] for n in nodes if n["ip"] == ip)


def test_a_lost_node_is_seen_and_repair_moves_only_its_rank(home: Path) -> None:
    up = run(home, "up", "--name", "heal", "--dp", "2", "--tp", "2")
    assert up.returncode == 0, up.stderr
    try:
        before = status(home, "heal")["ranks"]
        assert len({r["ip"] for r in before}) == 2
        killed = run(home, "cluster", "kill-node", worker_at(home, before[1]["ip"]))
        assert killed.returncode == 0, killed.stderr
        deadline = time.monotonic() + 10
        while status(home, "heal")["ranks"][1]["state"] != "DEAD":
            assert time.monotonic() < deadline, "the lost rank was not shown DEAD within 10 s"
            time.sleep(0.5)

        dry = run(home, "repair", "heal", "--dry-run", "-o", "json")
        assert dry.returncode == 0, dry.stderr
        (move,) = json.loads(dry.stdout)["moves"]
        assert move["rank"] == 1
        assert not move["in_place"]

        repaired = run(home, "repair", "heal")
        assert repaired.returncode == 0, repaired.stderr
        assert "repaired 1 rank" in repaired.stderr
        after = status(home, "heal")
        assert after["state"] == "running"
        assert [r["state"] for r in after["ranks"]] == ["READY", "READY"]
        assert after["ranks"][1]["ip"] not in (before[1]["ip"], before[0]["ip"])
        # the healthy rank was not touched: same node, devices and since
        assert {k: after["ranks"][0][k] for k in ("node", "devices", "since")} == {
            k: before[0][k] for k in ("node", "devices", "since")
        }
        (event,) = after["events"]  # every detection and action is kept with the deployment
        assert (event["rank"], event["from"], event["to"], event["result"]) == (
            1,
            before[1]["ip"],
            after["ranks"][1]["ip"],
            "ready",
        )
        table = run(home, "status", "heal")
        assert "recent repairs:" in table.stdout
        assert f"rank 1  {event['cause']}: {before[1]['ip']} -> {after['ranks'][1]['ip']}, ready" in table.stdout
        again = run(home, "repair", "heal")
        assert again.returncode == 0, again.stderr
        assert "nothing to repair" in again.stderr
    finally:
        down = run(home, "down", "heal")
        assert down.returncode == 0, down.stderr


def wait_until(check: Any, timeout: float = 60.0, what: str = "", last: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}" + (f"; last seen: {last()}" if last else ""))
        time.sleep(1.0)


def gpu_workers(home: Path) -> int:
    """Workers alive (after earlier tests killed or added some), once Ray no longer lists the killed ones."""
    nodes = json.loads(run(home, "cluster", "status", "-o", "json").stdout)["nodes"]
    alive = sum(1 for n in nodes if not n["head"] and local_state.process_alive(n["pid"]))

    def listed() -> int:
        result = run(home, "inventory", "--format", "json")
        assert result.returncode == 0, result.stderr
        return sum(1 for n in json.loads(result.stdout)["nodes"] if n["resources"].get("GPU"))

    wait_until(lambda: listed() == alive, what="Ray marking the killed workers dead")
    return alive


def test_no_room_to_repair_is_exit_3_leaves_the_rest_and_marks_the_deployment_degraded(home: Path) -> None:
    workers = gpu_workers(home)
    up = run(home, "up", "--name", "tight", "--dp", str(workers), "--tp", "2")  # every worker taken
    assert up.returncode == 0, up.stderr
    try:
        before = status(home, "tight")["ranks"]
        assert run(home, "cluster", "kill-node", worker_at(home, before[0]["ip"])).returncode == 0
        result = run(home, "repair", "tight")
        assert result.returncode == 3, result.stderr
        assert "no room to repair rank 0" in result.stderr
        assert f"tight stays degraded with {workers - 1} of {workers} ranks running" in result.stderr
        after = status(home, "tight")
        assert after["state"] == "degraded"
        assert [e["result"] for e in after["events"]] == ["no room: degraded"]
        assert after["ranks"][1]["since"] == before[1]["since"]  # nothing changed for the healthy ranks
        # `up` of the same deployment leaves a degraded one's healthy ranks alone and says how to repair it.
        again = run(home, "up", "--name", "tight", "--dp", str(workers), "--tp", "2")
        assert again.returncode == 0, again.stderr
        assert "tight is degraded" in again.stderr
        assert status(home, "tight")["ranks"][1]["since"] == before[1]["since"]
        added = run(home, "cluster", "add-node")
        assert added.returncode == 0, added.stderr
        healed = run(home, "repair", "tight")
        assert healed.returncode == 0, healed.stderr
        after = status(home, "tight")
        assert after["state"] == "running"
        assert [r["state"] for r in after["ranks"]] == ["READY"] * workers
    finally:
        run(home, "down", "tight")


def test_recovery_auto_heals_with_no_command_running_and_stops_when_its_budget_is_spent(
    home: Path, tmp_path: Path
) -> None:
    while gpu_workers(home) < 3:
        assert run(home, "cluster", "add-node").returncode == 0
    config = tmp_path / "auto.yaml"
    config.write_text(
        json.dumps(
            {
                "name": "auto",
                "placement": {"dp": 1, "tp": 2},
                "engine": {"kind": "demo", "init_seconds": 0},
                "recovery": {"mode": "auto", "max_repairs": 1, "window": 600},
            }
        )
    )
    up = run(home, "up", "-f", str(config))
    assert up.returncode == 0, up.stderr
    assert "a supervisor repairs lost ranks" in up.stderr
    try:
        first = status(home, "auto")
        assert first["supervisor"]["state"] == "watching"
        lost_ip = first["ranks"][0]["ip"]
        assert run(home, "cluster", "kill-node", worker_at(home, lost_ip)).returncode == 0

        def healed() -> dict[str, Any] | None:
            now = status(home, "auto")
            rank = now["ranks"][0]
            return now if rank["state"] == "READY" and rank["ip"] != lost_ip else None

        after = wait_until(
            healed,
            timeout=120,
            what="the supervisor repairing the rank with no command running",
            last=lambda: status(home, "auto"),
        )
        assert [e["result"] for e in after["events"]] == ["ready"]

        # A second loss spends more than the budget of 1: the supervisor stops and says why.
        assert run(home, "cluster", "kill-node", worker_at(home, after["ranks"][0]["ip"])).returncode == 0

        def stopped() -> dict[str, Any] | None:
            now = status(home, "auto")
            return now if now["supervisor"]["state"] == "stopped" else None

        final = wait_until(stopped, what="the supervisor stopping on its budget")
        assert "budget spent: 1 repairs in 600s" in final["supervisor"]["reason"]
        assert final["events"][-1]["cause"] == "supervisor", final["events"]
        assert final["ranks"][0]["state"] == "DEAD"
        table = run(home, "status", "auto").stdout
        assert "; supervisor stopped\nsupervisor: budget spent: 1 repairs in 600s" in table

        # `up` again re-arms a stopped supervisor, and says why it had stopped.
        again = run(home, "up", "-f", str(config))
        assert again.returncode == 0, again.stderr
        assert "(again: it had stopped: " in again.stderr
        assert status(home, "auto")["supervisor"]["state"] == "watching"
    finally:
        down = run(home, "down", "auto")
        assert down.returncode == 0, down.stderr
    assert json.loads(run(home, "status", "-o", "json").stdout)["deployments"] == []


LEFT = """
import json, sys, ray
from ray.util.placement_group import placement_group_table
ray.init(address=sys.argv[1], namespace="dpctl", logging_level="ERROR", log_to_driver=False)
prefix = f"dpctl/{sys.argv[2]}/"
groups = [f"group {g['name']} ({g['state']})" for g in placement_group_table().values()
          if g["name"].startswith(prefix) and g["state"] != "REMOVED"]
actors = [f"actor {a['name']}" for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
print(json.dumps(sorted(groups) + sorted(actors)))
"""


def objects_of(home: Path, name: str) -> list[str]:
    """The deployment's placement groups (not removed) and named actors in this module's cluster.

    Asked from a process of its own: Ray keeps the first auth token a process loads, and this test process
    has the session cluster's.
    """
    state = local_state.load_state_at(home)
    assert state is not None
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(home / "auth_token")}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", LEFT, state.address, name],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    found: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def assert_gone(home: Path, name: str) -> None:
    """Nothing of the deployment is left in Ray (actor names are released a moment after the kill)."""
    wait_until(lambda: objects_of(home, name) == [], 15, f"nothing left of {name}", lambda: objects_of(home, name))


@contextlib.contextmanager
def one_rank_and_a_spare(home: Path, name: str, *flags: str) -> Iterator[str]:
    """`name` up on three GPU workers with one rank of TP 2 and one spare; yields up's stderr.

    Then down, which must leave no spare, host or group.
    """
    while gpu_workers(home) < 3:
        assert run(home, "cluster", "add-node").returncode == 0
    up = run(home, "up", "--name", name, "--dp", "1", "--tp", "2", "--spares", "1", *flags)
    assert up.returncode == 0, up.stderr
    try:
        yield up.stderr
    finally:
        down = run(home, "down", name)
        assert down.returncode == 0, down.stderr
    assert_gone(home, name)


def test_a_spare_is_promoted_on_repair_and_on_scale_up_and_reserved_again(home: Path) -> None:
    with one_rank_and_a_spare(home, "spare") as said:
        assert "reserved 1 spare" in said
        first = status(home, "spare")
        (held,) = first["spares"]
        assert held["state"] == "reserved"
        assert held["ip"] != first["ranks"][0]["ip"]
        assert "spares: 0 reserved on" in run(home, "status", "spare").stdout
        assert objects_of(home, "spare") == [
            "group dpctl/spare/pg-0 (CREATED)",
            "group dpctl/spare/spare-0 (CREATED)",
            "actor dpctl/spare/engine-0",
        ]

        # The rank's node dies: repair puts it on the spare, then reserves a spare again on the free worker.
        assert run(home, "cluster", "kill-node", worker_at(home, first["ranks"][0]["ip"])).returncode == 0
        dry = run(home, "repair", "spare", "--dry-run", "-o", "json")
        assert dry.returncode == 0, dry.stderr
        (move,) = json.loads(dry.stdout)["moves"]
        assert move["spare"] == 0
        repaired = run(home, "repair", "spare")
        assert repaired.returncode == 0, repaired.stderr
        assert "(spare 0)" in repaired.stderr
        after = status(home, "spare")
        assert after["ranks"][0]["ip"] == held["ip"]
        assert after["ranks"][0]["state"] == "READY"
        (again,) = after["spares"]
        assert again["state"] == "reserved"
        assert again["ip"] not in (held["ip"], first["ranks"][0]["ip"])

        # Growing takes the spare first; with no room left for another, it says so.
        grown = run(home, "scale", "spare", "--dp", "2")
        assert grown.returncode == 0, grown.stderr
        assert "1 onto spare 0" in grown.stderr
        assert "0 of 1 spares reserved" in grown.stderr
        final = status(home, "spare")
        assert final["ranks"][1]["ip"] == again["ip"]
        assert final["spares"] == []


def test_a_started_spare_becomes_the_lost_rank_without_a_new_placement(home: Path) -> None:
    with one_rank_and_a_spare(home, "warm", "--spares-mode", "started") as said:
        assert "started 1 spare" in said
        first = status(home, "warm")
        (held,) = first["spares"]
        assert held["state"] == "started"
        assert run(home, "cluster", "kill-node", worker_at(home, first["ranks"][0]["ip"])).returncode == 0
        repaired = run(home, "repair", "warm")
        assert repaired.returncode == 0, repaired.stderr
        assert "(spare 0)" in repaired.stderr
        after = status(home, "warm")
        assert after["ranks"][0]["ip"] == held["ip"]
        assert after["ranks"][0]["state"] == "READY"
        # The spare's own host took the rank over (no new actor, no new group): its log says so.
        log = run(home, "logs", "warm", "--tail", "50")
        assert "(was spare 0)" in log.stdout
        assert [s["state"] for s in after["spares"]] == ["started"]  # another spare started where there was room
        assert after["spares"][0]["ip"] not in (held["ip"], first["ranks"][0]["ip"])
