"""`land --rebase`: the run's commits rebased onto the base in a scratch worktree, and the gate's
suite re-run there and judged by the finalizer against the base's baseline before the base moves.

The suite is the run's test command through ``testrun.run_tests`` (as the gate runs it, in the run's
sandbox), recorded
as test runs of kind ``land_baseline`` / ``land`` (and their re-runs); a baseline the cache holds for
the base's tree is used instead of running it again. Every landed phase's deliverables must exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from autopack.confirm import rerun_suspects
from autopack.finalizer import decide, missing_deliverables, new_failures_to_confirm
from autopack.land import LandingRefused, scratch_worktree
from autopack.testcommand import is_pytest
from autopack.testrun import TestReport, run_tests
from autopack.adapters.git.calls import COMMIT_IDENTITY_ENV, git_in


def rebase_and_judge(store: Any, settings: Any, run: Any, base: str, base_head: str, target: str,
                     phases: list[str], say: Callable[[str], None]) -> tuple[str, dict]:
    """The rebased head and the decision that passed it; LandingRefused on a conflict or a failed verdict."""
    from autopack.plan import plan_from_dict
    from autopack.sandbox import sandbox_for
    from autopack.test_logs import files_to_store
    from autopack.toolchains import baseline_key, resolve_test_command

    repo = Path(run.repo_root)
    plan = plan_from_dict(run.plan, Path(run.plan_path), default_max_attempts=settings.max_attempts)
    artifacts = settings.state_dir / "runs" / run.id
    sandbox = sandbox_for(settings, plan.run.sandbox, settings.state_dir)
    worktree, remove = scratch_worktree(repo, target, settings.state_dir)
    try:
        rebased = _rebase(worktree, base, base_head, run.branch)
        root = worktree / run.subdir if run.subdir else worktree
        test = resolve_test_command(root, plan.run.test_command, plan.run.junit_xml)
        timeout = float(plan.run.limits.get("phase_timeout_s") or settings.phase_timeout_s)

        def suite(kind: str, select: tuple[str, ...] = ()) -> TestReport:
            log_path, junit_path = artifacts / "logs" / f"{kind}.log", artifacts / "junit" / f"{kind}.xml"
            report = run_tests(test.command, root, timeout_s=timeout, log_path=log_path,
                               junit_path=junit_path, junit_xml=test.junit_xml,
                               select=select, converter=test.converter, ecosystem=test.ecosystem,
                               output_cap_bytes=settings.max_output_bytes, env_allow=settings.env_allow,
                               sandbox=sandbox)
            tree = git_in(worktree, "rev-parse", "HEAD^{tree}").stdout.strip()
            store.record_test_run(run.id, None, kind, tree, report, log_path, files_to_store(log_path, junit_path))
            git_in(worktree, "reset", "--hard", "--quiet")
            git_in(worktree, "clean", "-fdq")
            return report

        (artifacts / "logs").mkdir(parents=True, exist_ok=True)
        base_tree = git_in(repo, "rev-parse", f"{base_head}^{{tree}}").stdout.strip()
        cached = store.baseline_for(base_tree, baseline_key(test.command))
        if cached is not None:
            baseline = store.test_report(cached)
        else:
            say(f"running the suite on {base} ({base_head[:10]}) for the baseline")
            git_in(worktree, "checkout", "--quiet", "--detach", base_head)
            baseline = suite("land_baseline")
            git_in(worktree, "checkout", "--quiet", "--detach", rebased)
        say(f"running the suite on the rebased run ({rebased[:10]})")
        report = suite("land")
        suspects = [] if report.timed_out else new_failures_to_confirm(baseline, report)
        reruns = rerun_suspects(suspects, lambda kind, select: suite(f"land_{kind}", select),
                                pytest=is_pytest(test.command))
        spec = {p.id: p for p in plan.phases}
        deliverables = [d for phase_id in phases if phase_id in spec for d in spec[phase_id].deliverables]
        changed = git_in(repo, "diff", "--name-only", base_head, rebased).stdout.split()
        decision = decide(baseline, report, rerun=reruns.in_suite, rerun_alone=reruns.alone,
                          files_changed=len(changed), deliverables_missing=missing_deliverables(root, deliverables),
                          allow_noop=True)
    finally:
        remove()
    if decision.verdict != "complete":
        raise LandingRefused(f"the run rebased onto {base} fails the gate ({'; '.join(decision.reasons)}); "
                             f"{base} was left at {base_head[:10]}")
    return rebased, decision.to_dict()


def _rebase(worktree: Path, base: str, base_head: str, branch: str) -> str:
    """Rebase the detached HEAD onto ``base_head``; a conflict aborts and names the commit and files."""
    done = git_in(worktree, "rebase", "--quiet", "--no-autostash", base_head, env=COMMIT_IDENTITY_ENV, check=False)
    if done.status != 0:
        stopped = git_in(worktree, "rev-parse", "--short", "REBASE_HEAD", check=False).stdout.strip()
        files = git_in(worktree, "diff", "--name-only", "--diff-filter=U", check=False).stdout.split()
        git_in(worktree, "rebase", "--abort", check=False)
        raise LandingRefused(f"{branch} does not rebase cleanly onto {base}: commit {stopped or '?'} conflicts "
                             f"in {', '.join(files) or done.error_line}; resolve it on the run branch or land "
                             "with --merge")
    return git_in(worktree, "rev-parse", "HEAD").stdout.strip()
