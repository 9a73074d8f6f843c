"""`dpctl plan` in-process: tables, JSON and YAML documents, plan files, and every exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpctl_ray.planner.plan_file import plan_from_document
from tests.conftest import EXAMPLE_INVENTORY, ROOT, Invoke, gpu_nodes

INV = str(EXAMPLE_INVENTORY)
RACKS = str(ROOT / "configs" / "inventories" / "four-by-eight.yaml")  # gpu-a, gpu-b in rack r1; gpu-c, gpu-d in r2


def assert_one_error_line(stderr: str, fragment: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("dpctl: error: ")]
    assert len(lines) == 1, stderr
    assert fragment in lines[0], stderr
    assert "Traceback" not in stderr


def test_table_shows_each_rank_and_a_device_map(cli: Invoke) -> None:
    """The table lists every rank with node, ip, devices and strategy, and maps each node's devices to ranks."""
    result = cli("plan", "--inventory", INV, "--dp", "3", "--tp", "4")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "demo: 3 ranks of TP 4 (12 GPU on 2 nodes), pack strict, dp_local 2, bundles per_node" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["0", "0", "gpu-a", "10.0.0.2", "4", "GPU", "STRICT_PACK"] in rows
    assert ["2", "0", "gpu-b", "10.0.0.3", "4", "GPU", "STRICT_PACK"] in rows
    assert "0 0 0 0 1 1 1 1" in out  # gpu-a: ranks 0 and 1 take all eight devices
    assert "x x 2 2 2 2 · ·" in out  # gpu-b: two busy, rank 2, two free
    assert result.stderr == ""


def test_table_fits_in_100_columns(cli: Invoke, write_yaml: Callable[[str, Any], str]) -> None:
    """Piped table output stays within 100 columns, even with 56-character Ray node ids."""
    doc = gpu_nodes(3)
    for i, node in enumerate(doc["nodes"]):
        node["id"] = f"{i:02d}" + "ab" * 27
    result = cli("plan", "--inventory", write_yaml("inv.yaml", doc), "--dp", "6", "--tp", "4", "--pack", "fill")
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 100
    assert "01ababab" in result.stdout  # ids cut to a unique prefix


