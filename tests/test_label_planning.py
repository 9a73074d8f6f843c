"""Scale and repair keep a labelled deployment's rules: its within value, its rank_within domains, its spread."""

from __future__ import annotations

import dataclasses

import pytest

from dpctl_ray.config import local_labels
from dpctl_ray.deployment.record import DeploymentState, Record
from dpctl_ray.engines.spec import DemoSpec
from dpctl_ray.errors import ConfigError
from dpctl_ray.planner import Infeasible, Node, Placement
from dpctl_ray.planner.labels import LabelMatch
from dpctl_ray.planner.repair import RepairPlan, repair
from dpctl_ray.planner.scale import ScalePlan, scale
from tests.test_scale_planner import gpu_nodes, layout, occupied, start


def labelled(nodes: tuple[Node, ...], *labels: dict[str, str]) -> tuple[Node, ...]:
    return tuple(dataclasses.replace(n, labels=lab) for n, lab in zip(nodes, labels, strict=True))


ZONES = ({"zone": "a"}, {"zone": "b"}, {"zone": "a"}, {"zone": "b"})


def test_scale_up_keeps_spreading_from_the_ranks_already_placed() -> None:
    """Two ranks, one per zone; two more go one to each zone again, each onto a fresh node."""
    nodes = labelled(gpu_nodes(4, gpus=2), *ZONES)
    current = start(nodes, dp=2, tp=2, spread="zone")
    assert layout(current) == ["0 0 n0", "1 0 n1"]
    grown = scale(current, occupied(nodes, current), 4)
    assert isinstance(grown, ScalePlan), grown
    assert layout(grown.plan) == ["0 0 n0", "1 0 n1", "2 0 n2", "3 0 n3"]


def test_scale_up_stays_inside_the_within_value_and_is_infeasible_beyond_it() -> None:
    """A deployment planned inside zone a grows only on zone a's nodes, though zone b has room."""
    nodes = labelled(gpu_nodes(4, gpus=2), *ZONES)
    current = start(nodes, dp=1, tp=2, within="zone", master="n0")
    assert current.spec.within_value == "a"
    grown = scale(current, occupied(nodes, current), 2)
    assert isinstance(grown, ScalePlan), grown
    assert layout(grown.plan) == ["0 0 n0", "1 0 n2"]
    beyond = scale(grown.plan, occupied(nodes, grown.plan), 3)
    assert isinstance(beyond, Infeasible)
    assert {s.node for s in beyond.skipped} >= {"n1", "n3"}


def test_scale_up_obeys_the_selector() -> None:
    """New ranks never land on a node the selector rules out."""
    nodes = labelled(gpu_nodes(4, gpus=2), *ZONES)
    current = start(nodes, dp=1, tp=2, select=(LabelMatch("zone", ("b",)),))
    grown = scale(current, occupied(nodes, current), 2)
    assert isinstance(grown, ScalePlan), grown
    assert layout(grown.plan) == ["0 0 n1", "1 0 n3"]


def test_repair_of_a_span_rank_keeps_it_inside_one_domain() -> None:
    """A lost span rank moves to two free nodes of one domain, not to the first two free nodes."""
    domains = [{"domain": d} for d in ("x", "x", "y", "z", "y", "z")]
    nodes = labelled(gpu_nodes(6, gpus=2), *domains)
    current = start(nodes, dp=1, tp=4, pack="span", rank_within="domain")
    assert layout(current) == ["0 0 n0+n1"]
    alive = tuple(n for n in occupied(nodes, current) if n.id != "n1")
    result = repair(current, alive, {0: "node gone"})
    assert isinstance(result, RepairPlan), result
    assert layout(result.plan) == ["0 0 n2+n4"]


def test_repair_moves_a_lost_rank_to_the_zone_holding_fewest() -> None:
    """Spread: a rank lost with its node goes to the zone that now holds the fewest ranks."""
    nodes = labelled(gpu_nodes(5, gpus=2), *ZONES, {"zone": "b"})
    current = start(nodes, dp=2, tp=2, spread="zone")
    assert layout(current) == ["0 0 n0", "1 0 n1"]
    alive = tuple(n for n in occupied(nodes, current) if n.id != "n1")
    result = repair(current, alive, {1: "node gone"})
    assert isinstance(result, RepairPlan), result
    assert layout(result.plan) == ["0 0 n0", "1 0 n3"]  # zone b's n3, not zone a's n2 (first in address order)


def test_a_running_record_keeps_every_label_rule() -> None:
    """The stored request and resolved spec read back with their selectors, within value, rank_within and spread,
    so that what runs is scaled and repaired by the same rules."""
    nodes = labelled(gpu_nodes(4, gpus=2), *ZONES)
    request = Placement(dp=1, tp=2, within="zone", spread="rack", select=(LabelMatch("zone", ("a", "b")),))
    current = start(nodes, **{f.name: getattr(request, f.name) for f in dataclasses.fields(request)})
    record = Record("dep", DeploymentState.RUNNING, request, current.spec, DemoSpec(), "t", "j", 0.0, 0.0)
    back = Record.from_json(record.to_json())
    assert back.request == request
    assert back.spec == current.spec
    assert (back.spec.within_value, back.spec.select[0].ray_value) == ("a", "in(a,b)")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("worker-1:zone", "is not NODE:KEY=VALUE"),
        ("gpu-7:zone=a", '"gpu-7" is not a node of the local cluster'),
        ("worker-1:ray.io/gpu-domain=d1", "is not a plain label"),
        ("worker-1:zone=!a", "is not a plain label"),
        ("worker-1:zone=a b", "a label value must be"),
        ({"worker-1": "zone=a"}, "must map label names to values"),
    ],
)
def test_local_cluster_labels_are_checked_before_anything_starts(given: object, message: str) -> None:
    """`cluster up --labels` and cluster.local.labels refuse what Ray's `ray start --labels` would, naming the key."""
    with pytest.raises(ConfigError) as err:
        local_labels(given, "--labels")
    assert message in err.value.message
    assert err.value.message.startswith("--labels")


def test_local_cluster_labels_from_text_and_from_the_file_agree() -> None:
    """The flag's NODE:KEY=VALUE list and the config mapping give the same labels per node."""
    text = local_labels("worker-1:zone=a, worker-1:rack=r1,worker-2:zone=b", "--labels")
    mapping = local_labels({"worker-1": {"zone": "a", "rack": "r1"}, "worker-2": {"zone": "b"}}, "cluster.local.labels")
    assert text == mapping == {"worker-1": {"zone": "a", "rack": "r1"}, "worker-2": {"zone": "b"}}
