"""The CI recipe in examples/ci only uses commands and options this autopack has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from autopack.cli import app

RECIPE = Path(__file__).parent.parent / "examples" / "ci" / "github-actions.yml"


def autopack_commands() -> list[list[str]]:
    lines = [line.strip() for line in RECIPE.read_text().splitlines()]
    lines = [re.sub(r"^(- )?run: (\|)?", "", line) for line in lines]
    commands = [shlex.split(line.split(">")[0].replace("${{ inputs.run_id }}", "RUN"))
                for line in lines if line.startswith("autopack ")]
    return commands


def test_every_autopack_command_in_the_github_actions_recipe_exists_with_its_options():
    commands = autopack_commands()
    assert {command[1] for command in commands} >= {"drain", "status", "report", "land"}
    for command in commands:
        shown = CliRunner().invoke(app, [command[1], "--help"], terminal_width=200)
        assert shown.exit_code == 0, command
        for option in (word for word in command[2:] if word.startswith("-")):
            assert option in shown.output, f"{' '.join(command)}: {option} is not an option of {command[1]}"
