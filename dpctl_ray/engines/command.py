"""A command engine's process on its node (e.g. `vllm serve`): started, watched until ready, stopped by its group."""

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
from collections.abc import Callable
from pathlib import Path

from dpctl_ray.engines.base import EngineError, Health, Progress
from dpctl_ray.engines.work import ProcessWork

POLL_SECONDS = 0.1
TAIL_LINES = 6
TAIL_WIDTH = 120  # an error is one line of at most 1000 characters: the last log lines must fit in it
_OWN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d dpctl: ")  # what the host writes, not the process

# Run the command through a two-line exec shim that asks Linux to SIGKILL it when the thread that
# started it dies: if the engine actor is killed outright, its process does not outlive it.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"  # PR_SET_PDEATHSIG
    "os.getppid() == int(sys.argv[1]) or os._exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


class CommandEngine:
    """Runs one rendered process: starts it, waits for its readiness check, stops it with SIGTERM then SIGKILL."""

    def __init__(self, work: ProcessWork, log_path: str, node_ip: str) -> None:
        self.work = work
        self.progress_pattern = re.compile(work.spec.progress) if work.spec.progress else None
        self.stop_grace = work.spec.stop_grace
        self.log_path = log_path
        self.node_ip = node_ip
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.proc_log_start = 0
        self._waiter: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False  # stop() came first: the process must not start afterwards

    def start(self, log: Callable[[str], None], progress: Progress) -> None:
        """Start the process; return when its readiness check passes (at once when headless), raise if it exits."""
        argv, extra_env = list(self.work.argv), dict(self.work.env)
        env = {key: value for key, value in os.environ.items() if key not in self.work.unset}
        env.update(extra_env)
        program = shutil.which(argv[0], path=env.get("PATH"))
        if program is None:
            raise EngineError(f"engine.argv[0]: {argv[0]!r} not found on node {self.node_ip} (PATH={env.get('PATH')})")
        log(f"dpctl: starting {' '.join(argv)}" + (" (headless)" if self.work.ready is None else ""))
        for key in sorted(extra_env):
            log(f"dpctl:   {key}={extra_env[key]}")
        self._spawn(argv, env, self.work.spec.cwd or None)
        ready = self.work.ready
        pattern = re.compile(ready.target) if ready is not None and ready.kind == "log" else None
        offset = self.proc_log_start
        while True:
            text, offset = _read_from(self.log_path, offset)
            lines = text.splitlines()
            self._report(lines, progress)
            matched = pattern is not None and any(pattern.search(line) for line in lines)
            if (ready is None or matched) and self.returncode is None:
                return
            if self.returncode is not None:
                raise EngineError(
                    f"`{argv[0]}` exited with code {self.returncode} before it was ready; "
                    f"last log lines ({self.log_path}):\n{self.tail()}"
                )
            if ready is not None and pattern is None and _check(ready.kind, ready.target):
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
                with self._lock, open(self.log_path, "ab") as log:  # noqa: PTH123
                    if self._stopped:
                        raise OSError("stopped before it started")  # noqa: TRY301 - reported like a failed spawn
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
        last = tail_lines(self.log_path, lines, self.proc_log_start)
        return "\n".join(f"    | {_cut(line)}" for line in last)

    def health(self) -> Health:
        """Serving while the process runs; failed with its exit code and log tail once it has exited."""
        if self.proc is None:
            return Health(ok=False, detail="not started")
        if self.returncode is None and self.proc.poll() is None:
            role = "headless" if self.work.ready is None else "serving"
            return Health(ok=True, detail=f"pid {self.proc.pid}, {role}, ranks {_ranks(self.work.ranks)}")
        code = self.returncode if self.returncode is not None else self.proc.returncode
        last = " | ".join(tail_lines(self.log_path, 3, self.proc_log_start))
        return Health(ok=False, detail=f"process exited with code {code}; last log: {last}")

    def wait(self) -> int:
        """Block until the process exits; its exit code."""
        if self._waiter is not None:
            self._waiter.join()
        return self.returncode if self.returncode is not None else -1

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period; return when it is gone.

        Called before the process was spawned (a launch undone while this rank was starting), it keeps it from
        ever starting.
        """
        with self._lock:
            self._stopped = True
            proc = self.proc
        if proc is None:
            return
        pgid = proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # also whatever it started and left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    @property
    def pid(self) -> int | None:
        """The process's pid, once started."""
        return self.proc.pid if self.proc else None


def _cut(line: str) -> str:
    return line if len(line) <= TAIL_WIDTH else line[: TAIL_WIDTH - 1] + "…"


def _ranks(ranks: tuple[int, ...]) -> str:
    return ",".join(map(str, ranks))


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


def tail_lines(path: str, lines: int, start: int = 0) -> list[str]:
    """The last `lines` lines of a file after offset `start` (reading at most its last 64 KiB)."""
    try:
        with open(path, "rb") as f:  # noqa: PTH123
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - 65536, start))
            data = f.read()
    except OSError:
        return []
    text = data.decode(errors="replace").splitlines()
    return [line for line in text if line.strip() and not _OWN_LINE.match(line)][-lines:]
