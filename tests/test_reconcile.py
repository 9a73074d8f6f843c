"""The operations and the reconciler on the fake cluster: each change commits or is undone exactly, whatever fails.

Real Ray keeps the end-to-end tests (test_scale, test_repair, test_vllm_live); here every failure and every
step a command can be killed at is tried, in milliseconds. After each, the cluster's objects are exactly what
the deployment's record says it owns.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpctl_ray.config import Config, Timeouts
from dpctl_ray.deployment import change as changes
from dpctl_ray.deployment.record import DeploymentState, Record
from dpctl_ray.engines.spec import DemoSpec
from dpctl_ray.errors import BadInput, ChangeFailed, ExitCode, Left
from dpctl_ray.launcher.operations import Operations
from dpctl_ray.launcher.progress import QuietObserver
from dpctl_ray.launcher.records import ObjectKind, object_name, prefix
from dpctl_ray.planner import Placement
from tests.fake_cluster import Cluster, Killed

QUIET = QuietObserver()
T = Timeouts()


def config(name: str, dp: int, *, group: bool = False, spares: int = 0, started: bool = False) -> Config:
    placement = Placement(dp=dp, tp=2, spares=spares, spares_mode="started" if started else "reserved")
    engine = DemoSpec(coupling="group" if group else "independent")
    return Config(name=name, named=True, placement=placement, engine=engine)


def up(cluster: Cluster, name: str, dp: int, **kwargs: Any) -> Record:
    ops = Operations(cluster.command())
    result = ops.up(config(name, dp, **kwargs), planned=None, observer=QUIET, keep_on_failure=False, recreate=False)
    return result.record


def owned(cluster: Cluster, name: str) -> None:
    """The deployment's objects are exactly those its record owns: each rank's group and hosts, each spare's group."""
    record = cluster.record(name)
    assert record is not None
    groups, hosts = cluster.objects_of(name)
    want_groups, want_hosts = set(), set()
    for rank in record.ranks:
        stem = f"{prefix(name)}{rank.stem}" if rank.stem else None
        want_groups.add(stem or object_name(name, ObjectKind.GROUP, rank.rank))
        base = stem or object_name(name, ObjectKind.ENGINE, rank.rank)
        want_hosts |= {base if node == rank.control else f"{base}-{k}" for k, node in enumerate(rank.nodes)}
    for spare in record.spares:
        want_groups.add(object_name(name, ObjectKind.SPARE, spare.rank))
    started = {h for h in hosts if "/spare-" in h and h.split("/")[-1].split("-")[1].isdigit()}
    want_hosts |= {h for h in started if int(h.split("/")[-1].split("-")[1]) in {s.rank for s in record.spares}}
    assert groups == want_groups
    assert hosts == want_hosts
    assert [r.rank for r in record.ranks] == list(range(len(record.ranks)))
    assert record.spec.dp == len(record.ranks)
    serving = {h.rank for h in cluster.hosts.values() if h.deployment == name and h.serving}
    assert serving == {r.rank for r in record.ranks}, "a rank of the record does not serve, or a stray one does"
    assert record.pending == []


def test_a_scale_up_commits_the_new_ranks_and_tells_the_others_their_size() -> None:
    """2 -> 4: the new ranks' objects exist, the record says 4, the running ranks were told dp 4."""
    cluster = Cluster.of(4)
    up(cluster, "s", 2)
    result = Operations(cluster.command()).scale("s", 4, T, dry_run=False, observer=QUIET)
    assert result.untold == []
    record = cluster.record("s")
    assert record is not None
    assert (record.state, record.request.dp, len(record.ranks)) == (DeploymentState.RUNNING, 4, 4)
    assert {h.dp for h in cluster.hosts.values()} == {4}
    owned(cluster, "s")


