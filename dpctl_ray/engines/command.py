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
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dpctl_ray.engines import exits, leftovers
from dpctl_ray.engines.base import EngineError, Health, Progress
from dpctl_ray.engines.work import ProcessWork

POLL_SECONDS = 0.1
_OWN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d dpctl: ")  # what the host writes, not the process

# Run the command through a small exec shim. It asks Linux to SIGKILL the command when the thread that started
# it dies (if the engine host is killed outright, its process does not outlive it), and first forks a watchdog
# into the command's process group: when the command dies, however it dies, the watchdog SIGKILLs the whole
# group, so what the command started (vLLM's EngineCore and Worker, holding the devices) goes with it.
_WATCHDOG = (
    "import os, signal, sys, time\n"
    "# dpctl watchdog: kills its process group once the process it watches is gone\n"
    "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP): signal.signal(s, signal.SIG_IGN)\n"
    "watched = int(sys.argv[1])\n"
    "while os.getppid() == watched: time.sleep(0.2)\n"
    "os.killpg(0, signal.SIGKILL)\n"
)
_SHIM = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"  # PR_SET_PDEATHSIG
    "os.getppid() == int(sys.argv[1]) or os._exit(1)\n"
    "me = os.getpid()\n"
    "if os.fork() == 0:\n"
    "    os.execv(sys.executable, [sys.executable, '-c', sys.argv[2], str(me)])\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)
HEALTH_TIMEOUT = 1.0


