"""The dpctl command line: the Typer app and the one error boundary that maps failures to exit codes."""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, TyperException

from dpctl_ray import __version__
from dpctl_ray.cli import console, failures
from dpctl_ray.errors import BadInput, ChangeFailed, DpctlError, ExitCode
from dpctl_ray.planner.place import NoPlan
from dpctl_ray.values import one_line

# Every command, in the order `--help` lists them: the module of dpctl_ray.cli and the object there. A command's
# module is imported when that command runs (or for `--help`), not on every run (a lazy command group).
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("plan_cmd", "plan_command"),
    "inventory": ("plan_cmd", "inventory_command"),
    "up": ("deploy_cmd", "up_command"),
    "status": ("status_cmd", "status_command"),
    "scale": ("change_cmd", "scale_command"),
    "logs": ("status_cmd", "logs_command"),
    "repair": ("change_cmd", "repair_command"),
    "down": ("deploy_cmd", "down_command"),
    "doctor": ("doctor_cmd", "doctor_command"),
    "cluster": ("cluster_cmd", "cluster_app"),
}


class DpctlGroup(TyperGroup):
    """The root group: loads a command when it is asked for, runs it, and turns whatever escapes into an exit code."""

    def list_commands(self, ctx: Any) -> list[str]:  # noqa: ARG002 - click's signature (Typer's own click)
        """Every command's name."""
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:  # noqa: ARG002 - click's signature
        """The command, built by Typer from its function (or the `cluster` group) on first use."""
        found = COMMANDS.get(cmd_name)
        if found is None:
            return None
        module, attr = found
        target = getattr(importlib.import_module(f"dpctl_ray.cli.{module}"), attr)
        if isinstance(target, typer.Typer):
            return typer.main.get_group(target)
        single = typer.Typer()
        single.command(cmd_name)(target)
        return typer.main.get_command(single)

    def main(  # type: ignore[override]  # noqa: D102 - click's main, with the error boundary around it
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,  # noqa: ARG002 - always handled here
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        options = argv[: argv.index("--")] if "--" in argv else argv
        debug = "--debug" in options or os.environ.get("DPCTL_DEBUG", "") not in ("", "0")
        # Errors that stop a command before its -o option is read (usage errors) are documents too.
        invocation = console.Invocation(json_errors=_wants_document(self, options))
        code = run(
            lambda: super(DpctlGroup, self).main(
                argv, prog_name or "dpctl", complete_var, standalone_mode=False, obj=invocation, **extra
            ),
            debug,
            invocation,
        )
        sys.exit(int(code))


def _wants_document(group: DpctlGroup, argv: list[str]) -> bool:
    """Whether the command line asks a command that has -o for `-o json` or `-o yaml`."""
    words = [a for a in argv if not a.startswith("-")][:2]
    command: Any = group.get_command(typer.Context(group), words[0]) if words else None
    if command is not None and len(words) > 1:
        command = getattr(command, "commands", {}).get(words[1], command)
    if command is None or not any(p.name == "output" for p in command.params):
        return False
    for i, arg in enumerate(argv):
        value = None
        if arg in ("-o", "--output") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--output="):
            value = arg.partition("=")[2]
        elif arg.startswith("-o") and len(arg) > 2:
            value = arg[2:]
        if value is not None and value.lower() in ("json", "yaml"):
            return True
    return False


def run(command: Any, debug: bool, invocation: console.Invocation) -> int:
    """Call `command`; map DpctlError, usage errors, Ctrl-C and bugs to DESIGN.md exit codes."""
    try:
        result = command()
    except DpctlError as exc:
        if isinstance(exc, NoPlan):
            from dpctl_ray.cli.explain import in_words  # noqa: PLC0415 - only when a plan does not fit

            exc = in_words(exc, json_errors=invocation.json_errors)
        elif isinstance(exc, ChangeFailed):
            exc = failures.in_words(exc)
        exc.message = one_line(exc.message)
        exc.hint = one_line(exc.hint) if exc.hint else exc.hint
        if invocation.json_errors:
            console.print_json(exc.to_json())
        _error(exc.message, exc.hint)
        if debug:
            _traceback()
        return exc.exit_code
    except TyperException as exc:  # click usage errors (bad flag, missing argument, bad value)
        ctx = getattr(exc, "ctx", None)
        command_path = ctx.command_path if ctx is not None else "dpctl"
        usage = BadInput(one_line(exc.format_message()), hint=f"see '{command_path} --help'", code="usage")
        if invocation.json_errors:
            console.print_json(usage.to_json())
        _error(usage.message, usage.hint)
        return int(getattr(exc, "exit_code", ExitCode.BAD_INPUT))
    except (KeyboardInterrupt, Abort):
        _error("interrupted", None)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `dpctl plan | head`: the reader left; that is not an error worth a traceback.
        sys.stderr.close()
        return ExitCode.OK
    except Exception as exc:  # noqa: BLE001 - the boundary: anything else is a bug, reported as one
        if debug:
            _traceback()
        bug = DpctlError(
            one_line(f"unexpected {type(exc).__name__}: {exc}"),
            hint="this is a bug in dpctl; rerun with --debug for the traceback and report it",
            code="bug",
        )
        if invocation.json_errors:
            console.print_json(bug.to_json())
        _error(bug.message, bug.hint)
        return ExitCode.ERROR
    return int(result) if isinstance(result, int) else ExitCode.OK


def _traceback() -> None:
    import traceback  # noqa: PLC0415 - only with --debug; importing it costs ~8 ms on every run

    traceback.print_exc()


def _error(message: str, hint: str | None) -> None:
    sys.stderr.write(f"dpctl: error: {message}\n")
    if hint:
        sys.stderr.write(f"  hint: {hint}\n")
    sys.stderr.flush()


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"dpctl {__version__}\n")
        raise typer.Exit


def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Plan and launch data-parallel LLM engine clusters on Ray."""


def build() -> typer.Typer:
    """The dpctl app: the root options and every command, each loaded when it is asked for."""
    built = typer.Typer(
        cls=DpctlGroup,
        name="dpctl",
        help="Plan and launch data-parallel LLM engine clusters on Ray.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    built.callback()(root)
    return built


app = build()


def main() -> None:
    """Console-script entry point."""
    # A CLI run allocates many long-lived objects (a 16k-node plan is ~1M) and hardly any cycles: move what the
    # imports made out of the collector's way, and collect young objects every 200k allocations instead of 700,
    # which still collects in a long `status --watch`. Saves ~10% of a 16k-node `plan`.
    gc.freeze()
    gc.set_threshold(200_000, 10, 10)
    app()