def test_a_failed_scale_up_leaves_the_old_ranks_running_and_says_so_in_its_type() -> None:
    """A new rank fails: what the scale created is gone, the record is back at 2, the failure names what was left."""
    cluster = Cluster.of(4)
    up(cluster, "s", 2)
    cluster.fail_ranks = {3}
    with pytest.raises(ChangeFailed) as failed:
        Operations(cluster.command()).scale("s", 4, T, dry_run=False, observer=QUIET)
    assert failed.value.left is Left.RUNNING
    assert failed.value.exit_code == ExitCode.LAUNCH_FAILED
    assert failed.value.cause.code == "engine_failed"
    owned(cluster, "s")
    record = cluster.record("s")
    assert record is not None
    assert (record.state, record.request.dp) == (DeploymentState.RUNNING, 2)


def test_a_group_that_cannot_grow_restarts_at_its_old_size() -> None:
    """A group scale fails: the group runs again at its old size on the hosts it kept (left: restarted)."""
    cluster = Cluster.of(4)
    up(cluster, "g", 2, group=True)
    cluster.fail_ranks = {2}
    with pytest.raises(ChangeFailed) as failed:
        Operations(cluster.command()).scale("g", 3, T, dry_run=False, observer=QUIET)
    assert failed.value.left is Left.RESTARTED
    owned(cluster, "g")
    assert {h.dp for h in cluster.hosts.values()} == {2}


def test_a_group_that_cannot_restart_at_all_is_down_until_the_next_scale_revives_it() -> None:
    """Even the old size fails: the group is down (FAILED), its groups kept; a later scale brings it back."""
    cluster = Cluster.of(4)
    up(cluster, "g", 2, group=True)
    cluster.fail_ranks = {1}
    with pytest.raises(ChangeFailed) as failed:
        Operations(cluster.command()).scale("g", 3, T, dry_run=False, observer=QUIET)
    assert failed.value.left is Left.DOWN
    record = cluster.record("g")
    assert record is not None
    assert record.state is DeploymentState.FAILED
    assert len(cluster.objects_of("g")[0]) == 2, "a group that is down keeps its placement groups"
    cluster.fail_ranks = set()
    Operations(cluster.command()).scale("g", 2, T, dry_run=False, observer=QUIET)
    owned(cluster, "g")


def test_a_lost_rank_takes_a_reserved_spare_and_the_spare_is_reserved_again() -> None:
    """Repair moves the lost rank onto the spare's bundles; a new spare is reserved where there is room."""
    cluster = Cluster.of(3, devices=4)
    record = up(cluster, "r", 2, spares=1)
    assert [s.rank for s in record.spares] == [0]
    spare_node = record.spares[0].nodes[0]
    lost_node = record.ranks[1].nodes[0]
    cluster.kill_node(lost_node)
    result = Operations(cluster.command()).repair("r", T, dry_run=False, observer=QUIET)
    assert result.repair is not None
    assert result.repair.moves[0].spare == 0
    after = cluster.record("r")
    assert after is not None
    assert after.ranks[1].nodes == [spare_node]
    owned(cluster, "r")


def test_a_started_spare_is_adopted_by_the_lost_rank_under_its_own_names() -> None:
    """A started spare's hosts become the rank (its record remembers the stem); nothing new is placed for it."""
    cluster = Cluster.of(3, devices=2)
    record = up(cluster, "a", 2, spares=1, started=True)
    cluster.kill_node(record.ranks[1].nodes[0])
    Operations(cluster.command()).repair("a", T, dry_run=False, observer=QUIET)
    after = cluster.record("a")
    assert after is not None
    assert after.ranks[1].stem == "spare-0"
    assert after.ranks[1].nodes == record.spares[0].nodes
    owned(cluster, "a")


def steps_of(run: Any) -> list[str]:
    """Every step a change reaches, in order, from a run of it with no fault."""
    cluster, name = run.setup()
    cluster.steps.clear()
    run.act(cluster, name)
    return list(dict.fromkeys(cluster.steps))


class ScaleUp:
    def setup(self) -> tuple[Cluster, str]:
        cluster = Cluster.of(4)
        up(cluster, "k", 2, spares=1)
        return cluster, "k"

    def act(self, cluster: Cluster, name: str) -> None:
        Operations(cluster.command()).scale(name, 4, T, dry_run=False, observer=QUIET)


class ScaleDown(ScaleUp):
    def act(self, cluster: Cluster, name: str) -> None:
        Operations(cluster.command()).scale(name, 1, T, dry_run=False, observer=QUIET)


