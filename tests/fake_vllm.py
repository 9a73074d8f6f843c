"""A stand-in for `vllm serve` (vLLM cannot run here): vLLM's data-parallel flags, and /health answered as vLLM does.

It logs like vLLM while "loading", then serves GET /health (200 once ready) and GET /dpctl-test (what it was
started with: argv, device visibility, pid) so tests can check what dpctl gave it. `--crash-after S` makes
it exit with code 3 after S seconds, as a failing engine would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - as vLLM
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--pipeline-parallel-size", type=int, default=1)
    parser.add_argument("--data-parallel-size", type=int, default=1)
    parser.add_argument("--data-parallel-rank", type=int)
    parser.add_argument("--data-parallel-address")
    parser.add_argument("--data-parallel-rpc-port", type=int)
    parser.add_argument("--load-seconds", type=float, default=0.5)
    parser.add_argument("--crash-after", type=float)
    args = parser.parse_args()

    print(f"INFO vLLM API server (stand-in) for {args.model}", flush=True)
    print(f"INFO args: {vars(args)}", flush=True)
    print(f"INFO CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
    steps = 4
    for step in range(steps):
        if args.crash_after is not None and step * args.load_seconds / steps >= args.crash_after:
            print("ERROR EngineCore failed to start: CUDA out of memory (stand-in)", flush=True)
            sys.exit(3)
        time.sleep(args.load_seconds / steps)
        print(f"Loading safetensors checkpoint shards: {100 * (step + 1) // steps}% Completed", flush=True)
    if args.crash_after is not None:
        print("ERROR EngineCore failed to start: CUDA out of memory (stand-in)", flush=True)
        sys.exit(3)
    started = {
        "argv": sys.argv[1:],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
        "extra": os.environ.get("FAKE_VLLM_EXTRA"),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b""
            if self.path == "/health":
                self.send_response(200)
            elif self.path == "/dpctl-test":
                body = json.dumps(started).encode()
                self.send_response(200)
            else:
                self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
            print(f"INFO: {self.address_string()} - {format % args}", flush=True)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print("INFO:     Application startup complete.", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
