"""The launcher's pure logic, without a cluster: record round trips, differences, state mapping, names, ports."""

from __future__ import annotations

import dataclasses

import pytest

from dpctl_ray.deployment.record import DeploymentState, Difference, RankRecord, Record, differences
from dpctl_ray.deployment.status import Answer, rank_status
from dpctl_ray.engines.base import HostReport, RankState
from dpctl_ray.engines.processes import master_port
from dpctl_ray.engines.spec import CommandSpec, DemoSpec
from dpctl_ray.engines.template import ReadyCheck
from dpctl_ray.launcher.records import ObjectKind, ObjectName, object_name
from dpctl_ray.planner import Node, Placement, Plan, PlanRequest, plan

NODES = tuple(Node(f"n{i}", f"10.0.0.{i + 1}", i == 0, {"GPU": 4, "CPU": 8}, {"GPU": 4, "CPU": 8}) for i in range(3))


def record_of(placement: Placement, engine: DemoSpec | CommandSpec | None = None) -> Record:
    result = plan(PlanRequest("dep", placement, NODES))
    assert isinstance(result, Plan)
    return Record(
        name="dep",
        state=DeploymentState.RUNNING,
        request=placement,
        spec=result.spec,
        engine=engine or DemoSpec(),
        token="t",
        job="01000000",
        created=1.0,
        updated=2.0,
        ranks=[RankRecord.planned(r, "10.0.0.1") for r in result.ranks],
    )


