"""Real vLLM (the CPU build, from the node image) under dpctl, and the stand-in held to the same assertions.

Each start of a real engine takes a minute or two here, so one deployment is started once and walked through
its life in order: up, a killed server repaired, scaled up and down, its engine killed, down. The checks that
the stand-in must pass too (how a server serves, leaves on SIGTERM and dies with its engine) are functions
run against both.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpctl_ray.engines import leftovers as marked
from tests.conftest import ROOT, dpctl, dpctl_background, leftovers, wait_for
from tests.test_engines import alive, fake_vllm_config, ranks_of

NAME = "vreal"


# --- what a vLLM server does, for the real one and the stand-in alike -----------------------------------


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own loopback server
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _complete(url: str, model: str, tokens: int = 4) -> dict[str, Any]:
    body = json.dumps({"model": model, "prompt": "hello", "max_tokens": tokens, "temperature": 0}).encode()
    request = urllib.request.Request(  # noqa: S310 - our own loopback server
        f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def serves_like_vllm(rank: dict[str, Any], model: str) -> None:
    """A READY rank: its url from `status`, /health 200, the model listed, a completion, vLLM's gauges."""
    assert rank["state"] == "READY", rank
    url = rank["url"]
    assert url == f"http://{rank['ip']}:{rank['port']}"
    assert _get(f"{url}/health")[0] == 200
    code, body = _get(f"{url}/v1/models")
    assert code == 200
    assert [m["id"] for m in json.loads(body)["data"]] == [model]
    answer = _complete(url, model)
    assert answer["object"] == "text_completion"
    assert isinstance(answer["choices"][0]["text"], str)
    assert answer["usage"]["completion_tokens"] == 4
    code, body = _get(f"{url}/metrics")
    assert code == 200
    assert re.search(rb"^vllm:num_requests_running\{", body, re.MULTILINE)
    assert re.search(rb"^vllm:num_requests_waiting\{", body, re.MULTILINE)


def left_on_sigterm(log: str) -> None:
    """A rank stopped by dpctl (scale-down) left on SIGTERM by itself, with exit code 0, before any SIGKILL."""
    found = re.search(r"dpctl: stopped: process \d+ left on SIGTERM in [\d.]+s \(exit code 0\)", log)
    assert found, log[-2000:]


def dies_like_vllm(name: str, rank: dict[str, Any], kill_engine: Callable[[], None]) -> None:
    """Its engine killed: /health stops answering 200 at once, the server exits by itself, `status` says why."""
    url, pid = rank["url"], rank["process_pid"]
    kill_engine()

    def unhealthy() -> bool:
        try:
            return _get(f"{url}/health", timeout=2)[0] != 200
        except OSError:
            return True

    wait_for(unhealthy, timeout=15)
    wait_for(lambda: not alive(pid), timeout=30)
    after = next(r for r in ranks_of(name) if r["rank"] == rank["rank"])
    assert after["state"] == "FAILED", after
    assert "crashed while serving (exit code 0)" in after["detail"]
    assert "EngineDeadError" in after["detail"]


def processes_of(name: str, rank: int) -> list[marked.Leftover]:
    """Every process on this machine that serves this rank of the deployment (its server and what it started)."""
    return [p for p in marked.find(name) if rank in p.ranks]


def rank_log(name: str, rank: int, previous: bool = False) -> str:
    path = Path("/tmp/dpctl-logs") / name / f"rank-{rank}.log"
    return Path(f"{path}.1" if previous else path).read_text(errors="replace")


# --- the stand-in ---------------------------------------------------------------------------------------


