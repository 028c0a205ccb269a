"""`autopack land`: real repositories, the real CLI; `gh` is the one stand-in (it talks to the network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import git, rows
from drainkit import PhaseScript, Workbench

STAND_IN_GH = """#!{python}
import json, sys
from pathlib import Path
Path({record!r}).write_text(json.dumps(sys.argv[1:]))
print("https://github.com/o/r/pull/7")
"""


def drained(tmp_path: Path, phases=(PhaseScript("a"), PhaseScript("b"))) -> Workbench:
    wb = Workbench(tmp_path)
    wb.queue("r", list(phases))
    done = wb.cli("drain", "--run-id", "r")
    assert done.returncode in (0, 1), done.stderr
    return wb


def head(wb: Workbench, ref: str = "main") -> str:
    return git(wb.repo, "rev-parse", ref, env=wb.env)


def landings(wb: Workbench) -> list[tuple]:
    return rows(wb.db, "SELECT method, base_branch, base_before, landed_commit, partial, remote, pr_url, details "
                       "FROM landings")


def commit_on_main(wb: Workbench, path: str, content: str, message: str) -> str:
    (wb.repo / path).write_text(content)
    git(wb.repo, "add", path, env=wb.env)
    git(wb.repo, "commit", "-q", "-m", message, env=wb.env)
    return head(wb)


def test_a_complete_run_fast_forwards_the_checked_out_base_and_is_recorded(tmp_path: Path) -> None:
    wb = drained(tmp_path)
    before, branch = head(wb), head(wb, "autopack/r")
    done = wb.cli("land", "r")
    assert done.returncode == 0, done.stderr
    assert "landed run r on main: fast-forwarded" in done.stdout and "2 phase(s): a, b" in done.stdout
    assert head(wb) == branch
    assert (wb.repo / "out" / "b.txt").read_text() == "r b attempt 1\n"  # the user's checkout moved with it
    assert git(wb.repo, "status", "--porcelain", "--untracked-files=no", env=wb.env) == ""
    [(method, base, base_before, landed, partial, remote, pr_url, details)] = landings(wb)
    assert (method, base, base_before, landed, partial, remote, pr_url) == (
        "fast-forward", "main", before, branch, 0, None, None)
    assert json.loads(details) == {"phases": ["a", "b"]}
    again = wb.cli("land", "r")
    assert again.returncode == 0 and again.stdout.startswith("nothing to land: main")
    assert len(landings(wb)) == 1


def test_a_diverged_base_is_refused_naming_its_commits_then_merged(tmp_path: Path) -> None:
    wb = drained(tmp_path)
    moved = commit_on_main(wb, "NOTES.md", "notes\n", "a user's own commit")
    done = wb.cli("land", "r")
    assert (done.returncode, done.stderr.count("\n")) == (1, 1), done.stderr
    assert "cannot fast-forward main to autopack/r: main has 1 commit(s) the run branch does not" in done.stderr
    assert f"{moved[:7]} a user's own commit" in done.stderr and "--merge" in done.stderr
    assert head(wb) == moved and landings(wb) == []

    merged = wb.cli("land", "r", "--merge", "--json")
    assert merged.returncode == 0, merged.stderr
    result = json.loads(merged.stdout)
    assert result["method"] == "merge" and head(wb) == result["landed_commit"]
    parents = git(wb.repo, "rev-list", "--parents", "-n1", "main", env=wb.env).split()[1:]
    assert parents == [moved, head(wb, "autopack/r")]
    assert (wb.repo / "out" / "a.txt").exists() and (wb.repo / "NOTES.md").exists()
    assert [row[0] for row in landings(wb)] == ["merge"]


def test_rebase_re_runs_the_suite_and_lands_only_what_passes(tmp_path: Path) -> None:
    wb = drained(tmp_path)
    check = (wb.repo / "check.py").read_text()
    rule = 'broken = sorted(p.name for p in out.glob("*.bad"))'
    assert rule in check
    # The base moves on with a rule the run's out/a.txt breaks: fine on the base, a regression rebased.
    commit_on_main(wb, "check.py", check.replace(rule, rule + ' + [n for n in texts if n == "a.txt"]'),
                   "forbid a.txt")
    moved = head(wb)
    refused = wb.cli("land", "r", "--rebase")
    assert refused.returncode == 1, refused.stderr
    assert "the run rebased onto main fails the gate" in refused.stderr and "check::sanity" in refused.stderr
    assert head(wb) == moved and landings(wb) == []
    kinds = [kind for (kind,) in rows(wb.db, "SELECT kind FROM test_runs WHERE attempt_id IS NULL ORDER BY id")]
    assert kinds[:2] == ["land_baseline", "land"]
    assert git(wb.repo, "worktree", "list", "--porcelain", env=wb.env).count("worktree ") == 2  # scratch removed

    commit_on_main(wb, "check.py", check, "allow a.txt again")
    base = head(wb)
    done = wb.cli("land", "r", "--rebase")
    assert done.returncode == 0, done.stderr
    assert "rebased and re-tested" in done.stdout
    subjects = git(wb.repo, "log", "--format=%s", f"{base}..main", env=wb.env).splitlines()
    assert subjects == ["autopack: r / b (attempt 1)", "autopack: r / a (attempt 1)"]
    assert git(wb.repo, "merge-base", "--is-ancestor", base, "main", env=wb.env) == ""
    [(method, *_, details)] = landings(wb)
    assert method == "rebase" and json.loads(details)["decision"]["verdict"] == "complete"


def test_a_dirty_checkout_of_the_base_is_never_touched(tmp_path: Path) -> None:
    wb = drained(tmp_path)
    before = head(wb)
    (wb.repo / "check.py").write_text((wb.repo / "check.py").read_text() + "# mine\n")
    done = wb.cli("land", "r")
    assert done.returncode == 1, done.stderr
    assert f"main is checked out in {wb.repo} with uncommitted changes (check.py)" in done.stderr
    assert head(wb) == before and (wb.repo / "check.py").read_text().endswith("# mine\n")
    assert not (wb.repo / "out" / "a.txt").exists() and landings(wb) == []


def test_push_sends_the_run_branch_to_a_remote(tmp_path: Path) -> None:
    wb = drained(tmp_path)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote), env=wb.env)
    git(wb.repo, "remote", "add", "origin", str(remote), env=wb.env)
    unknown = wb.cli("land", "r", "--push", "upstream")
    assert unknown.returncode == 2 and "--push upstream: no such remote" in unknown.stderr
    done = wb.cli("land", "r", "--push", "origin")
    assert done.returncode == 0, done.stderr
    assert git(remote, "rev-parse", "autopack/r", env=wb.env) == head(wb, "autopack/r") == head(wb)
    assert [row[5] for row in landings(wb)] == ["origin"]


def test_pr_opens_a_draft_through_gh_with_a_body_from_the_run(tmp_path: Path) -> None:
    wb = drained(tmp_path)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote), env=wb.env)
    git(wb.repo, "remote", "add", "origin", str(remote), env=wb.env)
    before = head(wb)

    path = wb.env["PATH"]
    wb.env["PATH"] = os.pathsep.join(d for d in path.split(os.pathsep) if not (Path(d) / "gh").exists())
    without = wb.cli("land", "r", "--push", "origin", "--pr")  # no gh on PATH
    assert without.returncode == 0, without.stderr
    assert "gh is not installed" in without.stdout
    command = without.stdout.splitlines()[-1]
    assert command.startswith("gh pr create --base main --head autopack/r --title 'autopack: Write the files of r'")
    body_file = Path(command.split("--body-file ")[1].split()[0])
    assert "| ` a ` | complete | 1 | complete |" in body_file.read_text()

    bin_dir, record = tmp_path / "bin", tmp_path / "gh-args.json"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(STAND_IN_GH.format(python=sys.executable, record=str(record)))
    (bin_dir / "gh").chmod(0o755)
    wb.env["PATH"] = f"{bin_dir}{os.pathsep}{path}"
    done = wb.cli("land", "r", "--push", "origin", "--pr", "--draft")
    assert done.returncode == 0, done.stderr
    assert "pull request opened: https://github.com/o/r/pull/7 (2 phase(s): a, b)" in done.stdout
    args = json.loads(record.read_text())
    assert args[:6] == ["pr", "create", "--base", "main", "--head", "autopack/r"] and args[-1] == "--draft"
    body = Path(args[args.index("--body-file") + 1]).read_text()
    assert "Carried out by autopack, run ` r `" in body and "Cost: $" in body
    assert "- ` no regressions" in body  # each phase's reasons
    assert head(wb) == before  # the pull request is the landing: the local base stays
    assert [(row[0], row[6]) for row in landings(wb)] == [("pull-request", None),
                                                          ("pull-request", "https://github.com/o/r/pull/7")]
    assert wb.cli("land", "r", "--pr").returncode == 2  # no --push: the head would not be on the remote


def test_an_incomplete_run_lands_only_its_leading_complete_phases_with_partial(tmp_path: Path) -> None:
    wb = drained(tmp_path, (PhaseScript("a"), PhaseScript("b", answers=("break",)), PhaseScript("c")))
    assert wb.phase_states("r") == {"a": "complete", "b": "failed", "c": "complete"}
    before = head(wb)
    refused = wb.cli("land", "r")
    assert refused.returncode == 1 and "run r is not complete (b failed); " in refused.stderr
    assert head(wb) == before
    done = wb.cli("land", "r", "--partial")
    assert done.returncode == 0, done.stderr
    first = next(p["commit"] for p in wb.status("r")["phases"] if p["id"] == "a")
    assert head(wb) == first and (wb.repo / "out" / "a.txt").exists() and not (wb.repo / "out" / "c.txt").exists()
    [(method, _, _, landed, partial, *_, details)] = landings(wb)
    assert (landed, partial, json.loads(details)["phases"]) == (first, 1, ["a"])


def test_a_run_that_an_executor_holds_is_busy(tmp_path: Path) -> None:
    from autopack.lock import RunLock

    wb = drained(tmp_path)
    with RunLock(wb.db.parent / "locks", "r"):
        done = wb.cli("land", "r")
    assert done.returncode == 75, done.stderr
    assert subprocess.run(["git", "-C", str(wb.repo), "diff", "--quiet", "main", "autopack/r"]).returncode == 1