def report(**changes: object) -> HostReport:
    base = HostReport(
        state=RankState.READY,
        detail="serving",
        devices=("0", "1"),
        device_ips=("10.0.0.1", "10.0.0.1"),
        node="n0",
        ip="10.0.0.1",
        since=5.0,
        dp=2,
        pid=10,
        worker_pids=(11, 12),
        port=8000,
        process_pid=None,
        log_path="/tmp/x.log",
        serves=(0,),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_record_reads_back_as_it_was_written() -> None:
    """The stored JSON of a record, typed request, spec and engine included, reads back equal."""
    engine = CommandSpec(argv=("serve", "{port}"), env=(("A", "b"),), ready=ReadyCheck("tcp", "{node_ip}:{port}"))
    record = record_of(Placement(dp=3, tp=2, pack="fill", nodes=("n0", "n1")), engine)
    assert Record.from_json(record.to_json()) == record


def test_the_plan_of_a_record_is_the_plan_it_was_made_from() -> None:
    """A running deployment's record gives back its ranks and resolved spec, for the scale planner."""
    placement = Placement(dp=3, tp=2)
    made = plan(PlanRequest("dep", placement, NODES))
    assert isinstance(made, Plan)
    again = record_of(placement).plan()
    assert again.ranks == made.ranks
    assert again.spec == made.spec


def test_differences_are_data_naming_section_and_key() -> None:
    """A new request differs key by key; dp alone is what `up` may converge by scaling."""
    record = record_of(Placement(dp=2, tp=2))
    assert differences(record, Placement(dp=2, tp=2), DemoSpec()) == []
    diff = differences(record, Placement(dp=3, tp=1), DemoSpec(init_seconds=0.5))
    assert diff == [
        Difference("placement", "dp", 2, 3),
        Difference("placement", "tp", 2, 1),
        Difference("engine", "init_seconds", 1.0, 0.5),
    ]
    assert str(diff[1]) == "placement.tp: 2 -> 1"


@pytest.mark.parametrize(
    ("alive", "answer", "state", "detail"),
    [
        ({"n1"}, Answer(report=report()), RankState.DEAD, "node n0 is gone"),
        ({"n0"}, None, RankState.DEAD, "engine actor is gone; `dpctl logs dep -r 0`"),
        ({"n0"}, Answer(actor_died=True), RankState.DEAD, "engine actor died"),
        ({"n0"}, Answer(late=True), RankState.FAILED, "no answer to a health call in 2s"),
        ({"n0"}, Answer(error="ValueError: boom"), RankState.FAILED, "health call raised ValueError: boom"),
        ({"n0"}, Answer(report=report(state=RankState.FAILED, detail="exited")), RankState.FAILED, "exited"),
        ({"n0"}, Answer(report=report()), RankState.READY, "serving"),
    ],
    ids=["node-gone", "no-actor", "actor-died", "late", "health-raised", "engine-failed", "ready"],
)
def test_each_fact_about_a_rank_maps_to_one_state(
    alive: set[str], answer: Answer | None, state: RankState, detail: str
) -> None:
    """Node gone and actor gone are DEAD; an engine that fails or does not answer is FAILED; else its own state."""
    record = record_of(Placement(dp=1, tp=2))
    record.ranks[0].since = 5.0
    status = rank_status(record.ranks[0], record, alive, {(0, 0): answer})
    assert (status.state, status.detail) == (state, detail)


def test_a_process_serving_several_ranks_serves_each_and_its_hosts_hold_their_own_devices() -> None:
    """A per-node process on rank 0's host serves ranks 0 and 1; rank 1's own host reports rank 1's devices."""
    record = record_of(Placement(dp=2, tp=2), CommandSpec(argv=("serve",), processes="per_node", coupling="group"))
    process = report(serves=(0, 1), process_pid=99, api=True, argv=("serve",))
    holder = report(rank=1, serves=(), devices=("2", "3"), process_pid=None)
    hosts = {(0, 0): Answer(report=process), (1, 0): Answer(report=holder)}
    status = rank_status(record.ranks[1], record, {"n0"}, hosts)
    assert (status.state, status.devices, status.process_pid) == (RankState.READY, ["2", "3"], 99)


def test_a_failed_process_in_a_group_fails_every_rank() -> None:
    """In a group, rank 1's process failing makes rank 0 FAILED too, naming the process; independent ranks not."""
    failed = report(rank=1, serves=(1,), state=RankState.FAILED, detail="process exited with code 3")
    hosts = {(0, 0): Answer(report=report()), (1, 0): Answer(report=failed)}
    group = record_of(Placement(dp=2, tp=2), CommandSpec(argv=("serve",), coupling="group"))
    status = rank_status(group.ranks[0], group, {"n0"}, hosts)
    assert status.state is RankState.FAILED
    assert status.detail == "the group is down: the process of ranks 1 on 10.0.0.1 failed: process exited with code 3"
    alone = record_of(Placement(dp=2, tp=2), CommandSpec(argv=("serve",), coupling="independent"))
    assert rank_status(alone.ranks[0], alone, {"n0"}, hosts).state is RankState.READY


def test_a_group_down_after_a_failed_restart_says_so_and_how_to_restart_it() -> None:
    """A group whose restart failed runs nothing: its ranks are FAILED with the command that restarts it."""
    record = record_of(Placement(dp=2, tp=2), CommandSpec(argv=("serve",), coupling="group"))
    record.state = DeploymentState.FAILED
    hosts = {(r, 0): Answer(report=report(rank=r, serves=(), state=RankState.STARTING)) for r in (0, 1)}
    status = rank_status(record.ranks[0], record, {"n0"}, hosts)
    assert (status.state, status.detail) == (
        RankState.FAILED,
        "the group is down after a failed restart (`dpctl scale dep --dp 2`)",
    )


def test_a_rank_that_is_still_starting_is_not_failed_for_being_slow() -> None:
    """No answer in time from a rank that was never ready means it is still loading."""
    record = dataclasses.replace(record_of(Placement(dp=1, tp=2)), state=DeploymentState.LAUNCHING)
    assert rank_status(record.ranks[0], record, {"n0"}, {(0, 0): Answer(late=True)}).state is RankState.STARTING
    assert rank_status(record.ranks[0], record, {"n0"}, {}).state is RankState.PENDING


def test_a_kept_failed_launch_shows_why_each_rank_failed() -> None:
    """A rank whose launch failed shows FAILED with the engine's message, however far its actor got."""
    record = dataclasses.replace(record_of(Placement(dp=1, tp=2)), state=DeploymentState.FAILED)
    record.ranks[0].failed = "demo engine: rank 0 failed"
    for answer in (None, Answer(late=True), Answer(actor_died=True)):
        status = rank_status(record.ranks[0], record, {"n0"}, {(0, 0): answer})
        assert (status.state, status.detail) == (RankState.FAILED, "demo engine: rank 0 failed")


def test_the_master_port_is_configured_or_derived_from_the_name() -> None:
    """{master_port} is engine.master_port when set, else the same port for a name wherever it is computed."""
    assert master_port("dep", 13345) == 13345
    derived = master_port("dep", 0)
    assert derived == master_port("dep", 0)
    assert 20000 <= derived < 40000
    assert derived != master_port("other", 0)


def test_object_names_parse_back() -> None:
    """A rank's object name gives back its deployment, kind and rank; other names under dpctl/ only the first."""
    name = object_name("dep.v2", ObjectKind.ENGINE, 12)
    assert name == "dpctl/dep.v2/engine-12"
    assert ObjectName.parse(name) == ObjectName("dep.v2", ObjectKind.ENGINE, 12)
    assert ObjectName.parse("dpctl/dep/pg-0") == ObjectName("dep", ObjectKind.GROUP, 0)
    assert ObjectName.parse("dpctl/dep/supervisor") == ObjectName("dep", None, None)
    assert ObjectName.parse("other/dep/pg-0") is None


def test_a_record_scaled_below_its_dp_local_reads_back() -> None:
    """After a scale-down a deployment keeps its dp_local (for growing again) above its dp; its record still reads."""
    record = record_of(Placement(dp=2, tp=2))
    record.spec = dataclasses.replace(record.spec, dp=1)
    record.ranks = record.ranks[:1]
    assert Record.from_json(record.to_json()).spec == record.spec


# What `ray.init("ray://...")` raises when the server could not start the session: Ray's client worker puts
# the proxier's traceback after this first line (ray/util/client/worker.py, server/proxier.py).
DIED_AT_START = (
    "Initialization failure from server:\n"
    "Traceback (most recent call last):\n"
    '  File ".../ray/util/client/server/proxier.py", line 770, in Datapath\n'
    "    raise RuntimeError(\n"
    "RuntimeError: Starting Ray client server failed. See ray_client_server_23002.err for detailed logs.\n"
)


def test_a_client_session_that_did_not_start_is_named_by_the_servers_reason() -> None:
    from dpctl_ray.launcher.session import _client_session_not_started, _join_error

    exc = ConnectionAbortedError(DIED_AT_START)
    assert _client_session_not_started(exc)
    error = _join_error(exc, "ray://head:10001", "--address", 3)
    assert error.message == (
        "the Ray Client server at ray://head:10001 could not start a session for dpctl (3 tries): "
        "RuntimeError: Starting Ray client server failed. See ray_client_server_23002.err for detailed logs."
    )
    assert error.hint is not None
    assert "GRPC_ENABLE_FORK_SUPPORT=false" in error.hint
    assert error.code == "client_session_failed"


def test_a_refused_runtime_env_is_not_tried_again() -> None:
    from dpctl_ray.launcher.session import _client_session_not_started, _join_error

    exc = ConnectionAbortedError(
        "Initialization failure from server:\nTraceback ...\n"
        "    serialized_runtime_env_context = self._create_runtime_env(\nRuntimeError: Failed to create runtime env"
    )
    assert not _client_session_not_started(exc)
    assert _join_error(exc, "ray://head:10001", "--address").code == "bad_runtime_env"


class _Deployments:
    """A session that knows only the names of the deployments in its cluster."""

    def __init__(self, *names: str) -> None:
        self.names = list(names)

    def deployments(self) -> list[str]:
        return self.names


def test_a_command_without_a_name_takes_the_only_deployment_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """NAME, else a name the config gave, else the one deployment there is (said on stderr); several: say which."""
    from dpctl_ray.cli import options
    from dpctl_ray.config import Config
    from dpctl_ray.errors import BadInput

    unnamed, named = Config(), dataclasses.replace(Config(), name="mine", named=True)
    assert options.target("given", unnamed, _Deployments("a", "b")) == "given"  # type: ignore[arg-type]
    assert options.target(None, named, _Deployments("a")) == "mine"  # type: ignore[arg-type]
    assert options.target(None, unnamed, _Deployments("vllm-cpu")) == "vllm-cpu"  # type: ignore[arg-type]
    assert "using deployment vllm-cpu, the only one in this cluster" in capsys.readouterr().err
    assert options.target(None, unnamed, _Deployments()) == "demo"  # type: ignore[arg-type]  # says it is not there
    with pytest.raises(BadInput, match=r"NAME: this cluster has 2 deployments \(a, b\); say which"):
        options.target(None, unnamed, _Deployments("b", "a"))  # type: ignore[arg-type]
