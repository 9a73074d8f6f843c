"""Readiness frames: what an engine pushes to the launcher over ZMQ, and the strict decoder that guards it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

VERSION = 1
MAX_FRAME_BYTES = 16 * 1024  # a frame is a few hundred bytes; anything near this is not ours
MAX_MESSAGE_CHARS = 2000


class Phase(str, Enum):
    """What an engine reports about its rank, in order (failed can come at any point)."""

    PLACED = "placed"
    STARTING = "starting"
    PROGRESS = "progress"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Frame:
    """One event: deployment, launch token and rank say whose it is; phase, time and details say what."""

    deployment: str
    token: str
    rank: int
    phase: Phase
    ts: float
    message: str = ""
    progress: float | None = None  # 0..1 during loading
    devices: tuple[str, ...] = ()
    node: str = ""
    ip: str = ""

    def encode(self) -> bytes:
        """The wire form: one JSON object, versioned."""
        body: dict[str, Any] = {
            "v": VERSION,
            "deployment": self.deployment,
            "token": self.token,
            "rank": self.rank,
            "phase": self.phase.value,
            "ts": self.ts,
        }
        if self.message:
            body["message"] = self.message[:MAX_MESSAGE_CHARS]
        if self.progress is not None:
            body["progress"] = self.progress
        if self.devices:
            body["devices"] = list(self.devices)
        if self.node:
            body["node"] = self.node
        if self.ip:
            body["ip"] = self.ip
        return json.dumps(body, separators=(",", ":")).encode()


class BadFrame(ValueError):
    """A frame that is not a well-formed frame of this protocol version (dropped and counted, never raised out)."""


def decode(data: bytes) -> Frame:
    """Parse and check one frame; anything malformed raises BadFrame."""
    if len(data) > MAX_FRAME_BYTES:
        raise BadFrame(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadFrame(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadFrame("not a JSON object")
    if body.get("v") != VERSION:
        raise BadFrame(f"unknown version {body.get('v')!r}")
    try:
        phase = Phase(body.get("phase"))
    except ValueError:
        raise BadFrame(f"unknown phase {body.get('phase')!r}") from None
    rank, ts, progress = body.get("rank"), body.get("ts"), body.get("progress")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
        raise BadFrame("rank must be an integer >= 0")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        raise BadFrame("ts must be a number")
    if progress is not None and (
        not isinstance(progress, (int, float)) or isinstance(progress, bool) or not 0 <= progress <= 1
    ):
        raise BadFrame("progress must be between 0 and 1")
    strings = {key: body.get(key, "") for key in ("deployment", "token", "message", "node", "ip")}
    if not all(isinstance(v, str) for v in strings.values()):
        raise BadFrame("deployment, token, message, node and ip must be strings")
    devices = body.get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise BadFrame("devices must be a list of strings")
    return Frame(
        deployment=strings["deployment"],
        token=strings["token"],
        rank=rank,
        phase=phase,
        ts=float(ts),
        message=strings["message"][:MAX_MESSAGE_CHARS],
        progress=None if progress is None else float(progress),
        devices=tuple(devices),
        node=strings["node"],
        ip=strings["ip"],
    )