def test_json_is_the_design_document_and_nothing_else(cli: Invoke) -> None:
    """-o json prints only the plan document on stdout, in the DESIGN.md shape."""
    result = cli("plan", "--inventory", INV, "--dp", "3", "--tp", "4", "-o", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["version"] == 1
    assert doc["spec"] == {
        "name": "demo",
        "dp": 3,
        "dp_local": 2,
        "tp": 4,
        "pp": 1,
        "world_size": 4,
        "pack": "strict",
        "device": "GPU",
        "cpus": 1,
        "master": "gpu-a",
        "nodes": [],
        "bundles": "per_node",
    }
    assert doc["ranks"][0] == {
        "rank": 0,
        "local_rank": 0,
        "strategy": "STRICT_PACK",
        "nodes": ["gpu-a"],
        "bundles": [{"node": "gpu-a", "resources": {"GPU": 4, "CPU": 1}}],
    }
    gpu_b = next(n for n in doc["nodes"] if n["id"] == "gpu-b")
    assert gpu_b == {
        "id": "gpu-b",
        "ip": "10.0.0.3",
        "head": False,
        "available": {"GPU": 6, "CPU": 60},
        "planned": {"GPU": 4, "CPU": 1},
    }
    assert len(doc["cluster_fingerprint"]) == 16


def test_yaml_output_is_the_same_document(cli: Invoke) -> None:
    """-o yaml prints the same document as -o json."""
    as_json = json.loads(cli("plan", "--inventory", INV, "--dp", "2", "--tp", "4", "-o", "json").stdout)
    result = cli("plan", "--inventory", INV, "--dp", "2", "--tp", "4", "-o", "yaml")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == as_json


def test_out_writes_a_plan_file_that_reads_back(cli: Invoke, tmp_path: Path) -> None:
    """--out writes the plan document with its fingerprint and says so on stderr, keeping the table on stdout."""
    target = tmp_path / "plan.json"
    result = cli("plan", "--inventory", INV, "--dp", "2", "--tp", "4", "--out", str(target))
    assert result.exit_code == 0, result.output
    assert "STRICT_PACK" in result.stdout
    assert f"wrote {target}" in result.stderr
    back = plan_from_document(json.loads(target.read_text()))
    assert [r.nodes for r in back.ranks] == [("gpu-a",), ("gpu-a",)]
    assert back.fingerprint in result.stderr


def test_infeasible_exits_3_with_causes_on_stderr(cli: Invoke) -> None:
    """An infeasible plan exits 3, names the rank, the need and the best node, and lists skipped nodes."""
    result = cli("plan", "--inventory", INV, "--dp", "5", "--tp", "4")
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    assert_one_error_line(result.stderr, "cannot place rank 2 of 5")
    assert "gpu-b (10.0.0.3), has 6 GPU and 60 CPU free" in result.stderr
    assert "too few free GPU: has 6, needs 8" in result.stderr
    assert "hint: 2 of 5 ranks fit" in result.stderr


def test_infeasible_json_is_an_error_document(cli: Invoke) -> None:
    """With -o json an infeasible plan prints {"error": {...}} with its causes on stdout and exits 3."""
    result = cli("plan", "--inventory", INV, "--dp", "5", "--tp", "4", "--pack", "fill", "-o", "json")
    assert result.exit_code == 3, result.output
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "insufficient"
    assert error["rank"] == 3
    assert error["need"] == {"GPU": 4, "CPU": 1}
    assert error["best"]["node"] == "gpu-b"
    assert "cannot place rank 3 of 5" in error["message"]


def test_unknown_master_is_bad_input_naming_the_flag(cli: Invoke) -> None:
    """A master no node answers to is bad input (exit 2), naming the flag as typed and the value."""
    result = cli("plan", "--inventory", INV, "--master", "10.9.9.9")
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, '--master: no node has the id or ip "10.9.9.9"')


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--tp", "0", "--tp: must be a positive integer, got 0"),
        ("--tp", "eight", '--tp: must be a positive integer, got "eight"'),
        ("--dp-local", "many", '--dp-local: must be auto or a positive integer, got "many"'),
        ("--pack", "tight", '--pack: must be one of strict, fill, span, got "tight"'),
        ("--cpus", "lots", '--cpus: must be a number above 0, got "lots"'),
        ("--select", "rack", '--select: must be KEY=VALUE, KEY!=VALUE or KEY=in(a,b), got "rack"'),
        ("--select", "rack=in(r1,", "--select: a label value must be letters, digits and -_. inside"),
        ("--select", "bad key=r1", "--select: must be a label name (letters, digits, -_. inside, at most 63)"),
        ("--within", "-rack", "--within: must be a label name"),
        ("--spread", "a/b/", "--spread: must be a label name"),
    ],
    ids=[
        "tp-zero",
        "tp-word",
        "dp-local-word",
        "pack",
        "cpus-word",
        "select-no-value",
        "select-bad-in",
        "select-bad-key",
        "within-bad-key",
        "spread-bad-key",
    ],
)
def test_flag_values_are_checked_with_the_flag_name(cli: Invoke, flag: str, value: str, message: str) -> None:
    """A wrong flag value exits 2 with one line naming the flag as typed."""
    result = cli("plan", "--inventory", INV, flag, value)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, message)


def test_within_and_spread_on_one_label_exit_2_naming_both(cli: Invoke) -> None:
    """A deployment cannot sit inside one value of a label and spread across its values: exit 2, both flags named."""
    result = cli("plan", "--inventory", INV, "--within", "rack", "--spread", "rack")
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "--within and --spread: both name the label")


