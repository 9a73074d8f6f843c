"""Tampered plan files: every edit that makes a plan wrong, or no longer fit the cluster, is refused by name."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from dpctl_ray.errors import BadInput
from dpctl_ray.planner import Placement, Plan, PlanRequest, plan
from dpctl_ray.planner.document import plan_to_document
from dpctl_ray.planner.inventory import nodes_from_document
from dpctl_ray.planner.plan_file import plan_from_document
from dpctl_ray.planner.verify import check_fits
from tests.conftest import ROOT

# A CPU-only head and four 8-GPU nodes; the plan: 3 ranks of TP 4, fill, so gpu-a holds ranks 0 and 1.
NODES = nodes_from_document(yaml.safe_load((ROOT / "configs" / "inventories" / "four-by-eight.yaml").read_text()))


def fresh(layout: str = "per_node") -> dict[str, Any]:
    result = plan(PlanRequest("tampered", Placement(dp=3, tp=4, pack="fill", bundles=layout), NODES))  # type: ignore[arg-type]
    assert isinstance(result, Plan)
    return plan_to_document(result)


def checked(doc: dict[str, Any]) -> Plan:
    """What `up --plan` does before anything is created: read the file strictly, then fit it to the cluster."""
    loaded = plan_from_document(json.loads(json.dumps(doc)))
    check_fits(loaded, NODES)
    return loaded


def move_rank(doc: dict[str, Any], rank: int, node: str) -> None:
    for bundle in doc["ranks"][rank]["bundles"]:
        bundle["node"] = node
    doc["ranks"][rank]["nodes"] = [node]


def twelve_gpus_on_gpu_a(doc: dict[str, Any]) -> None:
    move_rank(doc, 2, "gpu-a")
    doc["ranks"][2]["local_rank"] = 2
    doc["spec"]["dp_local"] = 3


def split_strict_rank(doc: dict[str, Any]) -> None:
    (bundle,) = doc["ranks"][2]["bundles"]
    bundle["resources"]["GPU"] = 2
    doc["ranks"][2]["bundles"].append({"node": "gpu-d", "resources": {"GPU": 2}})
    doc["ranks"][2]["nodes"] = [bundle["node"], "gpu-d"]


def split_strict_rank_per_device(doc: dict[str, Any]) -> None:
    bundles = doc["ranks"][2]["bundles"]
    for bundle in bundles[2:-1]:
        bundle["node"] = "gpu-d"
    doc["ranks"][2]["nodes"] = [bundles[0]["node"], "gpu-d"]


TAMPERS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("overcommitted-node", twelve_gpus_on_gpu_a, "the plan puts 12 GPU on 'gpu-a' (10.0.0.2), which has 8 free"),
    ("unknown-node", lambda d: move_rank(d, 2, "gpu-z"), "node 'gpu-z' is not one of the plan's nodes"),
    ("gpu-less-head", lambda d: move_rank(d, 2, "head"), "the plan puts 4 GPU on 'head' (10.0.0.1), which has 0 free"),
    ("split-strict-rank", split_strict_rank, "a STRICT_PACK rank has every bundle on one node"),
    ("per-device:split-strict-rank", split_strict_rank_per_device, "a STRICT_PACK rank has every bundle on one node"),
    (
        "duplicate-local-rank",
        lambda d: d["ranks"][1].update(local_rank=0),
        "the local ranks on node 'gpu-a' must be 0..1",
    ),
    ("zero-cpus", lambda d: d["spec"].update(cpus=0), "spec.cpus: must be a number above 0"),
    ("negative-cpus", lambda d: d["spec"].update(cpus=-1), "spec.cpus: must be a number above 0"),
    ("nan-cpus", lambda d: d["spec"].update(cpus=math.nan), "spec.cpus: must be a number above 0"),
    ("infinite-cpus", lambda d: d["spec"].update(cpus=math.inf), "spec.cpus: must be a number above 0"),
    (
        "empty-name",
        lambda d: d["spec"].update(name=""),
        'spec.name: must be a deployment name (letters, digits, -_.), got ""',
    ),
    ("slash-name", lambda d: d["spec"].update(name="a/b"), "spec.name: must be a deployment name"),
    ("traversal-name", lambda d: d["spec"].update(name="../../x"), 'got "../../x"'),
    ("long-name", lambda d: d["spec"].update(name="n" * 200), "spec.name: must be a deployment name"),
    (
        "number-name",
        lambda d: d["spec"].update(name=7),
        "spec.name: must be a deployment name (letters, digits, -_.), got 7",
    ),
    (
        "unknown-master",
        lambda d: d["spec"].update(master="gpu-z"),
        "spec.master: 'gpu-z' is not one of the plan's nodes",
    ),
    (
        "dp-local-above-dp",
        lambda d: d["spec"].update(dp_local=99),
        "spec.dp_local: must be at most spec.dp (3), got 99",
    ),
    ("dp-local-not-the-master's", lambda d: d["spec"].update(dp_local=1), "the master hosts 2 ranks, the spec says 1"),
    ("ranks-out-of-order", lambda d: d["ranks"].reverse(), "ranks: must list ranks 0..2 in order"),
    ("rank-off-the-master", lambda d: d["spec"].update(master="gpu-b"), "ranks[0]: must be on the master"),
    (
        "wrong-strategy",
        lambda d: d["ranks"][0].update(strategy="PACK"),
        "must be STRICT_PACK for pack fill, got 'PACK'",
    ),
    ("rank-missing", lambda d: d["ranks"].pop(), "ranks: must list 3 ranks (spec.dp), got 2"),
    ("short-bundle", lambda d: d["ranks"][0]["bundles"][0]["resources"].update(GPU=2), "must hold 4 devices (tp x pp)"),
    ("control-cpus", lambda d: d["ranks"][0]["bundles"][0]["resources"].update(CPU=5), "not the per_node bundles"),
    (
        "per-device:bundle-of-two",
        lambda d: d["ranks"][0]["bundles"][0]["resources"].update(GPU=2),
        "not the per_device bundles of a rank of 4 GPU on gpu-a",
    ),
    (
        "per-device:control-cpus",
        lambda d: d["ranks"][0]["bundles"][-1]["resources"].update(CPU=5),
        "not the per_device bundles",
    ),
    (
        "unknown-layout",
        lambda d: d["spec"].update(bundles="per_rank"),
        "spec.bundles: must be one of per_node, per_device",
    ),
    ("node-listed-twice", lambda d: d["nodes"].append(copy.deepcopy(d["nodes"][0])), "is given twice"),
    ("world-size", lambda d: d["spec"].update(world_size=5), "spec.world_size: must be tp x pp (4), got 5"),
]


@pytest.mark.parametrize(("tamper", "words"), [t[1:] for t in TAMPERS], ids=[t[0] for t in TAMPERS])
def test_a_tampered_plan_file_is_refused(
    request: pytest.FixtureRequest, tamper: Callable[[dict[str, Any]], None], words: str
) -> None:
    """Each edit is refused with the first violation named, before anything could be created."""
    doc = fresh("per_device" if request.node.callspec.id.startswith("per-device:") else "per_node")
    tamper(doc)
    with pytest.raises(BadInput) as err:
        checked(doc)
    assert words in err.value.message


@pytest.mark.parametrize("layout", ["per_node", "per_device"])
def test_an_untouched_plan_file_passes(layout: str) -> None:
    """The checks accept exactly what `dpctl plan --out` writes, in either layout."""
    loaded = checked(fresh(layout))
    assert [r.nodes for r in loaded.ranks] == [("gpu-a",), ("gpu-a",), ("gpu-b",)]
    assert loaded.spec.bundles == layout


def test_a_node_gone_since_planning_is_refused() -> None:
    """A plan whose node has left the cluster does not fit, whatever its fingerprint says."""
    loaded = plan_from_document(fresh())
    with pytest.raises(BadInput) as err:
        check_fits(loaded, tuple(n for n in NODES if n.id != "gpu-b"))
    assert "nodes: 'gpu-b' (10.0.0.3) is not in the cluster now" in err.value.message


def with_spares(count: int = 2) -> dict[str, Any]:
    result = plan(PlanRequest("tampered", Placement(dp=3, tp=4, pack="fill", spares=count), NODES))
    assert isinstance(result, Plan)
    return plan_to_document(result)


def test_a_plan_file_keeps_its_spares() -> None:
    loaded = checked(with_spares())
    assert [s.nodes for s in loaded.spares] == [("gpu-b",), ("gpu-c",)]
    assert loaded.spec.spares == 2


SPARE_TAMPERS = [
    ("spare-missing", lambda d: d["spares"].pop(), "spares: must list 2 spares (spec.spares), got 1"),
    ("spare-renumbered", lambda d: d["spares"][1].update(spare=5), "spares[1].spare: must be 1"),
    (
        "spare-on-a-full-node",
        lambda d: [b.update(node="gpu-a") for b in d["spares"][0]["bundles"]],
        "spares[0].nodes: must list the nodes of its bundles",
    ),
    ("spare-too-big", lambda d: d["spares"][0]["bundles"][0]["resources"].update(GPU=8), "spares[0].bundles"),
]


@pytest.mark.parametrize(("tamper", "words"), [t[1:] for t in SPARE_TAMPERS], ids=[t[0] for t in SPARE_TAMPERS])
def test_a_tampered_spare_is_refused(tamper: Callable[[dict[str, Any]], None], words: str) -> None:
    doc = with_spares()
    tamper(doc)
    with pytest.raises(BadInput) as err:
        checked(doc)
    assert words in err.value.message


def test_a_spare_moved_onto_a_full_node_does_not_fit() -> None:
    """gpu-a, the master, holds ranks 0 and 1: a spare there is refused as a third rank there would be."""
    doc = with_spares()
    for bundle in doc["spares"][0]["bundles"]:
        bundle["node"] = "gpu-a"
    doc["spares"][0]["nodes"] = ["gpu-a"]
    doc["spares"][0]["local_rank"] = 2
    with pytest.raises(BadInput) as err:
        checked(doc)
    assert "the master hosts 3 ranks" in err.value.message
