"""The command engine: one real process per rank (e.g. `vllm serve`), on the rank's node, on its granted devices."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from dpctl_ray.engines.base import EngineContext, EngineError, Health, Progress
from dpctl_ray.engines.placeholders import placeholder_values
from dpctl_ray.engines.spec import CommandSpec

POLL_SECONDS = 0.1
TAIL_LINES = 8
_OWN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d dpctl: ")  # what the host writes, not the process

# The device visibility variable per Ray resource key; `engine.visible_devices_env` overrides it.
VISIBLE_DEVICES_ENV = {
    "GPU": "CUDA_VISIBLE_DEVICES",
    "TPU": "TPU_VISIBLE_CHIPS",
    "NPU": "ASCEND_RT_VISIBLE_DEVICES",
    "HPU": "HABANA_VISIBLE_MODULES",
    "neuron_cores": "NEURON_RT_VISIBLE_CORES",
}

# Run the command through a two-line exec shim that asks Linux to SIGKILL it when the thread that
# started it dies: if the engine actor is killed outright, its process does not outlive it.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"  # PR_SET_PDEATHSIG
    "os.getppid() == int(sys.argv[1]) or os._exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def render(spec: CommandSpec, ctx: EngineContext) -> tuple[list[str], dict[str, str]]:
    """The argv and the environment additions of a rank's process (the device variable included)."""
    values = placeholder_values(ctx)
    argv = [arg.format_map(values) for arg in spec.argv]
    env = {key: value.format_map(values) for key, value in spec.env}
    variable = spec.visible_devices_env or VISIBLE_DEVICES_ENV.get(ctx.device)
    if variable:
        env[variable] = values["devices"]
    return argv, env


class CommandEngine:
    """Starts the rank's process, waits for its readiness check, and stops it with SIGTERM then SIGKILL."""

    def __init__(self, spec: CommandSpec) -> None:
        if spec.ready is None:
            raise EngineError("engine.ready: required for engine.kind command")
        self.spec = spec
        self.ready_kind, self.ready_target = spec.ready.kind, spec.ready.target
        self.progress_pattern = re.compile(spec.progress) if spec.progress else None
        self.stop_grace = spec.stop_grace
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.log_path = ""
        self.port = 0
        self.argv: list[str] = []
        self.proc_log_start = 0
        self._waiter: threading.Thread | None = None

    def start(self, ctx: EngineContext, progress: Progress) -> None:
        """Start the process; return when its readiness check passes, raise if it exits first."""
        self.log_path = ctx.log_path
        self.port = ctx.port
        argv, extra_env = render(self.spec, ctx)
        self.argv = argv
        env = {**os.environ, **extra_env}
        program = shutil.which(argv[0], path=env.get("PATH"))
        if program is None:
            raise EngineError(f"engine.argv[0]: {argv[0]!r} not found on node {ctx.node_ip} (PATH={env.get('PATH')})")
        ctx.log(f"dpctl: starting {' '.join(argv)}")
        for key in sorted(extra_env):
            ctx.log(f"dpctl:   {key}={extra_env[key]}")
        self._spawn(argv, env, self.spec.cwd or None)
        values = placeholder_values(ctx)
        target = self.ready_target if self.ready_kind == "log" else self.ready_target.format_map(values)
        pattern = re.compile(target) if self.ready_kind == "log" else None
        offset = self.proc_log_start
        while True:
            text, offset = _read_from(self.log_path, offset)
            lines = text.splitlines()
            self._report(lines, progress)
            if pattern is not None and any(pattern.search(line) for line in lines):
                return
            if self.returncode is not None:
                raise EngineError(
                    f"`{argv[0]}` exited with code {self.returncode} before it was ready; "
                    f"last log lines ({self.log_path}):\n{self.tail()}"
                )
            if pattern is None and _check(self.ready_kind, target):
                return
            time.sleep(POLL_SECONDS)

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: str | None) -> None:
        started = threading.Event()
        errors: list[BaseException] = []
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
        self.proc_log_start = Path(self.log_path).stat().st_size if Path(self.log_path).exists() else 0

        def run() -> None:
            # This thread starts the process and waits for it, so it lives exactly as long as the process
            # (the kernel's parent-death signal follows the thread that forked it).
            try:
                with open(self.log_path, "ab") as log:  # noqa: PTH123
                    self.proc = subprocess.Popen(  # noqa: S603 - the user's own argv, never a shell
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=cwd,
                        start_new_session=True,
                    )
            except OSError as exc:
                errors.append(exc)
                started.set()
                return
            started.set()
            self.returncode = self.proc.wait()

        self._waiter = threading.Thread(target=run, name="dpctl-engine-process", daemon=True)
        self._waiter.start()
        started.wait()
        if errors:
            raise EngineError(f"cannot start `{argv[0]}`: {errors[0]}")

    def _report(self, lines: list[str], progress: Progress) -> None:
        """Log lines become the rank's progress: all of them, or those matching engine.progress (`pct` group)."""
        for line in lines:
            if not line.strip() or _OWN_LINE.match(line):
                continue
            fraction = None
            if self.progress_pattern is not None:
                found = self.progress_pattern.search(line)
                if not found:
                    continue
                pct = found.groupdict().get("pct")
                fraction = min(float(pct) / 100, 1.0) if pct else None
            progress.progress(fraction, line.strip()[:200])

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the rank's log, indented for an error message."""
        return "\n".join(f"    | {line}" for line in tail_lines(self.log_path, lines))

    def health(self) -> Health:
        """Serving while the process runs; failed with its exit code and log tail once it has exited."""
        if self.proc is None:
            return Health(ok=False, detail="not started")
        if self.returncode is None and self.proc.poll() is None:
            return Health(ok=True, detail=f"pid {self.proc.pid}, port {self.port}")
        code = self.returncode if self.returncode is not None else self.proc.returncode
        last = " | ".join(tail_lines(self.log_path, 3))
        return Health(ok=False, detail=f"process exited with code {code}; last log: {last}")

    def set_dp(self, dp: int) -> None:
        """A process learns its dp size from its argv at start; nothing to tell it now."""

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period; return when it is gone."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # also whatever it started and left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    @property
    def pid(self) -> int | None:
        """The process's pid, once started."""
        return self.proc.pid if self.proc else None


def _check(kind: str, target: str) -> bool:
    if kind == "tcp":
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
                return True
        except (OSError, ValueError):
            return False
    try:
        with urllib.request.urlopen(target, timeout=1.0) as response:  # noqa: S310 - the user's own URL
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _read_from(path: str, offset: int) -> tuple[str, int]:
    try:
        with open(path, "rb") as f:  # noqa: PTH123
            f.seek(offset)
            data = f.read(1 << 20)
    except OSError:
        return "", offset
    # Only whole lines: a line still being written is read on the next pass.
    cut = data.rfind(b"\n") + 1
    return data[:cut].decode(errors="replace"), offset + cut


def tail_lines(path: str, lines: int) -> list[str]:
    """The last `lines` lines of a file (reading at most its last 64 KiB)."""
    try:
        with open(path, "rb") as f:  # noqa: PTH123
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - 65536, 0))
            data = f.read()
    except OSError:
        return []
    text = data.decode(errors="replace").splitlines()
    return [line for line in text if line.strip() and not _OWN_LINE.match(line)][-lines:]
