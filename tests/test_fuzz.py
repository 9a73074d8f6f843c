"""A fuzz of every offline entry point: whatever the input, dpctl answers with exit 0, 2 or 3 and one clean line.

Inventories, configs and plan files are valid documents mutated by Hypothesis (values swapped for hostile
ones, keys dropped or added), or hostile texts outright; flags get hostile values. For each input: the exit
code is 0, 2 or 3; an error is exactly one `dpctl: error:` line (and at most a hint) with no control
character in it; `-o json` prints a JSON document; and no input takes more than a few seconds.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpctl_ray.planner import Placement, Plan, PlanRequest, plan
from dpctl_ray.planner.document import plan_to_document
from dpctl_ray.planner.inventory import nodes_from_document
from tests.conftest import EXAMPLE_INVENTORY, Invoke

SECONDS_PER_INPUT = 5.0
INVENTORY = yaml.safe_load(EXAMPLE_INVENTORY.read_text())
CONFIGS = [
    {"name": "f", "placement": {"dp": 2, "tp": 2, "pack": "fill", "nodes": ["gpu-a", "gpu-b"]}},
    {
        "name": "cmd",
        "placement": {"dp": 1, "tp": 4, "cpus": 0.5},
        "engine": {
            "kind": "command",
            "argv": ["serve", "--port", "{port}"],
            "env": {"A": "{rank}"},
            "ready": {"tcp": "{node_ip}:{port}"},
            "base_port": 8000,
            "stop_grace": 5,
        },
        "timeouts": {"placement": 10, "ready": 30},
    },
]


def _plan_document() -> dict[str, Any]:
    result = plan(PlanRequest("p", Placement(dp=3, tp=2, pack="fill"), nodes_from_document(INVENTORY)))
    assert isinstance(result, Plan)
    return plan_to_document(result)


PLAN = _plan_document()

HOSTILE_STRINGS = [
    "",
    " ",
    "\ud800",
    "\x1b[31mred\x1b[0m",
    "a\nb",
    "\u2028",
    "²",
    "٣",
    "--5",
    "-1",
    "0",
    "1e305",
    "1e-5",
    "nan",
    "inf",
    "auto",
    "9" * 5000,
    "x" * 100_000,
    "{rank:{bogus}}",
    "{rank!x}",
    "{rank:zz}",
    "../../x",
    "a/b",
    "10.0.0.2",
    "gpu-a",
    "CPU",
    "GPU",
]
scalars = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([10**400, -(10**400), 2**63, 65536, 99999]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e305, 1e308, -0.0, 5e-324]),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)

HOSTILE_TEXTS = [
    "",
    "~",
    "[]",
    "{}",
    "nodes:",
    "\x00\x01\x02",
    "nodes: [" * 200,
    "[" * 2000 + "]" * 2000,
    '{"nodes": [], "nodes": []}',
    "name: a\nname: b\n",
    "a: &a [*a]\n",
    "\n".join(
        ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
        + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    ),
    '{"nodes": [{"ip": "10.0.0.1", "resources": {"GPU": ' + "9" * 5000 + "}}]}",
    "nodes:\n- {ip: 10.0.0.1, resources: {GPU: 1.0e+305}}\n",
    "nodes:\n- {ip: 10.0.0.1, resources: {GPU: 1000000000, CPU: 4}}\n",
    '{"version": 1, "spec": {"name": "p", "dp": 100000000}, "ranks": [], "nodes": [], "cluster_fingerprint": "x"}',
    '{"version": 1, "warnings": null}',
]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _paths(value, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """`base` with one to three values replaced, keys dropped, or keys added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        if not path:
            return draw(values)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "nodes", "id", "dp", "ip", "kind"]))] = draw(values)
        else:
            parent.append(draw(values))
    return doc


@st.composite
def files(draw: st.DrawFn, base: Any) -> str:
    """A document's text: a mutation of `base` as JSON or YAML, or a hostile text."""
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        return draw(st.sampled_from(HOSTILE_TEXTS))
    doc = draw(mutated(base))
    if draw(st.booleans()):
        return json.dumps(doc)
    try:
        return yaml.safe_dump(doc)
    except yaml.YAMLError:  # a lone surrogate cannot be written as YAML; JSON can
        return json.dumps(doc)


def check(result: Any, *, document: bool) -> None:
    """The invariant of every offline run."""
    assert result.exit_code in (0, 2, 3), (result.exit_code, result.stderr[-2000:])
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("dpctl: error: ")]
    assert len(errors) == (0 if result.exit_code == 0 else 1), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert all(line.isprintable() for line in lines), result.stderr[-2000:]
    assert all(len(line) < 2500 for line in lines)
    if document:
        json.loads(result.stdout)


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


def run(cli: Invoke, *args: str, document: bool = True) -> None:
    started = time.monotonic()
    result = cli(*args)
    assert time.monotonic() - started < SECONDS_PER_INPUT, args
    check(result, document=document)


@FUZZ
@given(text=files(INVENTORY), output=st.sampled_from(["json", "table", "yaml"]))
def test_any_inventory(cli: Invoke, tmp_path: Path, text: str, output: str) -> None:
    """Whatever an inventory file holds, `plan --inventory` keeps the invariant."""
    path = tmp_path / "inv.txt"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    run(cli, "plan", "--inventory", str(path), "-o", output, document=output == "json")


@FUZZ
@given(text=st.sampled_from(CONFIGS).flatmap(files), output=st.sampled_from(["json", "table"]))
def test_any_config(cli: Invoke, tmp_path: Path, text: str, output: str) -> None:
    """Whatever a config file holds, `plan -f` keeps the invariant."""
    path = tmp_path / "config.txt"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    run(cli, "plan", "-f", str(path), "--inventory", str(EXAMPLE_INVENTORY), "-o", output, document=output == "json")


FLAGS = ["--dp", "--dp-local", "--tp", "--pp", "--pack", "--device", "--master", "--nodes", "--cpus", "--name"]


@FUZZ
@given(
    flags=st.lists(
        st.tuples(st.sampled_from(FLAGS), st.sampled_from(HOSTILE_STRINGS) | st.text(max_size=8)), max_size=3
    )
)
def test_any_flags(cli: Invoke, flags: list[tuple[str, str]]) -> None:
    """Whatever the placement flags say, `plan` keeps the invariant."""
    args = [part for flag, value in flags for part in (flag, value) if "\x00" not in value]
    run(cli, "plan", "--inventory", str(EXAMPLE_INVENTORY), *args, "-o", "json")


@FUZZ
@given(text=files(PLAN))
def test_any_plan_file(cli: Invoke, tmp_path: Path, text: str) -> None:
    """Whatever a plan file holds, `up --plan` refuses it, or reaches for the cluster, with exit 2 and one line."""
    path = tmp_path / "plan.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    run(cli, "up", "--plan", str(path), "--address", "127.0.0.1:9", "-o", "json")


@pytest.mark.parametrize("text", HOSTILE_TEXTS, ids=range(len(HOSTILE_TEXTS)))
def test_each_hostile_text_as_each_kind_of_file(cli: Invoke, tmp_path: Path, text: str) -> None:
    """The hostile texts, as an inventory, a config and a plan file (JSON and YAML by name)."""
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"doc{suffix}"
        path.write_text(text)
        run(cli, "plan", "--inventory", str(path), "-o", "json")
        run(cli, "plan", "-f", str(path), "--inventory", str(EXAMPLE_INVENTORY), "-o", "json")
        run(cli, "up", "--plan", str(path), "--address", "127.0.0.1:9", "-o", "json")
