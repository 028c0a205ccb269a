"""`autopack ab-test`: compare control runs with treatment runs, pair by pair."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from autopack.bounds import Bounds
from autopack.cli import app
from autopack.cli.options import DbOption, ids, load, number_option
from autopack.errors import UsageError
from autopack.text import shown, to_json

RunsOption = Optional[list[str]]
ControlOption = Annotated[RunsOption, typer.Option(
    "--control", metavar="RUN", show_default=False, parser=ids(","),
    help="Control run id (repeat, or comma-separate); paired in order with --treatment.")]
TreatmentOption = Annotated[RunsOption, typer.Option(
    "--treatment", metavar="RUN", show_default=False, parser=ids(","), help="Treatment run id (repeat, or comma-separate).")]
PairOption = Annotated[RunsOption, typer.Option(
    "--pair", metavar="CONTROL:TREATMENT", show_default=False, parser=ids(":"), help="One pair of runs (repeat).")]
ByFlagOption = Annotated[Optional[str], typer.Option(
    "--by-flag", metavar="NAME", show_default=False,
    help="Pair runs of the same plan whose flags differ only in NAME (off or absent = control), in creation order.")]
FileOption = Optional[str]


def _split(values: list[str] | None) -> list[str]:
    """Repeated options, each possibly comma-separated (run ids never contain commas)."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def _write(target: str, text: str) -> None:
    from autopack.userfiles import write_text_output

    try:
        write_text_output(target, text)
    except OSError as exc:
        raise UsageError(f"cannot write {shown(target, quote=False)}: {exc.strerror}") from None


@app.command("ab-test")
def ab_test(
    control: ControlOption = None,
    treatment: TreatmentOption = None,
    pair: PairOption = None,
    by_flag: ByFlagOption = None,
    allow_mismatch: Annotated[bool, typer.Option(
        "--allow-mismatch", help="Include pairs whose plans differ (still warned about).")] = False,
    json_file: Annotated[FileOption, typer.Option(
        "--json", metavar="FILE", show_default=False, help="Write the report as JSON (- = stdout).")] = None,
    markdown_file: Annotated[FileOption, typer.Option(
        "--markdown", metavar="FILE", show_default=False, help="Write the report as Markdown (- = stdout).")] = None,
    seed: Annotated[int, number_option(
        "--seed", bounds=Bounds(0, 2**63 - 1), help="Seed of the bootstrap (same seed, same intervals).")] = 0,
    resamples: Annotated[int, number_option("--resamples", bounds=Bounds(100, 100_000), help="Bootstrap resamples.")] = 10_000,
    db: DbOption = None,
) -> None:
    """Compare runs pairwise (treatment - control): tokens, cost, doctor calls, phases complete,
    attempts, escalations, test runs and wall time, with bootstrap intervals, sign and signed-rank
    tests, flipped phases and validity warnings. Pairs whose plans differ are left out unless
    --allow-mismatch. Exit 2: an unknown run id, arms of different lengths, or no pair left."""
    from autopack import abtest, abtest_pairs
    from autopack.store import open_reader

    modes = [name for name, given in (("--control/--treatment", control or treatment), ("--pair", pair),
                                      ("--by-flag", by_flag)) if given]
    if len(modes) != 1:
        raise UsageError("give exactly one of --control/--treatment, --pair or --by-flag"
                         + (f" (got {', '.join(modes)})" if modes else ""))
    if json_file == "-" and markdown_file == "-":
        raise UsageError("--json - and --markdown - both want stdout; write one of them to a file")
    settings = load(db)
    reader = open_reader(settings.db)
    try:
        notes: list[str] = []
        if by_flag:
            if reader is None:
                raise UsageError(f"no database at {settings.db}: no runs to pair")
            from autopack.store.metrics import run_facts

            pairs, unpaired = abtest_pairs.pairs_by_flag(run_facts(reader).values(), by_flag)
            if not pairs:
                raise UsageError(f"no two runs of one plan differ only in flag {shown(by_flag)}; "
                                 "`autopack status` lists the runs")
            if unpaired:
                notes.append(f"left unpaired (no partner differing only in {by_flag}): {', '.join(unpaired)}")
        elif pair:
            pairs = [abtest_pairs.parse_pair(text) for text in pair]
        else:
            pairs = abtest_pairs.pairs_from_arms(_split(control), _split(treatment))
        report = abtest.compare(reader, pairs, allow_mismatch=allow_mismatch, seed=seed, resamples=resamples,
                                notes=notes)
    finally:
        if reader is not None:
            reader.close()
    _output(report, json_file, markdown_file)
    if not report.included:
        raise UsageError(f"all {len(report.pairs)} pairs were excluded because their plans differ; "
                         "pass --allow-mismatch to compare them anyway")


def _output(report: object, json_file: str | None, markdown_file: str | None) -> None:
    from autopack import render_abtest

    if json_file:
        _write(json_file, to_json(report.to_dict(), indent=2) + "\n")
    if markdown_file:
        _write(markdown_file, render_abtest.to_markdown(report))
    if "-" in (json_file, markdown_file):
        for pair in report.pairs:
            for warning in pair.warnings:
                print(f"autopack: warning: pair {pair.index} ({pair.control} → {pair.treatment}): "
                      f"{warning.message}", file=sys.stderr)
        for note in report.notes:
            print(f"autopack: warning: {note}", file=sys.stderr)
    else:
        render_abtest.print_report(report)