def test_a_selector_given_twice_is_exit_2(cli: Invoke) -> None:
    """Ray's selector is a mapping: one expression per label."""
    result = cli("plan", "--inventory", INV, "--select", "rack=r1", "--select", "rack!=r2")
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, '--select: selects the label "rack" twice')


def test_label_skips_show_in_the_table_and_the_json(cli: Invoke) -> None:
    """A node skipped for its label is a reason naming the label and value, in the table and in the document."""
    result = cli("plan", "--inventory", RACKS, "--dp", "2", "--tp", "8", "--select", "rack=r2", "--pack", "fill")
    assert result.exit_code == 0, result.output
    assert "label rack=r1 is not selected" in result.stdout
    doc = json.loads(
        cli("plan", "--inventory", RACKS, "--dp", "2", "--tp", "8", "--select", "rack=r2", "-o", "json").stdout
    )
    skipped = {s["node"]: (s["reason"], s.get("label"), s.get("value")) for s in doc["skipped"]}
    assert skipped["gpu-a"] == ("label", "rack", "r1")
    assert doc["spec"]["select"] == {"rack": "r2"}
    assert {n["id"]: n.get("labels") for n in doc["nodes"]}["gpu-c"] == {"rack": "r2"}


def test_within_infeasible_names_each_values_capacity(cli: Invoke) -> None:
    """within with no rack big enough exits 3 naming each rack's free devices, in words and in the document."""
    result = cli("plan", "--inventory", RACKS, "--dp", "3", "--tp", "8", "--within", "rack")
    assert result.exit_code == 3, result.output
    assert_one_error_line(result.stderr, "no value of rack holds the deployment (r1 16 GPU, r2 16 GPU free)")
    doc = json.loads(
        cli("plan", "--inventory", RACKS, "--dp", "3", "--tp", "8", "--within", "rack", "-o", "json").stdout
    )
    assert doc["error"]["within"] == [{"value": "r1", "free": {"GPU": 16}}, {"value": "r2", "free": {"GPU": 16}}]


def test_an_unknown_option_is_one_usage_error_line(cli: Invoke) -> None:
    """Click's own usage errors are one dpctl error line, a hint to --help, and exit 2."""
    result = cli("plan", "--dpp", "3")
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "No such option: --dpp")
    assert "hint: see 'dpctl plan --help'" in result.stderr


def test_spec_errors_exit_2_naming_what_the_user_typed(cli: Invoke, write_yaml: Callable[[str, Any], str]) -> None:
    """dp_local above dp is bad input (exit 2) whatever the cluster; each key is named as it was given."""
    result = cli("plan", "--inventory", INV, "--dp", "2", "--dp-local", "4")
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "--dp-local: must be at most --dp (2), got 4")
    path = write_yaml("local.yaml", {"placement": {"dp_local": 4}})
    result = cli("plan", "-f", path, "--inventory", INV, "--dp", "2")
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "placement.dp_local: must be at most --dp (2), got 4")


def test_config_file_errors_name_the_key_path(cli: Invoke, write_yaml: Callable[[str, Any], str]) -> None:
    """Unknown keys and wrong types in the config file exit 2 naming the file and key path."""
    path = write_yaml("bad.yaml", {"placement": {"tpp": 2}})
    result = cli("plan", "-f", path, "--inventory", INV)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "placement.tpp: unknown key")
    assert "did you mean 'tp'?" in result.stderr
    path = write_yaml("bad2.yaml", {"placement": {"tp": "eight"}})
    result = cli("plan", "-f", path, "--inventory", INV)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, 'placement.tp: must be a positive integer, got "eight"')
    path = write_yaml("bad3.yaml", {"timeouts": {"ready": -1}})
    result = cli("plan", "-f", path, "--inventory", INV)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "timeouts.ready: must be a number above 0, got -1")


