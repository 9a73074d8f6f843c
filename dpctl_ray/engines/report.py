"""The engine side of the readiness stream: a ZMQ PUSH socket that never blocks an engine on a gone launcher."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from dpctl_ray.engines.protocol import Frame, Phase


class StreamReporter:
    """Pushes phase frames for one rank of one launch; without an address (or ZMQ) it only remembers the last.

    Thread-safe: a host's calls run concurrently, and a start of an earlier launch may still report (or a
    process watcher send progress) while a later launch's start closes this reporter. A ZMQ socket used from
    two threads at once can hang the context's termination for good; here a frame sent after close() is
    dropped, like one sent to a gone launcher.
    """

    def __init__(self, address: str | None, deployment: str, token: str, rank: int) -> None:
        self.address = address
        self.deployment = deployment
        self.token = token
        self.rank = rank
        self.last: Frame | None = None
        self._socket: Any = None
        self._context: Any = None
        self._lock = threading.Lock()  # one thread at a time on the socket
        self.streaming = False
        if address:
            try:
                import zmq  # noqa: PLC0415 - only engines that report import it
            except ImportError:  # a node with Ray alone: readiness then comes through Ray's calls
                return
            self.streaming = True

            self._context = zmq.Context()
            sock = self._context.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 1000)
            sock.setsockopt(zmq.LINGER, 2000)  # let the last frame (ready or failed) out before the actor exits
            sock.setsockopt(zmq.IMMEDIATE, 0)
            sock.connect(address)
            self._socket = sock
            self._again = zmq.Again
            self._noblock = zmq.NOBLOCK

    def send(
        self,
        phase: Phase,
        message: str = "",
        *,
        progress: float | None = None,
        devices: tuple[str, ...] = (),
        node: str = "",
        ip: str = "",
    ) -> None:
        """Report a phase; dropped silently if the launcher is gone or not keeping up."""
        frame = Frame(
            deployment=self.deployment,
            token=self.token,
            rank=self.rank,
            phase=phase,
            ts=time.time(),
            message=message,
            progress=progress,
            devices=devices,
            node=node,
            ip=ip,
        )
        self.last = frame
        with self._lock:
            if self._socket is None:
                return
            with contextlib.suppress(self._again):
                self._socket.send(frame.encode(), self._noblock)

    def progress(self, fraction: float | None, message: str = "") -> None:
        """Report loading progress (0..1, or None for a message alone)."""
        self.send(Phase.PROGRESS, message, progress=None if fraction is None else min(max(fraction, 0.0), 1.0))

    def close(self) -> None:
        """Flush (up to the linger time) and close; later frames are dropped."""
        with self._lock:
            socket, context, self._socket = self._socket, self._context, None
            if socket is not None:
                socket.close()
        if context is not None and socket is not None:
            context.term()  # waits up to the linger time, outside the lock: frames sent meanwhile are dropped
