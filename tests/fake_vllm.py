"""A stand-in for `vllm serve` (vLLM needs GPUs), as strict as vLLM 0.33's own source wherever dpctl could err.

What it checks, from vLLM 0.33 (../shared/VLLM.md):
- the flags dpctl's presets use, parsed as argparse does: an unknown flag exits 2;
- dense or MoE by model name; the data-parallel rules of `EngineArgs.create_engine_config` in its order
  (one load-balancing mode, rank range, --data-parallel-size-local 1 in external LB, dense models refused in
  external LB, --enable-expert-parallel only for MoE, --nnodes dividing the world size, --node-rank range);
- devices: a process sees its devices through --device-ids (indices into CUDA_VISIBLE_DEVICES when that is set,
  else physical ids) or CUDA_VISIBLE_DEVICES, and needs tp x pp / nodes for each of its local engines;
- the DP startup handshake of a MoE group: rank 0 listens on --data-parallel-address:--data-parallel-rpc-port
  only until every rank has connected, refuses a rank outside [0, dp), one it already has, or one that is
  (or is not) --headless against its mode, and only then serves /health; a rank that comes later finds
  nothing listening and gives up;
- a rank over several nodes: node 0 listens on --master-addr:--master-port for --nnodes - 1 --headless
  workers that agree on --nnodes, and serves once all are there;
- --headless serves no API; /health returns 200 while serving and 503 once the engine dies.

Knobs for tests come through the environment (vLLM's own flags stay exactly vLLM's): FAKE_VLLM_LOAD_SECONDS
(loading time), FAKE_VLLM_CRASH_AFTER (exit 3 while loading), FAKE_VLLM_DIE_AFTER (the engine dies after it
serves: /health 503, then the server exits with code 0, as vLLM's does), FAKE_VLLM_CRASH_AT_DP (crash while
loading at this --data-parallel-size), FAKE_VLLM_CRASH_IF_EXISTS (crash while loading while this file exists),
FAKE_VLLM_DIE_IF_EXISTS (the engine dies once this file exists), FAKE_VLLM_HANDSHAKE_SECONDS (how long a rank
keeps trying rank 0), FAKE_VLLM_EXTRA (echoed back).
GET /dpctl-test answers what it was started with; /v1/models, POST /v1/completions and /metrics answer in
vLLM's shapes (the completion's text is noise, as the tiny real model's is).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MOE = re.compile(r"A\d+B|MoE|Mixtral|DeepSeek-V[23]|DeepSeek-R1|gpt-oss|Qwen\d?-\d+B-A", re.IGNORECASE)


def fail(message: str, code: int = 1) -> None:
    print(f"ERROR {message}", flush=True)
    sys.exit(code)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm")
    p.add_argument("command", choices=["serve"])
    p.add_argument("model")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    p.add_argument("--data-parallel-size", "-dp", type=int, default=1)
    p.add_argument("--data-parallel-rank", "-dpn", type=int, default=None)
    p.add_argument("--data-parallel-start-rank", "-dpr", type=int, default=None)
    p.add_argument("--data-parallel-size-local", "-dpl", type=int, default=None)
    p.add_argument("--data-parallel-address", "-dpa", default=None)
    p.add_argument("--data-parallel-rpc-port", "-dpp", type=int, default=None)
    p.add_argument("--data-parallel-hybrid-lb", "-dph", action="store_true")
    p.add_argument("--data-parallel-external-lb", "-dpe", action="store_true")
    p.add_argument("--data-parallel-backend", "-dpb", default="mp", choices=["mp", "ray"])
    p.add_argument("--headless", action="store_true")
    p.add_argument("--api-server-count", "-asc", type=int, default=None)
    p.add_argument("--nnodes", "-n", type=int, default=1)
    p.add_argument("--node-rank", "-r", type=int, default=0)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=29501)
    p.add_argument("--device-ids", default=None)
    p.add_argument("--enable-expert-parallel", "-ep", action="store_true")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--shutdown-timeout", type=int, default=0)
    p.add_argument("--disable-uvicorn-access-log", action="store_true")
    p.add_argument("--disable-access-log-for-endpoints", default=None)
    return p


class Config:
    """The launch options after vLLM's checks, in the order `create_engine_config` makes them."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.moe = bool(MOE.search(a.model))
        if a.enable_expert_parallel and not self.moe:
            fail("Number of experts in the model must be greater than 0 when expert parallelism is enabled.")
        if a.data_parallel_hybrid_lb and a.data_parallel_external_lb:
            fail(
                "Invalid data-parallel launch options: `--data-parallel-hybrid-lb` and `--data-parallel-external-lb` cannot be enabled together."
            )
        if a.headless and a.api_server_count:
            fail(f"--api-server-count={a.api_server_count} cannot be used with --headless")
        # serve.py: a start rank alone means hybrid LB (headless or not), a rank means external LB.
        external = a.data_parallel_external_lb or a.data_parallel_rank is not None
        if sum([external, a.data_parallel_hybrid_lb or a.data_parallel_start_rank is not None]) > 1:
            fail(
                "Only one load-balancing mode may be given: --data-parallel-external-lb (or --data-parallel-rank) or --data-parallel-hybrid-lb (or --data-parallel-start-rank)."
            )
        hybrid = a.data_parallel_hybrid_lb
        within_dp = a.tensor_parallel_size * a.pipeline_parallel_size
        if a.nnodes > 1:
            world = a.data_parallel_size * within_dp
            if world % a.nnodes:
                fail(
                    f"Invalid data-parallel launch options: `--nnodes {a.nnodes}` must evenly divide the total world size ({world})."
                )
            if not 0 <= a.node_rank < a.nnodes:
                fail(
                    f"Invalid data-parallel launch options: `--node-rank` must be between 0 and {a.nnodes - 1}; got `--node-rank {a.node_rank}`."
                )
            if a.data_parallel_size > 1:
                fail("the stand-in does not simulate data parallelism across multi-node ranks", code=2)
        if a.data_parallel_size > 1 and external and not self.moe:
            fail(
                "Non-MoE models do not support external data parallel mode. For external load balancing, launch independent vLLM instances without --data-parallel-* arguments."
            )
        if external:
            if a.data_parallel_rank is None:
                fail(
                    "Invalid data-parallel launch options: `--data-parallel-external-lb` requires a data-parallel rank."
                )
            if a.data_parallel_size_local not in (1, None):
                fail(
                    f"Invalid data-parallel launch options: an external data-parallel rank requires `--data-parallel-size-local 1`; got {a.data_parallel_size_local}."
                )
            self.local = 1
            self.start = a.data_parallel_rank
            hybrid = False
        elif a.data_parallel_size_local is not None:
            self.local = a.data_parallel_size_local
            if a.data_parallel_start_rank is not None and not a.headless:
                hybrid = True
            if hybrid and self.local == 1:
                external, hybrid = True, False  # vLLM switches to external LB
            if self.local == a.data_parallel_size:
                hybrid = False
            self.start = a.data_parallel_start_rank or 0
        else:
            if a.data_parallel_hybrid_lb:
                fail(
                    "Invalid data-parallel launch options: `--data-parallel-hybrid-lb` requires `--data-parallel-size-local`."
                )
            self.local = a.data_parallel_size
            self.start = 0
        if not 0 <= self.start < a.data_parallel_size or self.start + self.local > a.data_parallel_size:
            fail(f"data_parallel_rank ({self.start}) must be in the range [0, {a.data_parallel_size})")
        self.external, self.hybrid = external, hybrid
        self.ranks = list(range(self.start, self.start + self.local))
        self.coordinated = self.moe and a.data_parallel_size > 1
        self.nnodes_within_dp = a.nnodes if a.data_parallel_size == 1 else 1
        self.devices_needed = self.local * within_dp // self.nnodes_within_dp

    def devices(self) -> list[str]:
        """The devices this process may use: --device-ids (into CUDA_VISIBLE_DEVICES when set), else that variable."""
        cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
        visible = [d for d in cvd.split(",") if d] if cvd else None
        if self.a.device_ids is None:
            return visible if visible is not None else []
        ids = [d.strip() for d in self.a.device_ids.split(",")]
        if len(set(ids)) != len(ids):
            fail(f"--device-ids must not contain duplicates: {ids}")
        if visible is None:
            return ids
        for i in ids:
            if not i.isdigit() or not 0 <= int(i) < len(visible):
                fail(
                    f"--device-ids index {i} is out of range for CUDA_VISIBLE_DEVICES={cvd} ({len(visible)} devices visible)"
                )
        return [visible[int(i)] for i in ids]


