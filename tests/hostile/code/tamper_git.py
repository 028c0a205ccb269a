"""Hostile test: once the phase's file exists, tamper with the worktree's git state (only once)."""

import subprocess
import sys
from pathlib import Path

from _junit import write_report

mode, once = sys.argv[1], Path(sys.argv[2])
write_report()


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


if Path("out/a.txt").exists() and not once.exists():
    once.write_text(mode)
    branch = git("symbolic-ref", "HEAD")
    if mode == "delete-branch":
        git("update-ref", "-d", branch)
    elif mode == "move-branch":  # to a forged commit: history autopack never made
        tree = git("mktree", "--missing")
        forged = git("-c", "user.name=x", "-c", "user.email=x@x", "commit-tree", tree, "-m", "forged")
        git("update-ref", branch, forged)
    elif mode == "own-commit":  # the test commits (part of) the phase's change itself
        git("add", "-A")
        git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "sneaky", "--no-verify")
    elif mode == "exclude":  # hide the phase's files from autopack's `git add`
        exclude = Path(git("rev-parse", "--git-path", "info/exclude"))
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a") as out:
            out.write("out/\n")
    elif mode == "corrupt-head":
        Path(git("rev-parse", "--git-path", "HEAD")).write_text("ref: refs/heads/../../../etc\n")
    else:
        raise SystemExit(f"unknown mode {mode}")
