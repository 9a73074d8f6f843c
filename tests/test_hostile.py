"""Each hostile input the fuzz run of issue 13 found, in its own process with bounded memory and time.

Every case runs `python -m dpctl_ray` under a 512 MiB address-space limit and a 20 s timeout, and states
the exit code and the words the user sees.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from dpctl_ray.planner import Placement, Plan, PlanRequest, plan
from dpctl_ray.planner.document import plan_to_document
from dpctl_ray.planner.inventory import nodes_from_document
from tests.conftest import EXAMPLE_INVENTORY, ROOT

MEMORY = 512 * 2**20
INV = str(EXAMPLE_INVENTORY)
BIG = "9" * 4301
WIDE = "9" * 400


def bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def node(**resources: object) -> str:
    return (
        "nodes:\n- {id: a, ip: 10.0.0.2, resources: {CPU: 64, "
        + ", ".join(f"{k}: {v}" for k, v in resources.items())
        + "}}\n"
    )


def plan_document(**changes: object) -> str:
    result = plan(
        PlanRequest(
            "p",
            Placement(dp=2, tp=2),
            nodes_from_document({"nodes": [{"ip": "10.0.0.2", "resources": {"CPU": 8, "GPU": 8}}]}),
        )
    )
    assert isinstance(result, Plan)
    doc = plan_to_document(result)
    for key, value in changes.items():
        if key.startswith("spec."):
            doc["spec"][key[5:]] = value
        else:
            doc[key] = value
    return json.dumps(doc)


def command_config(**engine: object) -> str:
    base = {"kind": "command", "argv": ["serve"], "ready": {"tcp": "{port}"}, **engine}
    return json.dumps({"engine": base})


# (id, files {name: text}, argv with {tmp} for the directory, exit code, words in the error line or output)
CASES = [
    ("superscript-dp", {}, ["plan", "-i", INV, "--dp=²"], 2, '--dp: must be a positive integer, got "²"'),
    ("double-minus-dp", {}, ["plan", "-i", INV, "--dp=--5"], 2, '--dp: must be a positive integer, got "--5"'),
    ("arabic-indic-dp", {}, ["plan", "-i", INV, "--dp", "٣"], 2, "--dp: must be a positive integer"),
    (
        "superscript-config",
        {"c.yaml": 'placement: {dp: "²"}'},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "placement.dp",
    ),
    (
        "huge-int-inventory",
        {"i.json": '{"nodes": [{"ip": "10.0.0.1", "resources": {"GPU": ' + BIG + "}}]}"},
        ["plan", "-i", "{tmp}/i.json"],
        2,
        "more than 4300 digits",
    ),
    (
        "huge-int-config",
        {"c.yaml": f"placement: {{dp: {BIG}}}"},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "more than 4300 digits",
    ),
    (
        "huge-int-plan",
        {"p.json": plan_document()[:-1] + ', "x": ' + BIG + "}"},
        ["up", "--plan", "{tmp}/p.json"],
        2,
        "more than 4300 digits",
    ),
    ("huge-int-flag", {}, ["plan", "-i", INV, "--dp", BIG], 2, "--dp: must be a positive integer of at most 1,000,000"),
    (
        "31-digit-tp",
        {},
        ["plan", "-i", INV, "--tp", "1" + "0" * 30],
        2,
        "--tp: must be a positive integer of at most 65,536",
    ),
    (
        "nodes-entry-not-text",
        {"c.yaml": "placement: {nodes: [gpu-a, 3]}"},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "placement.nodes[1]: must be a node id or ip (printable text), got 3",
    ),
    (
        "nodes-string-not-printable",
        {"c.json": '{"placement": {"nodes": "gpu-a\\u001b"}}'},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        'placement.nodes: must be a node id or ip (printable text), got "gpu-a\\x1b"',
    ),
    (
        "argv-element-a-list",
        {"c.json": command_config(argv=["serve", ["x"]])},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "engine.argv[1]: must be a string, got a list",
    ),
    (
        "env-nul",
        {"c.json": command_config(env={"A": "x\u0000y"})},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "engine.env.A: must not contain a NUL byte",
    ),
    (
        "runtime-env-nul",
        {"c.json": '{"cluster": {"runtime_env": {"env_vars": {"A": "x\\u0000"}}}}'},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "cluster.runtime_env.env_vars.A: must not contain a NUL byte",
    ),
    (
        "blank-labels",
        {"i.yaml": "nodes:\n  - {id: a, ip: 10.0.0.2, resources: {GPU: 8}, labels: }\n"},
        ["plan", "-i", "{tmp}/i.yaml"],
        2,
        "hint: e.g. labels: {zone: us-east-1a}",
    ),
    (
        "deep-yaml-names-its-key",
        {"c.yaml": "engine: {args: {x: " + "[" * 40 + "]" * 40 + "}}"},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "nested too deeply at engine.args.x[0][0]",
    ),
    ("huge-float-gpu", {"i.yaml": node(GPU="1.0e+305")}, ["plan", "-i", "{tmp}/i.yaml"], 2, "must be at most 1e+15"),
    (
        "huge-float-cpus-flag",
        {},
        ["plan", "-i", INV, "--cpus", "1e305"],
        2,
        "--cpus: must be a number above 0 of at most 1e+06",
    ),
    (
        "huge-float-cpus-config",
        {"c.yaml": "placement: {cpus: 1e308}"},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "placement.cpus: must be a number above 0 of at most",
    ),
    ("wide-int-resource", {"i.yaml": node(GPU=WIDE)}, ["plan", "-i", "{tmp}/i.yaml"], 2, "an integer of 400 digits"),
    (
        "wide-int-cpus",
        {"c.yaml": f"placement: {{cpus: {WIDE}}}"},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "placement.cpus",
    ),
    (
        "wide-int-timeout",
        {"c.yaml": f"timeouts: {{ready: {WIDE}}}"},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "timeouts.ready: must be a number above 0 of at most 604800",
    ),
    (
        "wide-int-grace",
        {"c.json": command_config(stop_grace=int(WIDE))},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "engine.stop_grace",
    ),
    (
        "billion-gpus-table",
        {"i.yaml": node(GPU=10**9)},
        ["plan", "-i", "{tmp}/i.yaml", "--dp", "4", "--tp", "8"],
        0,
        "0:8  1:8  2:8  3:8  · 999,999,968",
    ),
    (
        "hundred-million-gpus-table",
        {"i.yaml": node(GPU=10**8)},
        ["plan", "-i", "{tmp}/i.yaml", "--full"],
        0,
        "0:2  1:2  · 99,999,996",
    ),
    ("1e30-gpus", {"i.yaml": node(GPU="1.0e+30")}, ["plan", "-i", "{tmp}/i.yaml"], 2, "must be at most 1e+15"),
    (
        "deep-json-inventory",
        {"i.json": "[" * 1000 + "]" * 1000},
        ["plan", "-i", "{tmp}/i.json"],
        2,
        "nested too deeply",
    ),
    (
        "deep-json-config",
        {"c.json": '{"engine": {"kind": "python", "class": "a:B", "args": {"x": ' + "[" * 1000 + "]" * 1000 + "}}}"},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "nested too deeply",
    ),
    (
        "deep-json-plan",
        {"p.json": "{" + '"a": {' * 999 + "}" * 1000},
        ["up", "--plan", "{tmp}/p.json"],
        2,
        "nested too deeply",
    ),
    (
        "surrogate-id",
        {"i.json": '{"nodes": [{"id": "\\ud800", "ip": "10.0.0.2", "resources": {"GPU": 8}}]}'},
        ["plan", "-i", "{tmp}/i.json", "-o", "json"],
        2,
        "nodes[0].id: must be 1-256 printable characters",
    ),
    (
        "surrogate-ip",
        {"i.json": '{"nodes": [{"ip": "\\ud800", "resources": {"GPU": 8}}]}'},
        ["plan", "-i", "{tmp}/i.json", "-o", "yaml"],
        2,
        "nodes[0].ip: must be an IPv4 or IPv6 address",
    ),
    ("alias-bomb-6", {"b.yaml": bomb(6)}, ["plan", "-i", "{tmp}/b.yaml"], 2, "uses more than 32 YAML aliases"),
    (
        "alias-bomb-7",
        {"b.yaml": bomb(7)},
        ["plan", "-f", "{tmp}/b.yaml", "-i", INV],
        2,
        "uses more than 32 YAML aliases",
    ),
    ("alias-bomb-9", {"b.yaml": bomb(9)}, ["plan", "-i", "{tmp}/b.yaml"], 2, "uses more than 32 YAML aliases"),
    (
        "plan-warnings-null",
        {"p.json": plan_document(warnings=None)},
        ["up", "--plan", "{tmp}/p.json"],
        2,
        "warnings: must be a list of strings",
    ),
    (
        "plan-warnings-number",
        {"p.json": plan_document(warnings=3)},
        ["up", "--plan", "{tmp}/p.json"],
        2,
        "warnings: must be a list of strings",
    ),
    (
        "plan-dp-1e8",
        {"p.json": plan_document(**{"spec.dp": 10**8})},
        ["up", "--plan", "{tmp}/p.json"],
        2,
        "spec.dp: must be an integer from 1 to 1,000,000",
    ),
    (
        "plan-dp-1e9",
        {"p.json": plan_document(**{"spec.dp": 10**9})},
        ["up", "--plan", "{tmp}/p.json"],
        2,
        "spec.dp: must be an integer from 1 to 1,000,000",
    ),
    (
        "plan-version-string",
        {"p.json": plan_document(version="1")},
        ["up", "--plan", "{tmp}/p.json"],
        2,
        "version: expected the integer 1",
    ),
    (
        "plan-version-bool",
        {"p.json": plan_document(version=True)},
        ["up", "--plan", "{tmp}/p.json"],
        2,
        "version: expected the integer 1",
    ),
    (
        "plan-fingerprint-number",
        {"p.json": plan_document(cluster_fingerprint=5)},
        ["up", "--plan", "{tmp}/p.json"],
        2,
        "cluster_fingerprint: must be the fingerprint",
    ),
    (
        "base-port-65536",
        {"c.json": command_config(base_port=65536)},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "engine.base_port: must be an integer >= 0 of at most 65,535",
    ),
    (
        "master-port-65536",
        {"c.json": command_config(master_port=70000)},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "engine.master_port",
    ),
    (
        "cwd-null",
        {"c.json": command_config(cwd=None)},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "engine.cwd: is empty (null)",
    ),
    (
        "env-empty-name",
        {"c.json": command_config(env={"": "x"})},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        'engine.env: must be an environment variable name, got ""',
    ),
    (
        "tcp-not-a-port",
        {"c.json": command_config(ready={"tcp": "not a port"})},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "engine.ready.tcp (port)",
    ),
    (
        "tcp-99999",
        {"c.json": command_config(ready={"tcp": 99999})},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "engine.ready.tcp: must be a positive integer of at most 65,535",
    ),
    (
        "nested-placeholder",
        {"c.json": command_config(argv=["x", "{rank:{bogus}}"])},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "has a format spec or conversion; write {rank}",
    ),
    (
        "conversion-placeholder",
        {"c.json": command_config(argv=["x", "{rank!x}"])},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "engine.argv[1]",
    ),
    (
        "format-spec-placeholder",
        {"c.json": command_config(argv=["x", "{rank:zz}"])},
        ["plan", "-i", INV, "-f", "{tmp}/c.json"],
        2,
        "placeholder {rank:zz} has a format spec",
    ),
    ("newline-in-dp", {}, ["plan", "-i", INV, "--dp", "2\n3"], 2, '--dp: must be a positive integer, got "2\\n3"'),
    (
        "escape-in-device",
        {},
        ["plan", "-i", INV, "--device", "\x1b[31mGPU"],
        2,
        "--device: must be a non-empty line of text",
    ),
    (
        "newline-in-key",
        {"c.yaml": '"place\\nment": {}'},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "place\\nment: unknown key",
    ),
    (
        "huge-scalar",
        {"c.yaml": "name: " + "x" * 50_000_000},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "...(50,000,000 characters)",
    ),
    ("scale-timeout-negative", {}, ["scale", "--dp", "2", "--timeout", "-1"], 2, "--timeout: must be a number above 0"),
    ("empty-inventory-flag", {}, ["plan", "--inventory", ""], 2, "inventory file: the path is empty"),
    (
        "empty-nodes-flag",
        {},
        ["plan", "-i", INV, "--nodes", ""],
        2,
        "--nodes: names an empty node",
    ),
    (
        "explicit-null",
        {"c.yaml": "placement: {dp_local: null}"},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "placement.dp_local: is empty (null)",
    ),
    (
        "hostname-ip",
        {"i.yaml": "nodes:\n- {ip: gpu-host, resources: {GPU: 8}}\n"},
        ["plan", "-i", "{tmp}/i.yaml"],
        2,
        "nodes[0].ip: must be an IPv4 or IPv6 address",
    ),
    (
        "duplicate-key-yaml",
        {"c.yaml": "name: a\nname: b\n"},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        'the key "name" is given twice',
    ),
    (
        "duplicate-key-json",
        {"i.json": '{"nodes": [{"ip": "10.0.0.2", "ip": "10.0.0.3"}]}'},
        ["plan", "-i", "{tmp}/i.json"],
        2,
        'the key "ip" is given twice',
    ),
    (
        "timeout-beyond-a-week",
        {"c.yaml": "timeouts: {placement: 1e9}"},
        ["plan", "-i", INV, "-f", "{tmp}/c.yaml"],
        2,
        "of at most 604800",
    ),
    ("device-file", {}, ["plan", "-i", "/dev/zero"], 2, "is not a regular file"),
    ("usage-error-as-json", {}, ["plan", "-o", "json", "--dpp", "3"], 2, '"code": "usage"'),
]


def run(argv: list[str], tmp: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["DPCTL_HOME"] = str(tmp / "home")
    env["RAY_ADDRESS"] = "127.0.0.1:9"  # nothing there: no case may reach for a cluster and hang
    return subprocess.run(
        [sys.executable, "-m", "dpctl_ray", *(a.replace("{tmp}", str(tmp)) for a in argv)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=env,
        cwd=ROOT,
        preexec_fn=limit,
        check=False,
    )


@pytest.mark.parametrize(("files", "argv", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_one_clean_answer(
    tmp_path: Path, files: dict[str, str], argv: list[str], code: int, words: str
) -> None:
    """The input ends in its documented exit code and words: one error line, no traceback, bounded memory and time."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = run(argv, tmp_path)
    assert result.returncode == code, result.stderr[-3000:]
    assert words in result.stdout + result.stderr, (result.stdout[-2000:], result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("dpctl: error:")]
    assert len(errors) == (1 if code else 0), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert all(len(line) < 2500 for line in result.stderr.splitlines())