@pytest.mark.ray
def test_the_stand_in_serves_stops_and_dies_as_real_vllm_does(live: Any, tmp_path: Path) -> None:
    """The assertions the real vLLM passes below, against the stand-in."""
    die = tmp_path / "die-{rank}"
    config = fake_vllm_config(tmp_path, "twin", knobs={"die_if_exists": str(die)}, stop_grace=10)
    assert dpctl("up", "-f", config).returncode == 0
    try:
        ranks = ranks_of("twin")
        for rank in ranks:
            serves_like_vllm(rank, "Qwen/Qwen3-8B")
        scaled = dpctl("scale", "twin", "--dp", "1")
        assert scaled.returncode == 0, scaled.stderr
        assert not alive(ranks[1]["process_pid"])
        left_on_sigterm(rank_log("twin", 1))
        dies_like_vllm("twin", ranks[0], lambda: Path(str(die).format(rank=0)).touch())
    finally:
        assert dpctl("down", "twin").returncode == 0
    assert marked.find("twin") == []


# --- real vLLM ------------------------------------------------------------------------------------------


def real_config(directory: Path, name: str, dp: int = 2, extra: tuple[str, ...] = ()) -> str:
    """The shipped CPU preset as a user runs it, with the flags given added; the image comes in by env."""
    doc = yaml.safe_load((ROOT / "configs" / "vllm-cpu.yaml").read_text())
    doc["name"] = name
    doc["placement"]["dp"] = dp
    doc["engine"]["argv"] += list(extra)
    doc["engine"]["env"]["HF_HUB_OFFLINE"] = "1"  # no hub here: the model is a local directory
    doc["engine"]["stop_grace"] = 20
    doc["engine"]["base_port"] = 0  # a free port each: other tests may run ranks on the same addresses
    doc["timeouts"] = {"placement": 60, "ready": 600}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def image_env(image: Any) -> dict[str, str]:
    return {"DPCTL_VLLM": str(image.vllm), "DPCTL_MODEL": str(image.model)}


@pytest.mark.ray
@pytest.mark.vllm
def test_a_config_vllm_rejects_fails_up_with_vllms_own_message(
    ray_cluster: Any, vllm_image: Any, tmp_path: Path
) -> None:
    """An unknown flag and a too long --max-model-len: exit 4 with vLLM's words, and nothing left anywhere."""
    cases = {
        "vbadflag": (("--bogus-flag", "3"), "vllm: error: unrecognized arguments: --bogus-flag 3"),
        "vbadlen": (("--max-model-len", "100000"), "User-specified max_model_len (100000) is greater than"),
    }
    running = {
        name: dpctl_background("up", "-f", real_config(tmp_path, name, dp=1, extra=flags), **image_env(vllm_image))
        for name, (flags, _) in cases.items()
    }
    for name, proc in running.items():
        _, stderr = proc.communicate(timeout=400)
        assert proc.returncode == 4, stderr
        assert cases[name][1] in stderr, stderr
        assert "crashed before it was ready" in stderr
        assert leftovers(ray_cluster, name) == []
        assert marked.find(name) == []


