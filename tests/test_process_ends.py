"""How a process's end reads (exits), how its leftovers are found and killed (leftovers), and `${VAR}` in configs.

The log samples are vLLM 0.32's own lines, as the CPU build wrote them here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpctl_ray.config import load_config
from dpctl_ray.engines import exits, leftovers
from dpctl_ray.envsubst import expand
from dpctl_ray.errors import ConfigError

STATS = "(APIServer pid=7) INFO 12-05 01:07:52 [loggers.py:259] Engine 000: Avg prompt throughput: 0.0 tokens/s"
ACCESS = '(APIServer pid=7) INFO:     127.0.0.1:50312 - "GET /health HTTP/1.1" 200 OK'
SHUTDOWN = "(APIServer pid=7) INFO:     Shutting down"

BAD_FLAG = [
    "(APIServer pid=7) INFO 12-05 01:07:08 [api_utils.py:347]  version 0.32.0",
    "usage: vllm serve [model_tag] [options]",
    "vllm: error: unrecognized arguments: --bogus-flag 3",
]
BAD_LENGTH = [
    "(APIServer pid=7) INFO 12-05 01:07:08 [model.py:733] Resolved architecture: Qwen2ForCausalLM",
    "Traceback (most recent call last):",
    '  File "/env/bin/vllm", line 10, in <module>',
    "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
    "  Value error, User-specified max_model_len (100000) is greater than the derived max_model_len (512).",
    "    For further information visit https://errors.pydantic.dev/2.12/v/value_error",
    "[rank0]:[W1205 sys:1: ResourceWarning",
]
ENGINE_DEAD = [
    STATS,
    "(APIServer pid=7) ERROR 12-05 01:09:01 [async_llm.py:708] AsyncLLM output_handler failed.",
    "(APIServer pid=7) ERROR 12-05 01:09:01 [async_llm.py:708] Traceback (most recent call last):",
    "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace for the root cause.",
    ACCESS,
    SHUTDOWN,
    ' - leaked function "invert"',
    "nanobind: this is likely caused by a reference counting issue in the binding code.",
]


def test_the_reason_is_the_error_not_the_last_noise() -> None:
    """An argparse error wins; a traceback's exception comes with pydantic's detail; stats and chatter never."""
    assert exits.reason(BAD_FLAG) == ["vllm: error: unrecognized arguments: --bogus-flag 3"]
    assert exits.reason(BAD_LENGTH) == [
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
        "Value error, User-specified max_model_len (100000) is greater than the derived max_model_len (512).",
    ]
    (dead,) = exits.reason(ENGINE_DEAD)
    assert dead.startswith("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.")
    assert exits.reason([STATS, "ERROR EngineCore failed to start: out of memory", ACCESS, SHUTDOWN]) == [
        "ERROR EngineCore failed to start: out of memory"
    ]
    assert exits.reason([STATS, ACCESS, SHUTDOWN]) == []


@pytest.mark.parametrize(
    ("code", "serving", "words"),
    [
        (0, True, "crashed while serving (exit code 0)"),
        (-9, True, "crashed while serving (killed by SIGKILL)"),
        (2, False, "crashed before it was ready (exit code 2)"),
        (-99, False, "crashed before it was ready (killed by signal 99)"),
    ],
)
def test_an_end_dpctl_did_not_ask_for_is_a_crash_whatever_its_code(code: int, serving: bool, words: str) -> None:
    assert exits.crashed(code, [STATS], serving=serving) == words
    long = exits.crashed(code, ["RuntimeError: " + "x" * 500], serving=serving)
    assert long.startswith(words + ": RuntimeError: x")
    assert long.endswith("…")
    assert len(long) < len(words) + exits.REASON_WIDTH + 3


def test_the_progress_lines_are_vllms_words_without_its_prefix() -> None:
    assert exits.clean("(EngineCore pid=13) \x1b[1;36mINFO\x1b[0m ready") == "INFO ready"
    assert exits.noise(ACCESS)
    assert exits.noise(STATS)
    assert not exits.noise("(Worker pid=9) INFO Starting to load model /m...")


@pytest.fixture
def orphan(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A marked session leader, registered, whose child runs with an empty environment (as setproctitle shows it)."""
    env = {**os.environ, **leftovers.marks("orph-test", (3,), 1, "inst1")}
    leader = subprocess.Popen(["/bin/sh", "-c", "env -i /bin/sleep 300 & wait"], env=env, start_new_session=True)
    leftovers.register("orph-test", "inst1", leader.pid, (3,), 1)
    yield leader
    for process in leftovers.find("orph-test"):
        os.kill(process.pid, signal.SIGKILL)
    leader.kill()
    leader.wait()
    leftovers.unregister("orph-test", "inst1")


def test_a_child_left_by_a_killed_leader_is_found_by_its_session_and_killed(orphan: subprocess.Popen[bytes]) -> None:
    """The child has no readable marks and outlives its leader; the registered session still names it."""
    deadline = time.monotonic() + 5
    while len(leftovers.find("orph-test")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    found = {p.pid: p for p in leftovers.find("orph-test")}
    assert orphan.pid in found
    assert found[orphan.pid].instance == "inst1"
    os.kill(orphan.pid, signal.SIGKILL)
    orphan.wait()
    (child,) = leftovers.find("orph-test")
    assert (child.ranks, child.node_index, child.instance) == ((3,), 1, "inst1")
    assert "sleep 300" in child.command
    assert leftovers.kill("orph-test", ranks=(4,)) == []  # another rank's: untouched
    assert leftovers.kill("orph-test", node_index=0) == []  # another node's: untouched
    assert leftovers.kill("orph-test", ranks=(3,)) == [f"{child.pid} {child.command}"]
    assert leftovers.find("orph-test") == []
    assert not leftovers.registry("orph-test").exists(), "a start with nothing left is forgotten"


def test_a_process_of_another_session_or_deployment_is_never_the_deployments() -> None:
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, **leftovers.marks("other-dep", (0,), 0, "x")},
        start_new_session=True,
    )
    try:
        leftovers.register("orph-none", "y", os.getpid() + 10_000_000, (0,), 0)  # a session that never existed
        assert leftovers.find("orph-none") == []
        assert [p.pid for p in leftovers.find("other-dep")] == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_references_in_config_strings_come_from_the_environment(tmp_path: Path) -> None:
    env = {"VLLM_BIN": "/opt/vllm/bin/vllm"}
    doc = {"engine": {"argv": ["${VLLM_BIN:-vllm}", "serve", "${MODEL:-Qwen/Qwen3-0.6B}", "$${literal}"]}}
    assert expand(doc, env) == {"engine": {"argv": ["/opt/vllm/bin/vllm", "serve", "Qwen/Qwen3-0.6B", "${literal}"]}}
    with pytest.raises(ConfigError, match=r"engine\.argv\[0\]: \$\{NOPE\} is not set"):
        expand({"engine": {"argv": ["${NOPE}"]}}, env)
    with pytest.raises(ConfigError, match=r"name: '\$\{1bad\}' has a `\$\{` that is not a reference"):
        expand({"name": "${1bad}"}, env)
    path = tmp_path / "dpctl.yaml"
    path.write_text("engine: {kind: command, argv: ['${DPCTL_TEST_MISSING}']}\n")
    with pytest.raises(ConfigError, match=r"dpctl\.yaml: engine\.argv\[0\]: \$\{DPCTL_TEST_MISSING\} is not set"):
        load_config(str(path))
