"""The launcher side of the readiness stream: a ZMQ PULL socket that keeps frames of this launch, drops the rest."""

from __future__ import annotations

from collections import Counter

from dpctl_ray.engines.protocol import MAX_FRAME_BYTES, BadFrame, Frame, decode

_DRAIN = 1000  # frames read per poll at most, so one noisy peer cannot starve the wait loop


class ReadinessStream:
    """Frames for this deployment, launch token and set of ranks; malformed or foreign ones are counted, not raised."""

    def __init__(self, deployment: str, token: str, ranks: set[int], bind_ip: str) -> None:
        import zmq  # noqa: PLC0415

        self.deployment = deployment
        self.token = token
        self.ranks = ranks
        self.dropped: Counter[str] = Counter()
        self._zmq = zmq
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PULL)
        # A peer sending anything larger is disconnected by ZMQ before the frame reaches us.
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, 100_000)
        port = self._socket.bind_to_random_port(f"tcp://{bind_ip}")
        self.address = f"tcp://{bind_ip}:{port}"

    def poll(self, timeout_ms: int) -> list[Frame]:
        """Wait up to `timeout_ms` for frames; return this launch's, in arrival order."""
        frames: list[Frame] = []
        if not self._socket.poll(timeout_ms):
            return frames
        for _ in range(_DRAIN):
            try:
                data = self._socket.recv(self._zmq.NOBLOCK)
            except self._zmq.Again:
                break
            frame = self.accept(data)
            if frame is not None:
                frames.append(frame)
        return frames

    def accept(self, data: bytes) -> Frame | None:
        """Decode one frame and check it is ours; count it as dropped otherwise."""
        try:
            frame = decode(data)
        except BadFrame:
            self.dropped["malformed"] += 1
            return None
        if frame.deployment != self.deployment or frame.token != self.token or frame.rank not in self.ranks:
            self.dropped["foreign"] += 1
            return None
        return frame

    def close(self) -> None:
        """Unbind and release the socket."""
        self._socket.close()
        self._context.term()
