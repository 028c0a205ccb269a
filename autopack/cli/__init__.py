"""The `autopack` command line: parse, call the library, render. Nothing else lives here."""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Optional

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer's own copy of click

from autopack import __version__
from autopack.errors import EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, AutopackError, UsageError

app = typer.Typer(
    name="autopack",
    help="Carry out a plan on a git repository, phase by phase: Claude writes each change, "
    "autopack applies it in a worktree, runs the tests and keeps it only if nothing regressed.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"autopack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """autopack: autonomous, test-gated execution of multi-phase plans."""


from autopack.cli import admin, drain, run, status  # noqa: E402  (registers the commands)
from autopack.cli import abtest  # noqa: E402,F401  (registers ab-test)
from autopack.cli import plan  # noqa: E402,F401  (registers plan)
from autopack.cli import show  # noqa: E402,F401  (registers show and report)
from autopack.cli import logs  # noqa: E402,F401  (registers logs)
from autopack.cli import land  # noqa: E402,F401  (registers land)
from autopack.cli import check  # noqa: E402,F401  (registers check)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run_app(argv: list[str] | None) -> None:
    """Run the command; a usage error (unknown option or command, missing or bad value) is a UsageError:
    one line ``autopack: error: <what> (see autopack <command> --help)``, exit 2."""
    try:
        code = app(args=argv, prog_name="autopack", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `autopack` alone: the help
        exc.show()
        sys.exit(exc.exit_code)
    except ClickException as exc:
        what = exc.format_message().strip().rstrip(".")
        what = what[:1].lower() + what[1:] if what[1:2].islower() else what
        raise UsageError(f"{what} (see {_command_path(exc, argv)} --help)") from None
    sys.exit(code or 0)  # as click's standalone mode does: every command ends in SystemExit


def _command_path(error: ClickException, argv: list[str] | None) -> str:
    """``autopack <command>`` the error is about (click leaves some errors without their context)."""
    context = getattr(error, "ctx", None)
    if context is not None:
        return context.command_path
    named = next((arg for arg in (sys.argv[1:] if argv is None else argv) if not arg.startswith("-")), None)
    return f"autopack {named}" if named in typer.main.get_command(app).commands else "autopack"


def main(argv: list[str] | None = None) -> None:
    """Entry point: every AutopackError becomes one stderr line and its exit code; any other exception
    is a bug, reported in one line naming the crash log with its traceback (exit 70)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        _run_app(argv)
    except AutopackError as exc:
        print(f"autopack: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("autopack: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # anything else is a bug: one line, the traceback in a crash log
        from autopack.cli.crash import report_crash
        from autopack.cli.options import state_dir

        report_crash(exc, state_dir())
        sys.exit(EXIT_INTERNAL_ERROR)


__all__ = ["app", "main", "admin", "check", "land", "logs", "plan", "run", "show", "status"]