class CommandEngine:
    """Runs one rendered process: starts it, waits for its readiness check, stops it with SIGTERM then SIGKILL."""

    def __init__(
        self, work: ProcessWork, log_path: str, node_ip: str, owner: Owner, drop: tuple[str, ...] = ()
    ) -> None:
        self.work = work
        self.drop = drop  # variables of the host's environment the process does not inherit (Ray's worker defaults)
        self.progress_pattern = re.compile(work.spec.progress) if work.spec.progress else None
        self.stop_grace = work.spec.stop_grace
        self.log_path = log_path
        self.node_ip = node_ip
        self.owner = owner
        self.instance = uuid.uuid4().hex[:12]
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.proc_log_start = 0
        self.ready = False  # passed its readiness check: an exit from then on is a crash, whatever its code
        self._waiter: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False  # stop() came first: the process must not start afterwards, and its exit is ours

    def start(self, log: Callable[[str], None], progress: Progress) -> None:
        """Start the process; return when its readiness check passes (at once when headless), raise if it exits."""
        argv, extra_env = list(self.work.argv), dict(self.work.env)
        env = {k: v for k, v in os.environ.items() if k not in self.work.unset and k not in self.drop}
        env.update(extra_env)
        program = shutil.which(argv[0], path=env.get("PATH"))
        if program is None:
            raise EngineError(f"engine.argv[0]: {argv[0]!r} not found on node {self.node_ip} (PATH={env.get('PATH')})")
        swept = leftovers.kill(self.owner.deployment, self.work.ranks, self.owner.node_index, keep=self.instance)
        for line in swept:
            log(f"dpctl: killed a process an earlier start of these ranks left running: {line}")
        env.update(leftovers.marks(self.owner.deployment, self.work.ranks, self.owner.node_index, self.instance))
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
                self.ready = True
                return
            if self.returncode is not None:
                raise EngineError(f"`{argv[0]}` {self._ended()}")
            if ready is not None and pattern is None and _check(ready.kind, ready.target) == "ok":
                self.ready = True
                return
            time.sleep(POLL_SECONDS)

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: str | None) -> None:
        started = threading.Event()
        errors: list[BaseException] = []
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-c", _SHIM, str(os.getpid()), _WATCHDOG, *argv]
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
                    owner = self.owner
                    leftovers.register(
                        owner.deployment, self.instance, self.proc.pid, self.work.ranks, owner.node_index
                    )
            except OSError as exc:
                errors.append(exc)
                started.set()
                return
            started.set()
            code = self.proc.wait()
            # Whatever it started goes with it (the watchdog does the same; this covers a watchdog killed first).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.returncode = code

        self._waiter = threading.Thread(target=run, name="dpctl-engine-process", daemon=True)
        self._waiter.start()
        started.wait()
        if errors:
            raise EngineError(f"cannot start `{argv[0]}`: {errors[0]}")

    def _report(self, lines: list[str], progress: Progress) -> None:
        """Log lines become the rank's progress: all of them, or those matching engine.progress (`pct` group)."""
        for line in lines:
            if not line.strip() or _OWN_LINE.match(line) or exits.noise(line):
                continue
            fraction = None
            if self.progress_pattern is not None:
                found = self.progress_pattern.search(line)
                if not found:
                    continue
                pct = found.groupdict().get("pct")
                fraction = min(float(pct) / 100, 1.0) if pct else None
            progress.progress(fraction, exits.headline(line)[:200])

    def _lines(self) -> list[str]:
        """The log lines the process wrote since it started (from its last 64 KiB)."""
        return tail_lines(self.log_path, 400, self.proc_log_start)

    def _ended(self) -> str:
        """How the process ended, with the log lines that explain it."""
        code = self.returncode if self.returncode is not None else (self.proc.returncode if self.proc else -1)
        if self._stopped:
            return f"was stopped by dpctl ({exits.status(code)})"
        return f"{exits.crashed(code, self._lines(), serving=self.ready)} (log: {self.log_path})"

    def health(self) -> Health:
        """Serving while the process runs and its readiness URL answers; failed once it has exited, with why.

        An http readiness check is asked again (vLLM's `/health` answers 503 once its engine core died, seconds
        before the API server exits); a check that does not answer in time is not a failure.
        """
        if self.proc is None:
            return Health(ok=False, detail="not started")
        if self.returncode is None and self.proc.poll() is None:
            role = "headless" if self.work.ready is None else "serving"
            ready = self.work.ready
            if ready is not None and ready.kind == "http" and self.ready:
                answer = _check("http", ready.target, HEALTH_TIMEOUT)
                if answer not in ("ok", "timeout"):
                    return Health(ok=False, detail=f"pid {self.proc.pid} is unhealthy: {ready.target} {answer}")
            return Health(ok=True, detail=f"pid {self.proc.pid}, {role}, ranks {_ranks(self.work.ranks)}")
        self.wait()
        return Health(ok=False, detail=f"process {self.proc.pid} {self._ended()}")

    def wait(self) -> int:
        """Block until the process exits; its exit code."""
        if self._waiter is not None:
            self._waiter.join()
        return self.returncode if self.returncode is not None else -1

    def stop(self) -> str:
        """SIGTERM the process group, SIGKILL it after the grace period; return when it is gone, saying how it went.

        Called before the process was spawned (a launch undone while this rank was starting), it keeps it from
        ever starting.
        """
        with self._lock:
            self._stopped = True
            proc = self.proc
        if proc is None:
            return "it had not started"
        pgid = proc.pid
        began = time.monotonic()
        running = proc.poll() is None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = began + self.stop_grace
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        left = proc.poll() is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # also whatever it started and left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        leftovers.kill(self.owner.deployment, self.work.ranks, self.owner.node_index)  # children that left the group
        code = exits.status(proc.returncode if proc.returncode is not None else -9)
        if not running:
            return f"process {pgid} had already ended ({code})"
        if left:
            return f"process {pgid} left on SIGTERM in {time.monotonic() - began:.1f}s ({code})"
        return f"process {pgid} did not leave within {self.stop_grace:g}s of SIGTERM: SIGKILL ({code})"

    @property
    def pid(self) -> int | None:
        """The process's pid, once started."""
        return self.proc.pid if self.proc else None

    @property
    def ended(self) -> bool:
        """Whether the process started and has exited."""
        return self.proc is not None and (self.returncode is not None or self.proc.poll() is not None)


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose process this is: the deployment, and which node of its ranks (for the marks in its environment)."""

    deployment: str
    node_index: int


def _ranks(ranks: tuple[int, ...]) -> str:
    return ",".join(map(str, ranks))


def _check(kind: str, target: str, timeout: float = 1.0) -> str:
    """One readiness check: "ok", "timeout", or what failed (`answered 503`, `refused`)."""
    if kind == "tcp":
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
                return "ok"
        except (OSError, ValueError):
            return "refused"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:  # noqa: S310 - the user's own URL
            code = int(response.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
    except TimeoutError:
        return "timeout"
    except urllib.error.URLError as exc:
        return "timeout" if isinstance(exc.reason, TimeoutError) else "refused"
    except (OSError, ValueError):
        return "refused"
    return "ok" if 200 <= code < 300 else f"answered {code}"


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