@pytest.fixture(scope="module")
def real(ray_cluster: Any, vllm_image: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two real ranks, up once for the tests below, which walk them through their life in file order."""
    config = real_config(tmp_path_factory.mktemp("vreal"), NAME)
    env = image_env(vllm_image)
    up = dpctl("up", "-f", config, timeout=900, **env)
    try:
        yield {"up": up, "config": config, "env": env, "model": str(vllm_image.model)}
    finally:
        dpctl("down", NAME, timeout=300)


@pytest.mark.ray
@pytest.mark.vllm
def test_up_of_two_real_ranks_streams_vllms_progress_and_both_answer(real: dict[str, Any]) -> None:
    up = real["up"]
    assert up.returncode == 0, up.stderr
    assert "2 of 2 ranks ready" in up.stderr
    assert re.search(r"rank [01].*(Loading safetensors checkpoint shards|Starting to load model)", up.stderr), up.stderr
    assert "pid " in up.stdout  # the final table's detail column, as `status` fills it
    ranks = ranks_of(NAME)
    assert [r["rank"] for r in ranks] == [0, 1]
    for rank in ranks:
        serves_like_vllm(rank, real["model"])
    log = rank_log(NAME, 0)
    assert "GET /health" not in log, "dpctl's readiness probes flood the rank's log"
    assert "POST /v1/completions" in log  # the requests users send are still logged


@pytest.mark.ray
@pytest.mark.vllm
def test_a_killed_server_is_lost_at_once_leaves_nothing_and_repair_brings_it_back(real: dict[str, Any]) -> None:
    before = {r["rank"]: r for r in ranks_of(NAME)}
    engine_core = [p for p in processes_of(NAME, 1) if "EngineCore" in p.command]
    assert engine_core, "rank 1's engine core is not found as the deployment's"
    os.kill(before[1]["process_pid"], signal.SIGKILL)
    killed = time.monotonic()
    lost = wait_for(lambda: next((r for r in ranks_of(NAME) if r["rank"] == 1 and r["state"] != "READY"), None), 10)
    assert time.monotonic() - killed < 10
    assert "crashed while serving (killed by SIGKILL)" in lost["detail"]
    wait_for(lambda: processes_of(NAME, 1) == [], timeout=10)  # the engine core and worker went with it
    assert all(not alive(p.pid) for p in engine_core)

    repaired = dpctl("repair", NAME, timeout=600, **real["env"])
    assert repaired.returncode == 0, repaired.stderr
    after = {r["rank"]: r for r in ranks_of(NAME)}
    serves_like_vllm(after[1], real["model"])
    assert after[0]["process_pid"] == before[0]["process_pid"], "the healthy rank was restarted"
    assert after[1]["process_pid"] != before[1]["process_pid"]
    assert "Starting vLLM server on" in rank_log(NAME, 1, previous=True)  # the killed server's log, kept
    assert rank_log(NAME, 1).count("dpctl: starting") == 1, "the repaired rank's log is appended to the old one"


@pytest.mark.ray
@pytest.mark.vllm
def test_scale_up_keeps_the_running_ranks_and_scale_down_removes_whole_servers(real: dict[str, Any]) -> None:
    before = {r["rank"]: r["process_pid"] for r in ranks_of(NAME)}
    grown = dpctl("scale", NAME, "--dp", "3", timeout=600, **real["env"])
    assert grown.returncode == 0, grown.stderr
    ranks = {r["rank"]: r for r in ranks_of(NAME)}
    assert {r: ranks[r]["process_pid"] for r in (0, 1)} == before, "scale-up restarted a running rank"
    serves_like_vllm(ranks[2], real["model"])

    removed = [p for r in (1, 2) for p in processes_of(NAME, r)]
    assert any("EngineCore" in p.command for p in removed)
    shrunk = dpctl("scale", NAME, "--dp", "1", timeout=300)
    assert shrunk.returncode == 0, shrunk.stderr
    assert [p for p in removed if alive(p.pid)] == [], "a removed rank's vLLM process is still running"
    for rank in (1, 2):
        left_on_sigterm(rank_log(NAME, rank))
    (only,) = ranks_of(NAME)
    assert only["process_pid"] == before[0]
    serves_like_vllm(only, real["model"])


@pytest.mark.ray
@pytest.mark.vllm
def test_a_killed_engine_core_reads_as_a_crash_with_vllms_reason(real: dict[str, Any]) -> None:
    (rank,) = ranks_of(NAME)
    (core,) = [p for p in processes_of(NAME, 0) if "EngineCore" in p.command]
    dies_like_vllm(NAME, rank, lambda: os.kill(core.pid, signal.SIGKILL))


@pytest.mark.ray
@pytest.mark.vllm
def test_down_leaves_no_vllm_process_group_or_record(ray_cluster: Any, real: dict[str, Any]) -> None:
    down = dpctl("down", NAME, timeout=300)
    assert down.returncode == 0, down.stderr
    assert marked.find(NAME) == []
    assert leftovers(ray_cluster, NAME) == []
    status = dpctl("status", NAME)
    assert status.returncode == 2, status.stderr
    assert f"no deployment named {NAME!r}" in status.stderr
    assert not marked.registry(NAME).exists(), "the record of the deployment's sessions was left behind"