def test_flags_override_the_file_and_the_file_overrides_defaults(
    cli: Invoke, write_yaml: Callable[[str, Any], str]
) -> None:
    """The file sets name, dp and tp; a flag then overrides dp only."""
    path = write_yaml("c.yaml", {"name": "prod", "placement": {"dp": 3, "tp": 4, "pack": "fill"}})
    doc = json.loads(cli("plan", "-f", path, "--inventory", INV, "-o", "json").stdout)
    assert (doc["spec"]["name"], doc["spec"]["dp"], doc["spec"]["tp"], doc["spec"]["pack"]) == ("prod", 3, 4, "fill")
    doc = json.loads(cli("plan", "-f", path, "--inventory", INV, "--dp", "1", "-o", "json").stdout)
    assert (doc["spec"]["dp"], doc["spec"]["tp"]) == (1, 4)


def test_dpctl_yaml_in_the_working_directory_is_the_default_config(
    cli: Invoke, write_yaml: Callable[[str, Any], str]
) -> None:
    """./dpctl.yaml is read when no -f is given."""
    write_yaml("dpctl.yaml", {"name": "here", "placement": {"dp": 1, "tp": 8}})
    doc = json.loads(cli("plan", "--inventory", INV, "-o", "json").stdout)
    assert (doc["spec"]["name"], doc["spec"]["tp"]) == ("here", 8)


def test_inventory_errors_name_the_file_and_key_path(cli: Invoke, write_yaml: Callable[[str, Any], str]) -> None:
    """A malformed inventory exits 2 naming the file and the key path of the first problem."""
    doc = gpu_nodes(2)
    doc["nodes"][1]["resources"]["GPU"] = -1
    path = write_yaml("neg.yaml", doc)
    result = cli("plan", "--inventory", path)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, f"{path}: nodes[1].resources.GPU: must be a number >= 0, got -1")

    doc = gpu_nodes(2)
    doc["nodes"][2]["id"] = "gpu-000"
    result = cli("plan", "--inventory", write_yaml("dup.yaml", doc))
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "nodes[2].id: 'gpu-000' is also the id of nodes[1]")

    doc = gpu_nodes(1)
    doc["nodes"][1]["available"] = {"GPU": 9}
    result = cli("plan", "--inventory", write_yaml("over.yaml", doc))
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "nodes[1].available.GPU: 9 exceeds the total 8")


def test_unreadable_inventory_files_exit_2(cli: Invoke, tmp_path: Path) -> None:
    """A missing file, broken YAML or broken JSON is one error line and exit 2."""
    result = cli("plan", "--inventory", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "inventory file not found")
    broken = tmp_path / "broken.yaml"
    broken.write_text("nodes:\n  - id: [unclosed\n")
    result = cli("plan", "--inventory", str(broken))
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "not valid YAML (line 3")
    broken_json = tmp_path / "broken.json"
    broken_json.write_text('{"nodes": [}')
    result = cli("plan", "--inventory", str(broken_json))
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "not valid JSON (line 1")


def test_allow_list_flag_takes_commas_or_repeats(cli: Invoke, write_yaml: Callable[[str, Any], str]) -> None:
    """--nodes a,b and --nodes a --nodes b restrict the plan the same way."""
    inv = write_yaml("inv.yaml", gpu_nodes(4))
    one = json.loads(
        cli("plan", "--inventory", inv, "--dp", "2", "--tp", "8", "--nodes", "gpu-002,gpu-003", "-o", "json").stdout
    )
    two = json.loads(
        cli(
            "plan",
            "--inventory",
            inv,
            "--dp",
            "2",
            "--tp",
            "8",
            "--nodes",
            "gpu-002",
            "--nodes",
            "10.0.1.4",
            "-o",
            "json",
        ).stdout
    )
    assert [r["nodes"] for r in one["ranks"]] == [["gpu-002"], ["gpu-003"]]
    assert [r["nodes"] for r in two["ranks"]] == [["gpu-002"], ["gpu-003"]]