class GroupScale:
    def setup(self) -> tuple[Cluster, str]:
        cluster = Cluster.of(4)
        up(cluster, "k", 2, group=True)
        return cluster, "k"

    def act(self, cluster: Cluster, name: str) -> None:
        Operations(cluster.command()).scale(name, 3, T, dry_run=False, observer=QUIET)


class Repair:
    def __init__(self, *, started: bool = False, group: bool = False) -> None:
        self.started, self.group = started, group

    def setup(self) -> tuple[Cluster, str]:
        cluster = Cluster.of(4)
        up(cluster, "k", 2, spares=1, started=self.started, group=self.group)
        cluster.kill_host("k", 1)
        return cluster, "k"

    def act(self, cluster: Cluster, name: str) -> None:
        Operations(cluster.command()).repair(name, T, dry_run=False, observer=QUIET)


CHANGES = {
    "scale-up": ScaleUp(),
    "scale-down": ScaleDown(),
    "group-scale": GroupScale(),
    "repair": Repair(),
    "repair-started-spare": Repair(started=True),
    "group-repair": Repair(group=True),
}


@pytest.mark.parametrize("kind", sorted(CHANGES))
def test_a_command_killed_at_any_step_is_finished_or_undone_by_the_next(kind: str) -> None:
    """SIGKILL between any two steps: the next command recovers, and the objects are exactly the record's."""
    run = CHANGES[kind]
    steps = steps_of(run)
    assert "saved" in steps
    for step in steps:
        cluster, name = run.setup()
        cluster.kill_at = step
        with pytest.raises(Killed):
            run.act(cluster, name)
        # The next command (here a repair, which recovers first) leaves the deployment whole.
        Operations(cluster.command()).repair(name, T, dry_run=False, observer=QUIET)
        owned(cluster, name)
        record = cluster.record(name)
        assert record is not None
        assert record.state is DeploymentState.RUNNING, (kind, step)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=5),
    fail=st.sets(st.integers(min_value=0, max_value=5), max_size=2),
    group=st.booleans(),
)
def test_any_sequence_of_scales_leaves_exactly_what_the_record_owns(
    sizes: list[int], fail: set[int], group: bool
) -> None:
    """Whatever sizes are asked for and whichever new ranks fail, the objects match the record after each scale."""
    cluster = Cluster.of(6)
    up(cluster, "h", 1, group=group)
    cluster.fail_ranks = fail - {0}
    for size in sizes:
        try:
            Operations(cluster.command()).scale("h", size, T, dry_run=False, observer=QUIET)
        except ChangeFailed as exc:
            record = cluster.record("h")
            assert record is not None
            if exc.left is Left.DOWN:
                cluster.fail_ranks = set()
                Operations(cluster.command()).scale("h", len(record.ranks), T, dry_run=False, observer=QUIET)
                cluster.fail_ranks = fail - {0}
        owned(cluster, "h")


def test_a_saved_change_applies_while_fresh_and_is_refused_once_anything_moved() -> None:
    """A dry run's change file applies unchanged; once the record or the cluster moved, it is refused (exit 2)."""
    cluster = Cluster.of(4)
    up(cluster, "f", 2)
    dry = Operations(cluster.command()).scale("f", 3, T, dry_run=True, observer=QUIET)
    assert dry.change is not None
    saved = changes.artifact(dry.record, dry.change)
    up(cluster, "other", 1)  # another deployment takes devices: the cluster's fingerprint moves
    with pytest.raises(BadInput, match="the cluster changed since") as stale:
        Operations(cluster.command()).scale("f", 3, T, dry_run=False, observer=QUIET, expect=saved)
    assert stale.value.code == "stale_change"
    owned(cluster, "f")
    again = Operations(cluster.command()).scale("f", 3, T, dry_run=True, observer=QUIET)
    assert again.change is not None
    fresh = changes.artifact(again.record, again.change)
    Operations(cluster.command()).scale("f", 3, T, dry_run=False, observer=QUIET, expect=fresh)
    owned(cluster, "f")
    record = cluster.record("f")
    assert record is not None
    assert len(record.ranks) == 3
