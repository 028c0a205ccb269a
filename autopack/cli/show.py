"""`autopack show` (a run's attempts, paged like git) and `autopack report` (one HTML or Markdown file)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from typing import Annotated, Any, Optional

import typer

from autopack.bounds import Bounds
from autopack.cli import app
from autopack.cli.options import ID, DbOption, JsonOption, load, number_option
from autopack.errors import NoSuchRun, UsageError
from autopack.text import shown, to_json

DEFAULT_PAGER = "less -FRX"


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(parser=ID, metavar="RUN", help="The run to show.", show_default=False)],
    phase_id: Annotated[Optional[str], typer.Argument(parser=ID, metavar="[PHASE]", show_default=False,
                                                      help="Only this phase.")] = None,
    attempt: Annotated[Optional[int], number_option("--attempt", bounds=Bounds(1, 1_000_000), show_default=False,
                                                    help="Only this attempt of PHASE.")] = None,
    transcript: Annotated[bool, typer.Option("--transcript", help="Also each attempt's conversation with the model: "
                                             "the task, tool calls and their (capped) results.")] = False,
    log: Annotated[bool, typer.Option("--log", help="Also each test run's output (its stored tail) and the log's path.")
                   ] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """A run's phases and their attempts in order: model, budget, turns, tokens, cost, verdict with its
    reasons and evidence, the failure digest given to the next attempt, the doctor's diagnosis or the
    pattern's hint, and the diff (a completed phase's commit, a failed attempt's saved patch). Paged
    through $PAGER (default `less -FRX`) when the output is a terminal."""
    if attempt is not None and phase_id is None:
        raise UsageError(f"--attempt {attempt} needs a PHASE: `autopack show {run_id} PHASE --attempt {attempt}`")
    story = _story(load(db), run_id, phase_id, attempt, transcript, log)
    if as_json:
        print(to_json(story, indent=2))
        return
    from autopack.report.text import render_show

    terminal = sys.stdout.isatty()
    page(render_show(story, color=terminal and not os.environ.get("NO_COLOR")), terminal)


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(parser=ID, metavar="RUN", help="The run to report on.", show_default=False)],
    output: Annotated[str, typer.Option("-o", "--output", metavar="FILE", help="Write the report to FILE "
                                        "(- = stdout; an existing file is replaced).")] = "-",
    markdown: Annotated[bool, typer.Option("--markdown", help="Write Markdown instead of HTML.")] = False,
    db: DbOption = None,
) -> None:
    """One self-contained report of a run for a reviewer: summary, a timeline of attempts per phase,
    cost by phase and by role, each phase's decision, evidence and delta, diffs and transcripts.
    HTML (inline CSS and SVG, no scripts, nothing fetched) or, with --markdown, Markdown."""
    story = _story(load(db), run_id, None, None, transcripts=True, logs=True)
    if markdown:
        from autopack.report.markdown import render_markdown

        text = render_markdown(story)
    else:
        from autopack.report.html import render_html

        text = render_html(story)
    from autopack.userfiles import write_text_output

    try:
        write_text_output(output, text)
    except OSError as exc:
        raise UsageError(f"-o {shown(output, quote=False)}: cannot write the report: {exc.strerror or exc}") from None
    if output != "-":
        print(f"wrote {output}", file=sys.stderr)


def _story(settings: Any, run_id: str, phase_id: str | None, attempt: int | None, transcripts: bool,
           logs: bool) -> dict[str, Any]:
    from autopack.report.story import run_story
    from autopack.store import open_reader

    reader = open_reader(settings.db)
    if reader is None:
        raise NoSuchRun(run_id, settings.db)
    with reader:
        try:
            story = run_story(reader, run_id, phase_id=phase_id, attempt=attempt, transcripts=transcripts, logs=logs)
        except LookupError as missing:
            raise UsageError(f"{missing.args[0]}; `autopack show {run_id}` lists its phases and attempts") from None
    if story is None:
        raise NoSuchRun(run_id, settings.db)
    return story


def page(text: str, terminal: bool) -> None:
    """``text`` through $PAGER (default ``less -FRX``) on a terminal, as git pages; plainly elsewhere,
    or when $PAGER is empty or ``cat`` or names no program."""
    command = os.environ.get("PAGER", DEFAULT_PAGER) if terminal else ""
    try:
        program = shlex.split(command)[:1]
    except ValueError:
        program = []
    if not program or command.strip() == "cat" or shutil.which(program[0]) is None:
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    env = {"LESS": "FRX", "LV": "-c", **os.environ}  # as git sets them, unless the user did
    pager = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, env=env)
    try:
        pager.stdin.write(text.encode("utf-8", "replace"))
        pager.stdin.close()
    except BrokenPipeError:  # the user quit the pager before the end: fine
        pass
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the pager's (less stays open), as in git
    try:
        pager.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