def test_big_plans_are_cut_short_unless_full(cli: Invoke, write_yaml: Callable[[str, Any], str]) -> None:
    """A plan with many ranks shows the first ones and a count of the rest; --full shows all."""
    inv = write_yaml("inv.yaml", gpu_nodes(40))
    short = cli("plan", "--inventory", inv, "--dp", "80", "--tp", "4")
    assert short.exit_code == 0, short.output
    assert "... 48 more ranks (--full shows all" in short.stdout
    full = cli("plan", "--inventory", inv, "--dp", "80", "--tp", "4", "--full")
    assert "more ranks" not in full.stdout
    assert any(line.split()[:1] == ["79"] for line in full.stdout.splitlines())


def test_span_ranks_show_every_node(cli: Invoke, write_yaml: Callable[[str, Any], str]) -> None:
    """A span rank lists all its nodes and how many devices it takes on each."""
    inv = write_yaml("inv.yaml", gpu_nodes(4))
    result = cli("plan", "--inventory", inv, "--dp", "2", "--tp", "16", "--pack", "span")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["0", "0", "gpu-000,", "gpu-001", "10.0.1.1,", "10.0.1.2", "8+8", "GPU", "PACK"] in rows


def test_no_cluster_is_exit_2_without_importing_ray_or_hanging(cli: Invoke) -> None:
    """Without --inventory and with nothing listening at the address, plan exits 2 at once with a hint."""
    result = cli("plan", env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, "no Ray cluster answers at 127.0.0.1:9 (from RAY_ADDRESS)")


def test_version(cli: Invoke) -> None:
    """--version prints the version on stdout."""
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("dpctl ")


def test_offline_plan_never_imports_ray() -> None:
    """`dpctl plan --inventory ... -o json` in a fresh process never imports ray (or rich, for JSON)."""
    code = (
        "import sys\n"
        "from dpctl_ray.cli.app import main\n"
        f"sys.argv = ['dpctl', 'plan', '--inventory', {INV!r}, '-o', 'json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "sys.stderr.write(repr(sorted(m for m in ('ray', 'rich', 'zmq') if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(proc.stdout)["version"] == 1
    assert proc.stderr == "[]"


def test_spares_show_after_the_ranks_and_in_the_documents(cli: Invoke) -> None:
    """Spares are rows after the ranks, `sN` in the device map, a `spares` list in JSON; a plan file keeps them."""
    result = cli("plan", "--inventory", RACKS, "--dp", "3", "--tp", "8", "--spares", "1", "--spares-mode", "started")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "spares: 1 (started: idle engine hosts in each); repair and scale-up take them first" in out
    assert ["spare", "0", "0", "gpu-d", "10.0.0.5", "8", "GPU", "STRICT_PACK"] in [
        line.split() for line in out.splitlines()
    ]
    assert "s0 s0 s0 s0 s0 s0 s0 s0" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    doc = json.loads(cli("plan", "--inventory", RACKS, "--dp", "3", "--tp", "8", "--spares", "1", "-o", "json").stdout)
    assert doc["spec"]["spares"] == 1
    assert [(s["spare"], s["nodes"]) for s in doc["spares"]] == [(0, ["gpu-d"])]
    assert plan_from_document(doc).spares[0].nodes == ("gpu-d",)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--spares", "-1"), "--spares: must be an integer >= 0, got -1"),
        (("--spares", "two"), "--spares: must be an integer >= 0"),
        (("--spares-mode", "hot"), "--spares-mode: must be one of reserved, started"),
    ],
)
def test_bad_spares_are_exit_2_naming_the_flag(cli: Invoke, args: tuple[str, ...], fragment: str) -> None:
    result = cli("plan", "--inventory", RACKS, "--dp", "1", *args)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, fragment)


def test_no_room_for_a_spare_is_exit_3_naming_it(cli: Invoke) -> None:
    result = cli("plan", "--inventory", RACKS, "--dp", "4", "--tp", "8", "--spares", "1")
    assert result.exit_code == 3, result.output
    assert_one_error_line(result.stderr, "cannot place spare 0 of 1")
