"""The doctor: a capped failure digest in, a short diagnosis out; advisory, so it never raises."""

from __future__ import annotations

import json

from autopack.llm.cassette import Cassette
from autopack.llm.client import make_client_factory
from autopack.llm.doctor import DIGEST_MAX_CHARS, Doctor, cap_digest
from autopack.llm.ledger import LedgerTransport

HAIKU = "claude-haiku-5-5"
ADVICE = "Diagnosis: tests/test_power.py imports calc.power, which does not exist.\nApproach: add power to calc/ops.py."


def reply(text: str = ADVICE) -> dict:
    return {"id": "msg_doc", "type": "message", "role": "assistant", "model": HAIKU,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 700, "output_tokens": 60}}


def cassette_of(tmp_path, *lines: tuple[str, int, int, dict]) -> Cassette:
    """(role, attempt, status, body) lines for phase add-power."""
    path = tmp_path / "cassette.jsonl"
    path.write_text("".join(json.dumps({"role": role, "phase": "add-power", "attempt": attempt, "response": {
        "status": status, "headers": {"retry-after-ms": "1"}, "body": body}}) + "\n"
        for role, attempt, status, body in lines))
    return Cassette.load(path)


def diagnose(doctor: Doctor, digest: str = "Failure kind: collection_error\nModuleNotFoundError: calc.power",
             attempt: int = 1):
    return doctor.diagnose(phase_id="add-power", attempt=attempt, phase_goal="Add power(a, b)", digest=digest)


class CapturingFactory:
    def __init__(self, body: dict):
        self.body = body
        self.sent: list[dict] = []

    def __call__(self, role, phase, attempt):
        import anthropic
        import httpx2

        def handle(request):
            self.sent.append(json.loads(request.content))
            return httpx2.Response(200, json=self.body)

        return anthropic.Anthropic(api_key="t", max_retries=0, http_client=httpx2.Client(
            transport=LedgerTransport(httpx2.MockTransport(handle))))


def test_the_doctor_answers_from_its_cassette_line(tmp_path):
    cassette = cassette_of(tmp_path, ("builder", 1, 200, reply("not for the doctor")), ("doctor", 1, 200, reply()))
    doctor = Doctor(make_client_factory(cassette=cassette, api_key=None), model=HAIKU, cassette=cassette)
    diagnosis = diagnose(doctor)
    assert (diagnosis.text, diagnosis.skipped) == (ADVICE, None)
    (call,) = diagnosis.calls
    assert (call.role, call.model, call.status, call.usage.output_tokens) == ("doctor", HAIKU, "ok", 60)
    assert cassette.remaining("builder", "add-power", 1) == 1


def test_the_request_asks_for_a_short_plain_answer_about_this_phase():
    factory = CapturingFactory(reply())
    diagnose(Doctor(factory, model=HAIKU, max_tokens=512), attempt=2)
    (sent,) = factory.sent
    assert (sent["model"], sent["max_tokens"]) == (HAIKU, 512)
    assert "150 words" in sent["system"] and "Diagnosis:" in sent["system"] and "Approach:" in sent["system"]
    user = sent["messages"][0]["content"]
    assert "Phase 'add-power', attempt 2 failed." in user and "Add power(a, b)" in user
    assert "ModuleNotFoundError: calc.power" in user
    assert "tools" not in sent


def test_a_long_digest_is_capped_keeping_its_head_and_tail():
    digest = "HEAD first line\n" + "x" * 20_000 + "\nTAIL: AssertionError at the end"
    factory = CapturingFactory(reply())
    diagnose(Doctor(factory, model=HAIKU), digest=digest)
    user = factory.sent[0]["messages"][0]["content"]
    assert "HEAD first line" in user and "TAIL: AssertionError at the end" in user
    assert "characters omitted" in user
    assert len(user) < DIGEST_MAX_CHARS + 300
    assert len(cap_digest(digest)) == DIGEST_MAX_CHARS
    assert cap_digest("short") == "short"


def test_no_doctor_line_in_the_cassette_skips_without_a_request(tmp_path):
    cassette = cassette_of(tmp_path, ("doctor", 1, 200, reply()))
    factory = CapturingFactory(reply())
    diagnosis = diagnose(Doctor(factory, model=HAIKU, cassette=cassette), attempt=2)
    assert (diagnosis.text, diagnosis.skipped, diagnosis.calls) == (None, "cassette", ())
    assert factory.sent == []


def test_an_api_failure_is_skipped_as_error_and_keeps_every_row(tmp_path):
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    cassette = cassette_of(tmp_path, ("doctor", 1, 529, overloaded), ("doctor", 1, 529, overloaded))
    doctor = Doctor(make_client_factory(cassette=cassette, api_key=None, max_retries=1), model=HAIKU,
                    cassette=cassette)
    diagnosis = diagnose(doctor)
    assert (diagnosis.text, diagnosis.skipped) == (None, "error")
    assert [(c.role, c.http_status, c.error) for c in diagnosis.calls] == [
        ("doctor", 529, "HTTP 529: Overloaded"), ("doctor", 529, "HTTP 529: Overloaded")]


def test_a_connection_failure_or_an_empty_answer_never_raises():
    import httpx2

    def refuse(request):
        raise httpx2.ConnectError("network down", request=request)

    offline = make_client_factory(cassette=None, api_key="sk-test", max_retries=0,
                                  live_transport=httpx2.MockTransport(refuse))
    diagnosis = diagnose(Doctor(offline, model=HAIKU))
    assert diagnosis.skipped == "error" and "network down" in diagnosis.calls[0].error
    empty = diagnose(Doctor(CapturingFactory(reply("   ")), model=HAIKU))
    assert (empty.text, empty.skipped, len(empty.calls)) == (None, "error", 1)
