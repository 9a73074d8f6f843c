"""A small python engine, as a model for your own: a TCP echo server per rank on the rank's {port}."""

from __future__ import annotations

import socket
import threading
import time

from dpctl_ray.engines.base import EngineContext, EngineError, Health, Progress


class EchoEngine:
    """Echoes back whatever a client sends, prefixed with its rank (`engine.args.greeting` first, if given)."""

    def __init__(self, greeting: str = "") -> None:
        self.greeting = greeting
        self.dp = 0
        self.rank = -1
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self, ctx: EngineContext, progress: Progress) -> None:
        """Bind the rank's port on its node and serve; ready once listening."""
        self.dp, self.rank = ctx.dp, ctx.rank
        progress.progress(0.5, f"binding {ctx.node_ip}:{ctx.port}")
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((ctx.node_ip, ctx.port))
        except OSError as exc:
            raise EngineError(f"echo engine: cannot listen on {ctx.node_ip}:{ctx.port}: {exc}") from None
        server.listen()
        self._server = server
        self._thread = threading.Thread(target=self._serve, args=(server,), daemon=True, name="echo")
        self._thread.start()
        ctx.log(f"echo engine: listening on {ctx.node_ip}:{ctx.port}")

    def _serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed by stop()
            with conn:
                data = conn.recv(4096)
                conn.sendall(f"{self.greeting}rank {self.rank} of {self.dp}: ".encode() + data)

    def health(self) -> Health:
        """Serving while the accept loop runs."""
        alive = self._thread is not None and self._thread.is_alive()
        return Health(ok=alive, detail="echoing" if alive else "the echo loop stopped")

    def set_dp(self, dp: int) -> None:
        """Answer with the new size from now on."""
        self.dp = dp

    def stop(self) -> None:
        """Close the listening socket; the loop ends."""
        if self._server is not None:
            self._server.close()
            time.sleep(0.05)