def handshake_server(host: str, port: int, expected: set[int], check: object, name: str) -> list[Link]:
    """Listen until every expected peer has said hello; refuse any other; return the links to the peers."""
    listener = socket.create_server((host, port))
    listener.settimeout(1.0)
    print(f"INFO {name}: waiting for {sorted(expected)} on {host}:{port}", flush=True)
    peers: list[Link] = []
    while expected:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        link = Link(conn)
        hello = link.read()
        error = check(hello)  # type: ignore[operator]
        keys = hello.get("keys", [])
        if not error:
            error = next((f"Message from engine with unexpected {name}: {k}" for k in keys if k not in expected), "")  # type: ignore[union-attr]
        if error:
            link.send({"error": error})
            fail(error)
        expected.difference_update(keys)  # type: ignore[arg-type]
        link.send({"ok": True})
        peers.append(link)
    listener.close()  # the handshake listener exists only during startup: a later rank is refused
    return peers


class Link:
    """A connection to a group member, read through one buffered reader (two readers could split a line)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.reader = conn.makefile("r")

    def read(self) -> dict[str, object]:
        line = self.reader.readline()
        return json.loads(line) if line else {"error": "closed"}

    def send(self, message: dict[str, object]) -> None:
        self.conn.sendall(json.dumps(message).encode() + b"\n")


def join(host: str, port: int, hello: dict[str, object]) -> Link:
    """Say hello to the listening rank until it answers, or give up as vLLM does when the handshake times out."""
    deadline = time.monotonic() + float(os.environ.get("FAKE_VLLM_HANDSHAKE_SECONDS", "30"))
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                fail(
                    f"timed out waiting for the handshake at {host}:{port} (is rank 0 up, and still waiting for this rank?)"
                )
            time.sleep(0.2)
    conn.settimeout(None)
    link = Link(conn)
    link.send(hello)
    answer = link.read()
    if "error" in answer:
        fail(f"rank 0 refused this rank: {answer['error']}")
    return link


def main() -> None:
    a = parser().parse_args()
    config = Config(a)
    devices = config.devices()
    if devices and len(devices) < config.devices_needed:
        fail(f"world size ({config.devices_needed}) is larger than the number of visible devices ({len(devices)})")
    print(f"INFO vLLM API server (stand-in) for {a.model} ({'MoE' if config.moe else 'dense'})", flush=True)
    print(f"INFO args: {vars(a)}", flush=True)
    print(f"INFO devices {','.join(devices) or '-'}; engines for data-parallel ranks {config.ranks}", flush=True)
    load = float(os.environ.get("FAKE_VLLM_LOAD_SECONDS", "0.5"))
    crash = os.environ.get("FAKE_VLLM_CRASH_AFTER")
    if os.environ.get("FAKE_VLLM_CRASH_AT_DP") == str(a.data_parallel_size):
        crash = "0"  # as if this group size does not fit in memory
    if os.path.exists(os.environ.get("FAKE_VLLM_CRASH_IF_EXISTS", "/nonexistent")):  # noqa: PTH110
        crash = "0"  # a fault the test switches on and off
    steps = 4
    for step in range(steps):
        if crash is not None and step * load / steps >= float(crash):
            fail("EngineCore failed to start: CUDA out of memory (stand-in)", code=3)
        time.sleep(load / steps)
        print(f"Loading safetensors checkpoint shards: {100 * (step + 1) // steps}% Completed", flush=True)
    if crash is not None:
        fail("EngineCore failed to start: CUDA out of memory (stand-in)", code=3)

    links: list[Link] = []
    if config.coordinated:
        address, port = a.data_parallel_address or "127.0.0.1", a.data_parallel_rpc_port or 29550
        if config.start == 0:
            remote_headless = not config.hybrid and not config.external

            def check(hello: dict[str, object]) -> str:
                if hello.get("headless") != remote_headless:
                    must = "must use" if remote_headless else "must not use"
                    return f"Remote engine {hello.get('keys')} {must} --headless in this dp lb mode"
                return ""

            links = handshake_server(
                address, port, set(range(config.local, a.data_parallel_size)), check, "data parallel rank"
            )
            for link in links:
                link.send({"start": True})
        else:
            link = join(address, port, {"keys": config.ranks, "headless": a.headless, "dp": a.data_parallel_size})
            if link.read().get("start") is not True:
                fail("the data parallel group did not start")
            links = [link]
    if a.nnodes > 1:
        if a.node_rank == 0:
            if a.headless:
                fail("node rank 0 of a multi-node rank serves; --headless is for the others")

            def agree(hello: dict[str, object]) -> str:
                if not hello.get("headless"):
                    return f"node {hello.get('keys')}: every node but the first runs --headless"
                return (
                    "" if hello.get("nnodes") == a.nnodes else f"--nnodes differs: {hello.get('nnodes')} != {a.nnodes}"
                )

            links = handshake_server(a.master_addr, a.master_port, set(range(1, a.nnodes)), agree, "node rank")
            for link in links:
                link.send({"start": True})
        else:
            if not a.headless:
                fail("a node rank above 0 must run --headless")
            link = join(a.master_addr, a.master_port, {"keys": [a.node_rank], "headless": True, "nnodes": a.nnodes})
            if link.read().get("start") is not True:
                fail("the multi-node rank did not start")
            links = [link]

    dead = threading.Event()
    die_after = os.environ.get("FAKE_VLLM_DIE_AFTER")
    if die_after is not None:
        threading.Timer(float(die_after), dead.set).start()
    die_if = os.environ.get("FAKE_VLLM_DIE_IF_EXISTS")
    if die_if:

        def die_on_file() -> None:
            while not os.path.exists(die_if):  # noqa: PTH110
                time.sleep(0.1)
            dead.set()

        threading.Thread(target=die_on_file, daemon=True).start()
    for link in links:  # a group member whose peer is gone is dead too

        def watch(peer: Link = link) -> None:
            peer.reader.read()
            dead.set()

        threading.Thread(target=watch, daemon=True).start()

    if a.headless:
        print(f"INFO headless engines for ranks {config.ranks} running", flush=True)
        while not dead.wait(0.5):
            pass
        fail("engine core died", code=1)

    started = {
        "argv": sys.argv[1:],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "devices": devices,
        "ranks": config.ranks,
        "pid": os.getpid(),
        "extra": os.environ.get("FAKE_VLLM_EXTRA"),
    }

    served = {"count": 0}

    class Handler(BaseHTTPRequestHandler):
        def answer(self, code: int, body: bytes = b"", kind: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/health":
                self.answer(503 if dead.is_set() else 200)
            elif path == "/dpctl-test":
                self.answer(200, json.dumps(started).encode())
            elif path == "/v1/models":
                model = {"id": a.model, "object": "model", "owned_by": "vllm", "max_model_len": a.max_model_len}
                self.answer(200, json.dumps({"object": "list", "data": [model]}).encode())
            elif path == "/metrics":  # the gauges and counter dpctl reads, in vLLM's names
                labels = f'engine="0",model_name="{a.model}"'
                text = (
                    f"vllm:num_requests_running{{{labels}}} 0.0\n"
                    f"vllm:num_requests_waiting{{{labels}}} 0.0\n"
                    f"vllm:kv_cache_usage_perc{{{labels}}} 0.0\n"
                    f'vllm:request_success_total{{{labels},finished_reason="length"}} {served["count"]}.0\n'
                )
                self.answer(200, text.encode(), "text/plain; version=0.0.4")
            else:
                self.answer(404, b'{"detail":"Not Found"}')

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                request = None
            if self.path.split("?")[0] != "/v1/completions":
                self.answer(404, b'{"detail":"Not Found"}')
            elif dead.is_set():
                self.answer(500, b'{"error":{"message":"EngineCore encountered an issue","type":"EngineDeadError"}}')
            elif not isinstance(request, dict) or request.get("model") != a.model:
                self.answer(404, json.dumps({"error": {"message": f"The model `{request}` does not exist."}}).encode())
            else:
                served["count"] += 1
                tokens = int(request.get("max_tokens") or 16)
                choice = {"index": 0, "text": " stand-in" * tokens, "finish_reason": "length"}
                usage = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}
                doc = {"id": f"cmpl-{served['count']}", "object": "text_completion", "model": a.model}
                self.answer(200, json.dumps({**doc, "choices": [choice], "usage": usage}).encode())

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
            if a.disable_uvicorn_access_log or self.path.split("?")[0] in quiet:
                return
            print(f"INFO: {self.address_string()} - {format % args}", flush=True)

    quiet = set((a.disable_access_log_for_endpoints or "").split(","))

    def exit_when_dead() -> None:  # as vLLM's API server: /health 503 at once, then it leaves by itself (code 0)
        dead.wait()
        time.sleep(2)
        print("ERROR AsyncLLM output_handler failed.", flush=True)
        print(
            "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace.", flush=True
        )
        os._exit(0)

    threading.Thread(target=exit_when_dead, daemon=True).start()

    def stop(signum: int, frame: object) -> None:  # as vLLM's API server: a SIGTERM is a clean exit
        print("INFO:     Shutting down", flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    server = ThreadingHTTPServer((a.host or "0.0.0.0", a.port), Handler)  # noqa: S104 - as vLLM
    print("INFO:     Application startup complete.", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
