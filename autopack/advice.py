"""What the next attempt is told: the failure digest, plus a hardening hint or the doctor's diagnosis.

Deterministic failure patterns run first over the real evidence; when one matches, the
doctor call is skipped and the tokens it would have cost are recorded. Otherwise the
doctor model diagnoses the digest, within per-phase and per-run caps.
"""

from __future__ import annotations

from typing import Any, Sequence

from autopack.caps import check_caps
from autopack.events import Advised, LlmCalls
from autopack.failures import Failure
from autopack.hardening import Evidence, diagnose
from autopack.llm.doctor import SYSTEM_PROMPT as DOCTOR_PROMPT
from autopack.llm.doctor import render_report
from autopack.redact import Redactor


def advise(ctx: Any, phase: Any, spec: Any, attempt: Any, failure: Failure, digest: str,
           output_tail: str = "", failing: Sequence[Any] = ()) -> str:
    """The digest for the next attempt, with a hint or diagnosis appended when there is one."""
    from autopack.store.budgets import doctor_counts, doctor_tokens_median

    store, run_id = ctx.store, ctx.run.id
    evidence = Evidence(kind=failure.kind, message=failure.message, output_tail=output_tail,
                        failures=tuple((o.test_id, o.message) for o in failing),
                        apply_errors=tuple(failure.evidence.splitlines()) if failure.kind == "apply_error" else ())
    hint = diagnose(evidence)
    if hint is not None:
        avoided, samples = doctor_tokens_median(store)
        store.add_event(run_id, "doctor_skipped", {
            "reason": f"hardening:{hint.pattern}", "tokens_avoided": avoided, "sample_size": samples,
            "source": "median of this database's doctor calls" if samples else "no doctor calls recorded yet"},
            phase.phase_id, attempt.id)
        store.add_event(run_id, "advice", {"source": f"pattern:{hint.pattern}",
                                           "text": Redactor.from_environ()(hint.hint)}, phase.phase_id, attempt.id)
        ctx.observer.notify(Advised(run_id=run_id, phase_id=phase.phase_id, attempt=attempt.number,
                                    source=f"pattern {hint.pattern}"))
        return f"{digest}\n\nDiagnosis (known failure pattern '{hint.pattern}'): {hint.hint}"
    if ctx.doctor is None:
        return digest
    per_phase, per_run = doctor_counts(store, run_id, phase.phase_id)
    settings = ctx.settings
    if per_phase >= settings.doctor_max_per_phase or per_run >= settings.doctor_max_per_run:
        store.add_event(run_id, "doctor_skipped", {"reason": "cap", "per_phase": per_phase, "per_run": per_run},
                        phase.phase_id, attempt.id)
        return digest
    prompt_chars = len(DOCTOR_PROMPT) + len(render_report(phase.phase_id, attempt.number, spec.goal, digest))
    check_caps(ctx.cost_caps, ctx.doctor.model, prompt_chars, ctx.doctor.max_tokens, ctx.settings.prices or None)
    diagnosis = ctx.doctor.diagnose(phase_id=phase.phase_id, attempt=attempt.number, phase_goal=spec.goal,
                                    digest=digest)
    store.record_calls(run_id, phase.phase_id, attempt.id, "doctor", diagnosis.calls)
    if diagnosis.calls:
        ctx.observer.notify(LlmCalls.of(diagnosis.calls, run_id=run_id, phase_id=phase.phase_id,
                                        attempt=attempt.number))
    if diagnosis.skipped:
        store.add_event(run_id, "doctor_skipped", {"reason": diagnosis.skipped}, phase.phase_id, attempt.id)
    if not diagnosis.text:
        return digest
    store.add_event(run_id, "advice", {"source": "doctor", "model": ctx.doctor.model,
                                       "text": Redactor.from_environ()(diagnosis.text)}, phase.phase_id, attempt.id)
    ctx.observer.notify(Advised(run_id=run_id, phase_id=phase.phase_id, attempt=attempt.number, source="doctor"))
    return f"{digest}\n\nDiagnosis from a reviewer of the failed attempt:\n{diagnosis.text}"
