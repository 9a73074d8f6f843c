"""The repair planner: a lost rank goes back where it was when it can, else onto free capacity; nothing else moves."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dpctl_ray.config import Recovery, config_from_document
from dpctl_ray.errors import ConfigError
from dpctl_ray.planner import Infeasible, InfeasibleCode, Node, Placement, Plan, PlanRequest, plan
from dpctl_ray.planner.repair import RepairPlan, repair
from tests.test_scale_planner import gpu_nodes, layout, occupied, start


def without(nodes: tuple[Node, ...], *gone: str) -> tuple[Node, ...]:
    return tuple(n for n in nodes if n.id not in gone)


def fixed(current: Plan, nodes: tuple[Node, ...], lost: dict[int, str]) -> RepairPlan:
    result = repair(current, nodes, lost)
    assert isinstance(result, RepairPlan), result
    return result


def test_a_rank_whose_engine_died_goes_back_onto_its_own_node() -> None:
    """Its placement group still holds its devices there: they count as free, so it keeps node and local rank."""
    nodes = gpu_nodes(2)
    current = start(nodes, dp=4, tp=2)
    result = fixed(current, occupied(nodes, current), {1: "its engine actor died"})
    (move,) = result.moves
    assert move.in_place
    assert move.after == current.ranks[1]
    assert result.plan.ranks == current.ranks


def test_ranks_of_a_lost_node_move_to_free_capacity_and_keep_their_numbers() -> None:
    nodes = gpu_nodes(3)
    current = start(nodes, dp=4, tp=2)  # n0: ranks 0, 1; n1: ranks 2, 3; n2 free
    assert layout(current) == ["0 0 n0", "1 1 n0", "2 0 n1", "3 1 n1"]
    result = fixed(current, without(occupied(nodes, current), "n1"), {2: "node gone", 3: "node gone"})
    assert layout(result.plan) == ["0 0 n0", "1 1 n0", "2 0 n2", "3 1 n2"]
    assert [m.rank for m in result.moves] == [2, 3]
    assert not any(m.in_place for m in result.moves)
    assert result.plan.ranks[:2] == current.ranks[:2]  # healthy ranks untouched


def test_moved_ranks_take_the_next_local_ranks_on_a_node_that_already_hosts_some() -> None:
    nodes = gpu_nodes(2, gpus=6)
    current = start(nodes, dp=3, tp=2, pack="fill", dp_local=2)  # n0: ranks 0, 1; n1: rank 2 (4 GPUs free)
    assert layout(current) == ["0 0 n0", "1 1 n0", "2 0 n1"]
    result = fixed(current, without(occupied(nodes, current), "n0"), {0: "node gone", 1: "node gone"})
    assert layout(result.plan) == ["0 1 n1", "1 2 n1", "2 0 n1"]


def test_no_capacity_is_infeasible_naming_the_rank() -> None:
    nodes = gpu_nodes(2)
    current = start(nodes, dp=4, tp=2)
    result = repair(current, without(occupied(nodes, current), "n1"), {2: "node gone", 3: "node gone"})
    assert isinstance(result, Infeasible)
    assert result.code is InfeasibleCode.INSUFFICIENT
    assert result.rank == 2


def test_a_span_rank_moves_to_whole_free_nodes() -> None:
    nodes = gpu_nodes(6, gpus=2)
    current = start(nodes, dp=2, tp=4, pack="span")  # rank 0: n0+n1, rank 1: n2+n3
    assert layout(current) == ["0 0 n0+n1", "1 0 n2+n3"]
    result = fixed(current, without(occupied(nodes, current), "n3"), {1: "node gone"})
    # its surviving node (n2, freed with its group) comes first in node order, then a free one
    assert layout(result.plan) == ["0 0 n0+n1", "1 0 n2+n4"]


def test_a_span_rank_whose_engine_died_stays_on_its_nodes() -> None:
    nodes = gpu_nodes(4, gpus=2)
    current = start(nodes, dp=2, tp=4, pack="span")
    result = fixed(current, occupied(nodes, current), {0: "its engine actor died"})
    assert result.moves[0].in_place
    assert result.plan.ranks == current.ranks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(2, 6),
    gpus=st.sampled_from([2, 4, 8]),
    tp=st.sampled_from([1, 2]),
    pack=st.sampled_from(["strict", "fill"]),
    data=st.data(),
)
def test_repair_never_moves_a_healthy_rank_nor_overcommits(count: int, gpus: int, tp: int, pack: str, data) -> None:
    nodes = gpu_nodes(count, gpus=gpus, cpus=64)
    dp = data.draw(st.integers(1, count * gpus // tp))
    started = plan(PlanRequest("dep", Placement(dp=dp, tp=tp, pack=pack, dp_local=min(dp, gpus // tp)), nodes))
    assume(isinstance(started, Plan))
    assert isinstance(started, Plan)
    current = started
    gone = data.draw(st.sets(st.sampled_from([n.id for n in nodes]), max_size=count - 1))
    died = data.draw(st.sets(st.sampled_from([r.rank for r in current.ranks]), max_size=2))
    lost = {r.rank: "node gone" for r in current.ranks if set(r.nodes) & gone} | dict.fromkeys(died, "died")
    alive = without(occupied(nodes, current), *gone)
    result = repair(current, alive, lost)
    if isinstance(result, Infeasible):
        return
    by_rank = {r.rank: r for r in result.plan.ranks}
    for rank in current.ranks:
        if rank.rank not in lost:
            assert by_rank[rank.rank] == rank
    assert sorted(by_rank) == [r.rank for r in current.ranks]
    alive_ids = {n.id for n in alive}
    for move in result.moves:
        assert set(move.after.nodes) <= alive_ids
    used: dict[str, int] = {}
    for rank in result.plan.ranks:
        for node, devices in zip(rank.nodes, rank.devices, strict=True):
            used[node] = used.get(node, 0) + devices
    assert all(used[n] <= gpus for n in used)
    locals_ = [(r.control, r.local_rank) for r in result.plan.ranks]
    assert len(locals_) == len(set(locals_))  # no two ranks share a node's local rank
    again = repair(current, tuple(reversed(alive)), lost)
    assert again == result  # whatever the order the nodes come in


def test_recovery_settings_are_checked_with_their_key_paths() -> None:
    assert config_from_document({}).recovery == Recovery("manual", 3, 600.0)
    auto = config_from_document({"recovery": {"mode": "auto", "max_repairs": 5, "window": 60}}).recovery
    assert auto == Recovery("auto", 5, 60.0)
    for doc, message in (
        ({"recovery": {"mode": "sometimes"}}, "recovery.mode: must be one of manual, auto"),
        ({"recovery": {"max_repairs": 0}}, "recovery.max_repairs: must be"),
        ({"recovery": {"budget": 3}}, "recovery.budget: unknown key"),
    ):
        with pytest.raises(ConfigError) as info:
            config_from_document(doc)
        assert message in info.value.message


def test_a_rank_of_a_lost_node_takes_a_spare_before_free_capacity() -> None:
    nodes = gpu_nodes(4)
    current = start(nodes, dp=2, tp=4, spares=1)  # n0: rank 0, n1: rank 1, n2: spare 0, n3 free
    assert layout(current) == ["0 0 n0", "1 0 n1"]
    assert [s.nodes for s in current.spares] == [("n2",)]
    result = fixed(current, without(occupied(nodes, current), "n1"), {1: "node gone"})
    (move,) = result.moves
    assert (move.spare, move.after.nodes, move.after.local_rank) == (0, ("n2",), 0)
    assert result.plan.spares == ()
    assert result.plan.ranks[0] == current.ranks[0]


def test_a_rank_that_fits_where_it_was_keeps_the_spare() -> None:
    nodes = gpu_nodes(3)
    current = start(nodes, dp=2, tp=4, spares=1)
    result = fixed(current, occupied(nodes, current), {1: "its engine actor died"})
    (move,) = result.moves
    assert move.in_place
    assert move.spare is None
    assert result.plan.spares == current.spares


def test_a_spare_on_a_lost_node_is_dropped_and_a_rank_there_goes_to_free_capacity() -> None:
    nodes = gpu_nodes(4)
    current = start(nodes, dp=2, tp=4, spares=1)  # the spare on n2
    result = fixed(current, without(occupied(nodes, current), "n2"), {})
    assert (result.moves, result.dropped, result.plan.spares) == ((), (0,), ())


def test_span_ranks_take_a_span_spare_whole() -> None:
    nodes = gpu_nodes(6)
    current = start(nodes, dp=2, tp=8, pack="span", spares=1)  # ranks on n0+n1, n2+n3; the spare on n4+n5
    result = fixed(current, without(occupied(nodes, current), "n3"), {1: "node gone"})
    (move,) = result.moves
    assert (move.spare, move.after.nodes) == (0, ("n4", "n5"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(2, 6),
    dp=st.integers(1, 6),
    spares=st.integers(1, 3),
    pack=st.sampled_from(["strict", "fill"]),
    lost_node=st.integers(0, 5),
)
def test_spares_go_first_and_healthy_ranks_never_move(
    count: int, dp: int, spares: int, pack: str, lost_node: int
) -> None:
    nodes = gpu_nodes(count, gpus=4)
    current = plan(PlanRequest("dep", Placement(dp=dp, tp=2, pack=pack, spares=spares), nodes))  # type: ignore[arg-type]
    assume(isinstance(current, Plan))
    assert isinstance(current, Plan)
    gone = f"n{lost_node % count}"
    lost = {r.rank: "node gone" for r in current.ranks if gone in r.nodes}
    result = repair(current, without(occupied(nodes, current), gone), lost)
    if isinstance(result, Infeasible):
        return
    alive_spares = [s for s in current.spares if gone not in s.nodes]
    took = [m.spare for m in result.moves if m.spare is not None]
    assert took == [s.rank for s in alive_spares][: len(took)]  # in order, and only alive ones
    if len(took) < len(lost):
        assert len(took) == len(alive_spares)  # free capacity only once the spares are spent
    for r in result.plan.ranks:
        if r.rank not in lost:
            assert r == current.ranks[r.rank]
    assert len(result.plan.spares) == len(alive_spares) - len(took)
