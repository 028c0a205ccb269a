"""`autopack logs`: a run's test runs, and the whole log (or JUnit XML) of a phase's, from any machine."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from autopack.bounds import Bounds
from autopack.cli import app
from autopack.cli.options import ID, DbOption, JsonOption, load, number_option
from autopack.cli.show import page
from autopack.errors import AutopackError, NoSuchRun, UsageError
from autopack.text import to_json


@app.command()
def logs(
    run_id: Annotated[str, typer.Argument(parser=ID, metavar="RUN", help="The run.", show_default=False)],
    phase_id: Annotated[Optional[str], typer.Argument(parser=ID, metavar="[PHASE]", show_default=False,
                                                      help="Print this phase's logs (without: list the run's test runs).")
                        ] = None,
    attempt: Annotated[Optional[int], number_option("--attempt", bounds=Bounds(1, 1_000_000), show_default=False,
                                                    help="Attempt N of PHASE (default: its last).")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", metavar="KIND", show_default=False,
                                                help="Only test runs of this kind (baseline, attempt, rerun, f2p, "
                                                     "old_tests, land, ...: the list shows them).")] = None,
    land: Annotated[bool, typer.Option("--land", help="The land gate's test runs instead of a phase's.")] = False,
    junit: Annotated[bool, typer.Option("--junit", help="Print the test run's JUnit XML instead of its log.")
                     ] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Without PHASE: every test run of RUN (phase, attempt, kind, exit code, counts) and where its log
    can be read. With PHASE (or --land): their whole logs, from this machine's file where it ran
    the tests, else from the store's copy (its first MiB and the output's end), so any machine
    sharing the store can read them. Paged through $PAGER on a terminal, as `show` is."""
    if attempt is not None and phase_id is None:
        raise UsageError(f"--attempt {attempt} needs a PHASE: `autopack logs {run_id} PHASE --attempt {attempt}`")
    if land and phase_id is not None:
        raise UsageError(f"--land and PHASE '{phase_id}' name different test runs; give one of them")
    from autopack.report import logs as read_logs
    from autopack.store import open_reader

    settings = load(db)
    reader = open_reader(settings.db)
    if reader is None:
        raise NoSuchRun(run_id, settings.db)
    with reader:
        listed = read_logs.test_runs(reader, run_id)
        if listed is None:
            raise NoSuchRun(run_id, settings.db)
        if phase_id is None and not land:
            if kind is not None or junit:
                raise UsageError(f"{'--kind' if kind is not None else '--junit'} needs a PHASE or --land: "
                                 f"`autopack logs {run_id} PHASE`")
            _list(run_id, listed, as_json)
            return
        if as_json:
            raise UsageError("--json lists the test runs: leave out PHASE and --land")
        chosen = _chosen(run_id, listed, phase_id, attempt, kind, land)
        if junit and len(chosen) > 1:
            raise UsageError(f"--junit prints one test run's XML and more than one is chosen "
                             f"({', '.join(e['kind'] for e in chosen)}); pick one with --kind")
        texts = [(entry, *_text(reader, read_logs, entry, junit)) for entry in chosen]
    terminal = sys.stdout.isatty()
    page("".join(_shown(entry, text, where, len(texts) > 1) for entry, text, where in texts), terminal)


def _chosen(run_id: str, listed: list[dict[str, Any]], phase_id: str | None, attempt: int | None,
            kind: str | None, land: bool) -> list[dict[str, Any]]:
    """The test runs the options pick; a UsageError naming what there is when they pick none."""
    hint = f"`autopack logs {run_id}` lists its test runs"
    if land:
        chosen = [e for e in listed if e["phase"] is None]
        if not chosen:
            raise UsageError(f"run '{run_id}' has no land gate test runs (`autopack land {run_id}` makes them)")
        where = "the land gate"
    else:
        chosen = [e for e in listed if e["phase"] == phase_id]
        if not chosen:
            raise UsageError(f"phase '{phase_id}' of run '{run_id}' has no test runs; {hint}")
        number = attempt if attempt is not None else max(e["attempt"] for e in chosen)
        chosen = [e for e in chosen if e["attempt"] == number]
        if not chosen:
            raise UsageError(f"phase '{phase_id}' of run '{run_id}' has no test runs in attempt {number}; {hint}")
        where = f"attempt {number} of phase '{phase_id}'"
    if kind is not None:
        kinds = sorted({e["kind"] for e in chosen})
        chosen = [e for e in chosen if e["kind"] == kind]
        if not chosen:
            raise UsageError(f"--kind {kind}: {where} has test runs of kind {', '.join(kinds)}")
    return chosen


def _text(reader: Any, read_logs: Any, entry: dict[str, Any], junit: bool) -> tuple[str, str]:
    """(the log or JUnit XML, where it came from); AutopackError when it is neither here nor stored."""
    if junit:
        text = read_logs.junit_text(reader, entry)
        if text is None:
            raise AutopackError(f"no JUnit XML of the {entry['kind']} test run in the store ({entry['junit']})")
        return text, "the store"
    found = read_logs.log_text(reader, entry)
    if found is None:
        raise AutopackError(f"the log of the {entry['kind']} test run is neither on this machine ({entry['log_path']}) "
                            "nor in the store (recorded before autopack kept logs in the store)")
    return found


def _shown(entry: dict[str, Any], text: str, where: str, headed: bool) -> str:
    """The text as it is (one test run: its bytes), or under a header line as `tail` prints files."""
    if not headed:
        return text
    if text and not text.endswith("\n"):
        text += "\n"
    exit_code = "timed out" if entry["timed_out"] else f"exit {entry['exit_code']}"
    whose = f"attempt {entry['attempt']}" if entry["phase"] else "land gate"
    return f"==> {whose}, {entry['kind']}: {entry['command']} ({exit_code}; from {where}) <==\n{text}\n"


def _list(run_id: str, listed: list[dict[str, Any]], as_json: bool) -> None:
    from autopack.report.logs import LOG_LIST_SCHEMA

    if as_json:
        print(to_json({"schema": LOG_LIST_SCHEMA, "run_id": run_id, "test_runs": listed}, indent=2))
        return
    from autopack import render

    render.print_test_runs(run_id, listed)