def test_a_file_above_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    """A (sparse) inventory of 300 MiB is refused by its size, before a byte is read."""
    path = tmp_path / "big.json"
    with path.open("wb") as f:
        f.truncate(300 * 2**20)
    result = run(["plan", "-i", str(path)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "bytes; dpctl reads at most 268,435,456" in result.stderr


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A named pipe as a config file is exit 2 at once, not a read that waits for a writer."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = run(["plan", "-i", INV, "-f", str(fifo)], tmp_path, timeout=10)
    assert result.returncode == 2, result.stderr
    assert "is not a regular file" in result.stderr


def test_cpu_as_the_device_counts_devices_and_engines_once(tmp_path: Path) -> None:
    """With --device CPU the document has one CPU count per node: devices and control bundles together."""
    inventory = tmp_path / "cpu.yaml"
    inventory.write_text("nodes:\n- {id: a, ip: 10.0.0.2, resources: {CPU: 16}}\n")
    result = run(["plan", "-i", str(inventory), "--device", "CPU", "--dp", "2", "--tp", "4", "-o", "json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('"available": {"CPU": 16}') == 1
    doc = json.loads(result.stdout)
    assert doc["nodes"][0]["planned"] == {"CPU": 10}


def test_escape_sequences_in_node_ids_never_reach_the_terminal(tmp_path: Path) -> None:
    """A node id cannot carry ESC; one that only looks odd is shown as written, in one line."""
    inventory = tmp_path / "odd.json"
    inventory.write_text(json.dumps({"nodes": [{"id": "\x1b[2Jgone", "ip": "10.0.0.2", "resources": {"GPU": 8}}]}))
    result = run(["plan", "-i", str(inventory)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "\x1b" not in result.stderr
    assert "\\x1b[2Jgone" in result.stderr
