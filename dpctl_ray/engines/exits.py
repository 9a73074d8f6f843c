"""Why a process ended, in a few words: its exit status, and the log lines that explain it (not its last noise).

A serving process logs periodic stats, access lines and shutdown chatter; the last lines of its log are seldom
the reason it stopped. These functions pick the reason (an argparse error, a traceback's last exception and
what follows it, vLLM's ERROR lines) from the lines of one process start. Pure: lines in, words out.
"""

from __future__ import annotations

import re
import signal

# vLLM prefixes its processes' lines ("(APIServer pid=12) ", "(EngineCore pid=13) "); ANSI colours may follow.
_PREFIX = re.compile(r"^(?:\x1b\[[0-9;]*m)*\((?:APIServer|EngineCore|Worker|ApiServer)[^)]*\)\s*(?:\x1b\[[0-9;]*m)*")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOGGER_HEAD = re.compile(r"^(?:INFO|WARNING|DEBUG)\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s*")
_NOISE = re.compile(
    r"""
    "(?:GET|POST|PUT|DELETE|HEAD)\s\S+\sHTTP/[\d.]+"\s\d{3}       # an access-log line
    | Avg\ prompt\ throughput | Engine\ \d+:\ .*throughput           # periodic stats
    | Shutting\ down | shutting\ down | Waiting\ for\ application\ shutdown | Application\ shutdown\ complete
    | Finished\ server\ process | Stopped\ server | resource_tracker | leaked\ semaphore | leaked\ shared_memory
    | Exception\ ignored\ in | sys:1:\ | warnings\.warn | RuntimeWarning | UserWarning | DeprecationWarning
    | nanobind | leaked\ (?:function|instance|type) | skipped\ remainder
    | ^\s*$
    """,
    re.VERBOSE,
)
_USAGE_ERROR = re.compile(r"^[\w .-]+: error: ")  # argparse: "vllm: error: unrecognized arguments: --x"
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning)\b:?")
_LEVEL_ERROR = re.compile(r"\b(?:ERROR|CRITICAL|FATAL)\b")
_HINT_LINE = re.compile(r"errors\.pydantic\.dev|^\s*For further information")
MAX_REASON = 3
REASON_WIDTH = 200  # an error is one line of at most 1000 characters


def clean(line: str) -> str:
    """A log line without vLLM's process prefix and colour codes."""
    return _ANSI.sub("", _PREFIX.sub("", line)).rstrip()


def headline(line: str) -> str:
    """A log line as progress: cleaned, and without vLLM's logger head (`INFO 12-07 18:20:33 [core.py:133] `)."""
    return _LOGGER_HEAD.sub("", clean(line)).strip()


def noise(line: str) -> bool:
    """Whether a line says nothing about why a process stopped (stats, access log, shutdown chatter)."""
    return bool(_NOISE.search(line))


def reason(lines: list[str]) -> list[str]:
    """The lines that explain why a process stopped, at most three, most telling first.

    An argparse error line wins; then a traceback's final exception with the lines that follow it (pydantic
    puts the detail there); then the last ERROR lines; else the last lines that are not noise.
    """
    text = [clean(line) for line in lines]
    for line in reversed(text):
        if _USAGE_ERROR.match(line):
            return [line.strip()]
    for index in range(len(text) - 1, -1, -1):
        line = text[index]
        if _EXCEPTION.match(line) and ":" in line and not noise(line):
            after = [t.strip() for t in text[index + 1 : index + MAX_REASON + 2] if t.strip()]
            after = [t for t in after if t.startswith(("Value error", "  ")) or not _looks_logged(t)]
            return [line.strip(), *[t for t in after if not noise(t) and not _HINT_LINE.search(t)]][:MAX_REASON]
    errors = [line.strip() for line in text if _LEVEL_ERROR.search(line) and not noise(line)]
    if errors:
        return errors[-MAX_REASON:]
    return [line.strip() for line in text if not noise(line)][-MAX_REASON:]


def _looks_logged(line: str) -> bool:
    """A line a logger wrote (level and date), not the continuation of an exception message."""
    return bool(re.match(r"^(?:INFO|WARNING|DEBUG|ERROR)\b", line))


def status(code: int) -> str:
    """An exit status in words: `exit code 2`, `killed by SIGKILL`."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def crashed(code: int, lines: list[str], *, serving: bool) -> str:
    """How a process that dpctl did not stop ended: a crash, whatever its exit code, with its reason.

    `serving`: it had passed its readiness check (an exit then is never normal, even with code 0, which is how
    vLLM's API server leaves once its engine core died).
    """
    when = "while serving" if serving else "before it was ready"
    why = [line if len(line) <= REASON_WIDTH else line[: REASON_WIDTH - 1] + "…" for line in reason(lines)]
    head = f"crashed {when} ({status(code)})"
    return f"{head}: {' | '.join(why)}" if why else head
