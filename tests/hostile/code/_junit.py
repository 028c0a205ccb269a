"""Shared by the hostile test programs: the JUnit report autopack reads ($AUTOPACK_JUNIT_FILE)."""

import os
from pathlib import Path


def write_report() -> None:
    """A passing check::sanity, plus out::a.txt once the phase wrote out/a.txt."""
    cases = ['<testcase classname="check" name="sanity"/>']
    if Path("out/a.txt").exists():
        cases.append('<testcase classname="out" name="a.txt"/>')
    target = os.environ.get("AUTOPACK_JUNIT_FILE", "report.xml")
    Path(target).write_text(f'<testsuite name="hostile" tests="{len(cases)}">{"".join(cases)}</testsuite>')
