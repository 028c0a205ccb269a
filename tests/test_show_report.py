"""`autopack show` on the calc example and `autopack report` on a run with hostile test names and model text.

The calc run is carried out once with the real CLI (module fixture); the hostile run is a real
project whose suite writes JUnit test names such as ``<script>`` and ``</td>`` and whose
cassette's model text holds markup and terminal escapes, driven through `run` and `drain`
so that it ends with a complete, a failed and a parked phase. The HTML is checked with
html.parser everywhere and, where Chromium is installed, rendered by it headless.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conftest import cli_env, git, rows
from drainkit import builder_line

RUN = "calc-demo"
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@pytest.fixture(scope="module")
def calc(tmp_path_factory, ran_calc_example) -> Path:
    return ran_calc_example(tmp_path_factory.mktemp("show"))


def show_json(autopack, project: Path, *args: str) -> dict[str, Any]:
    done = autopack("show", *args, "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- show on the calc example --------------------------------------------------------------


def test_show_tells_why_attempt_1_failed_with_its_diff_and_the_digest_attempt_2_got(calc, autopack):
    done = autopack("show", RUN, "add-modulo", cwd=calc)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "\x1b[" not in text  # a pipe gets plain text
    first, second = text.split("\n  attempt 2: ")
    assert "attempt 1: failed: regression" in first
    assert "newly failing tests (failed again on re-run): tests.test_ops::test_divide" in first
    assert "new failures: tests.test_ops::test_divide" in first
    # the saved patch of the failed attempt: the regression itself
    assert "diff (saved patch " in first and "add-modulo-attempt-1.patch" in first
    assert "\n-    return a / b\n+    return a // b\n" in first
    # the digest the next attempt was given, with the failing assertion
    assert "digest given to attempt 2:" in first
    assert "| E       assert 3 == 3.5" in first
    assert second.startswith("complete")
    commit = git(calc, "rev-parse", "autopack/calc-demo~1")
    assert f"diff (commit {commit}):" in second
    assert "+def modulo(a, b):" in second and "-    return a / b" not in second


def test_show_json_attempts_match_the_store_and_the_transcripts(calc, autopack):
    story = show_json(autopack, calc, RUN, "add-modulo", "--transcript")
    [phase] = story["phases"]
    first, second = phase["attempt_list"]
    assert (first["number"], first["state"], first["failure"]["kind"]) == (1, "failed", "regression")
    assert (second["number"], second["state"], second["failure"]) == (2, "complete", None)
    assert first["diff"]["source"] == "patch" and "-    return a / b" in first["diff"]["text"]
    assert second["diff"] == {**second["diff"], "source": "commit", "commit": phase["commit"]}
    assert first["decision"]["delta"]["new_failures"] == ["tests.test_ops::test_divide"]
    # the digest recorded for attempt 2 is what its prompt really said
    assert first["next_digest"] == second["given_digest"] and "assert 3 == 3.5" in second["given_digest"]
    [exchange] = second["transcript"]
    task = exchange["request"]["messages"][0]["content"]
    task = task if isinstance(task, str) else "".join(b.get("text", "") for b in task)
    assert second["given_digest"] in task
    assert [a["advice"] for a in (first, second)] == [[{"kind": "doctor_skipped", "reason": "cassette"}], []]
    # per-attempt usage adds up to the ledger's rows for the phase
    db = calc / ".autopack" / "autopack.db"
    [(inp, out, cost)] = rows(db, "SELECT sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM llm_calls "
                                  "WHERE run_id = ? AND phase_id = 'add-modulo'", RUN)
    assert sum(a["tokens"]["input"] for a in (first, second)) == inp
    assert sum(a["tokens"]["output"] for a in (first, second)) == out
    assert sum(a["cost_usd"] for a in (first, second)) == pytest.approx(cost)
    assert (first["model"], first["builder"], first["turns"]) == ("claude-sonnet-5-5", "single", 1)
    assert first["budget"] > 0 and first["budget_source"]


def test_show_on_another_machine_reads_the_diffs_from_the_store(calc, autopack, tmp_path):
    # another machine: the same store, but neither the run's repository nor its saved patches exist there
    db = tmp_path / "copied.db"
    shutil.copy(calc / ".autopack" / "autopack.db", db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET repo_root = '/nonexistent/checkout'")
        conn.execute("UPDATE attempts SET patch_path = '/nonexistent/saved.patch' WHERE patch_path IS NOT NULL")
    here = show_json(autopack, calc, RUN, "add-modulo")
    there = show_json(autopack, tmp_path, "--db", str(db), RUN, "add-modulo")
    [(local_first, local_second)] = [p["attempt_list"] for p in here["phases"]]
    [(first, second)] = [p["attempt_list"] for p in there["phases"]]
    assert first["diff"]["source"] == second["diff"]["source"] == "store"
    assert first["diff"]["text"] == local_first["diff"]["text"]  # the whole patch: nothing was cut
    assert "saved.patch" in first["diff"]["local"] and first["diff"]["truncated"] is False
    # the completed attempt's change as git shows it, without the commit header
    assert second["diff"]["commit"] == local_second["diff"]["commit"]
    assert second["diff"]["text"] in local_second["diff"]["text"] and "+def modulo(a, b):" in second["diff"]["text"]
    done = autopack("show", "--db", str(db), RUN, "add-modulo", cwd=tmp_path)
    assert f"diff (commit {second['diff']['commit']}, as the store keeps it):" in done.stdout


def test_show_adds_transcripts_and_test_output_only_when_asked(calc, autopack):
    plain = show_json(autopack, calc, RUN)
    attempts = [a for p in plain["phases"] for a in p["attempt_list"]]
    assert [p["id"] for p in plain["phases"]] == ["add-power", "add-modulo", "document-operations"]
    assert len(attempts) == 4 and all("transcript" not in a for a in attempts)
    assert all("output_tail" not in r for a in attempts for r in a["test_runs"])
    logged = show_json(autopack, calc, RUN, "add-modulo", "--attempt", "1", "--log")
    [attempt] = logged["phases"][0]["attempt_list"]
    assert attempt["number"] == 1
    [tests] = [r for r in attempt["test_runs"] if r["kind"] == "attempt"]
    assert "assert 3 == 3.5" in tests["output_tail"] and Path(tests["log_path"]).is_file()
    text = autopack("show", RUN, "add-modulo", "--attempt", "1", "--log", "--transcript", cwd=calc).stdout
    assert "test output, attempt" in text and "transcript (1 exchange):" in text and ">> edit_file" in text


@pytest.mark.parametrize("args, message", [
    (("nope",), "no run 'nope'"),
    ((RUN, "nope"), "run 'calc-demo' has no phase 'nope'"),
    ((RUN, "add-modulo", "--attempt", "7"), "phase 'add-modulo' of run 'calc-demo' has no attempt 7"),
    ((RUN, "--attempt", "1"), "--attempt 1 needs a PHASE"),
    ((RUN, "add-modulo", "--attempt", "0"), "--attempt"),
])
def test_show_refuses_what_the_run_does_not_have_in_one_line(calc, autopack, args, message):
    db = calc / ".autopack" / "autopack.db"
    before = db.read_bytes()
    done = autopack("show", *args, cwd=calc)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr and db.read_bytes() == before


def _on_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run the CLI with its stdout on a pseudo-terminal; what it wrote there."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "autopack", *args], cwd=cwd, env=env, stdout=follower,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0, process.stderr.read()
    return b"".join(chunks).decode("utf-8", "replace")


def test_show_pages_through_pager_on_a_terminal_only(calc, autopack, base_env, tmp_path):
    paged = tmp_path / "paged.txt"
    env = {**base_env, "PAGER": f"cat > {paged}"}
    assert autopack("show", RUN, "add-modulo", cwd=calc, env=env).returncode == 0
    assert not paged.exists()  # a pipe: no pager
    on_terminal = _on_a_terminal(["show", RUN, "add-modulo"], calc, env)
    assert on_terminal == ""  # everything went to the pager
    text = paged.read_text()
    assert "  \x1b[31mattempt 1: failed: regression\x1b[0m" in text
    assert "\x1b[31m-    return a / b\x1b[0m" in text and "\x1b[32m+    return a // b\x1b[0m" in text
    no_pager = _on_a_terminal(["show", RUN, "add-modulo"], calc, {**base_env, "PAGER": "cat", "NO_COLOR": "1"})
    assert "attempt 1: failed: regression" in no_pager and "\x1b[" not in no_pager


# -- report: a run with a complete, a failed and a parked phase, hostile text -----------------

HOSTILE_TEST = "<script>alert(1)</script></td>"
HOSTILE_MESSAGE = "broke </td></tr></table><script>alert(2)</script> done"  # XML holds no control characters
HOSTILE_OUTPUT = "suite says </pre><script>alert(5)</script> \x1b[2J\x07\x00 bye"  # the suite's stdout may
MODEL_TEXT = "I will write it. <script>alert(3)</script></details></td>\x1b]0;owned\x07"

CHECK = r'''
import sys
print(OUTPUT)
from pathlib import Path
from xml.sax.saxutils import quoteattr
broken = sorted(Path("out").glob("*.bad"))
bad = '><failure message=%s>%s</failure></testcase' % (quoteattr(MESSAGE), MESSAGE.replace("<", "&lt;")) if broken else "/"
cases = ['<testcase classname="check" name="sanity"/>', '<testcase classname="hostile" name=%s%s>' % (quoteattr(NAME), bad)]
Path("report.xml").write_text('<testsuite name="check" tests="2" failures="%d">%s</testsuite>' % (bool(broken), "".join(cases)))
sys.exit(1 if broken else 0)
'''


def _line(phase: str, attempt: int, path: str) -> dict:
    line = builder_line(phase, attempt, path, f"{phase} {attempt}\n")
    line["response"]["body"]["content"].insert(0, {"type": "text", "text": MODEL_TEXT})
    return line


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A run whose phases end complete (done), failed (broken) and parked (stuck, three identical failures)."""
    root = tmp_path_factory.mktemp("hostile")
    repo = root / "repo"
    (repo / "out").mkdir(parents=True)
    (repo / "out" / ".keep").write_text("")
    (repo / ".gitignore").write_text("report.xml\n")
    (repo / "check.py").write_text(f"NAME = {HOSTILE_TEST!r}\nMESSAGE = {HOSTILE_MESSAGE!r}\n"
                                   f"OUTPUT = {HOSTILE_OUTPUT!r}\n{CHECK}")
    home = root / "home"
    home.mkdir()
    env = cli_env(home) | {"AUTOPACK_DB": str(root / "state" / "autopack.db"),
                           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    git(repo, "init", "-q", "-b", "main", env=env)
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-q", "-m", "initial", env=env)
    phases = {"done": (["out/done.txt"], 1), "broken": (["out/broken.bad"] * 2, 1), "stuck": (["elsewhere.txt"] * 3, 3)}
    plan = ["[run]", 'id = "hostile"', 'goal = "Write </td><script>alert(4)</script> \\u001b[31m files"',
            'repo = "repo"', 'test_command = "python check.py"', 'junit_xml = "report.xml"',
            'cassette = "cassette.jsonl"', 'builder = "single"']
    cassette = []
    for phase, (paths, attempts) in phases.items():
        plan += ["", "[[phases]]", f'id = "{phase}"', f'goal = "Phase {phase}: </td><b>bold</b>"',
                 f'scope = ["out/{phase}.txt", "out/{phase}.bad"]', 'category = "refactor"', f"max_attempts = {attempts}"]
        cassette += [_line(phase, n, path) for n, path in enumerate(paths, 1)]
    (root / "plan.toml").write_text("\n".join(plan) + "\n")
    (root / "cassette.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cassette))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "autopack", *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)

    assert cli("run", "plan.toml").returncode == 1
    assert cli("drain", "--run-id", "hostile").returncode == 1  # broken: attempt 2; stuck: parked
    return root, env


def _report(root: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "autopack", "report", "hostile", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "rect", "col", "source"}


class Structure(HTMLParser):
    """Tags, attributes and text of a document; fails on any end tag that does not close the open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]} at {self.getpos()}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(html: str) -> Structure:
    parser = Structure()
    parser.feed(html)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    return parser


def test_report_html_escapes_hostile_names_and_model_text(hostile, tmp_path):
    root, env = hostile
    states = {p["id"]: (p["state"], p["parked"]) for p in json.loads(subprocess.run(
        [sys.executable, "-m", "autopack", "status", "hostile", "--json"], cwd=root, env=env, capture_output=True,
        text=True, check=True).stdout)["phases"]}
    assert states["done"] == ("complete", None) and states["broken"] == ("failed", None)
    assert states["stuck"][0] == "failed" and "same way" in states["stuck"][1]

    target = tmp_path / "report.html"
    target.write_text("an older report")
    _report(root, env, "-o", str(target))
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "an older report" not in html
    doc = parsed(html)
    names = {tag for tag, _ in doc.tags}
    assert not names & {"script", "iframe", "object", "embed", "link", "img", "base", "form"}
    for tag, attrs in doc.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        assert not {"src", "href"} & set(attrs), (tag, attrs)  # nothing fetched, nothing linked
    [csp] = [a["content"] for t, a in doc.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert CONTROL.search(html) is None  # escapes and bells are shown as symbols, not sent
    text = "".join(doc.text)
    assert HOSTILE_TEST in text  # as text, where the parser found no tag
    assert "suite says </pre><script>alert(5)</script> ␛[2J␇␀ bye" in text
    assert "I will write it. <script>alert(3)</script></details></td>␛]0;owned␇" in text
    assert "Write </td><script>alert(4)</script> ␛[31m files" in text
    ids = {a.get("id") for _, a in doc.tags}
    assert {"summary", "timeline", "cost", "phase-done", "phase-broken", "phase-stuck"} <= ids
    assert "parked: " in text and "same way" in text
    # the timeline: one box per attempt, coloured by verdict (done 1, broken 2, stuck 3)
    fills = [a["fill"] for t, a in doc.tags if t == "rect" and a.get("rx") == "3"]
    assert fills == ["#2e7d32"] + ["#c62828"] * 5
    # diffs highlighted with inline styles; transcripts collapsed
    assert 'style="color: ' in html and "out/done.txt" in text
    assert html.count("<details><summary>Transcript (1 turn)</summary>") == 6  # one per attempt, closed
    assert "<details open><summary>Transcript" not in html


def test_report_markdown_escapes_hostile_text(hostile):
    root, env = hostile
    markdown = _report(root, env, "--markdown")
    assert CONTROL.search(markdown) is None
    prose = re.sub(r"^(`{3,})[^\n]*\n.*?^\1$", "", markdown, flags=re.M | re.S)  # code blocks show text as is
    assert "<script" not in prose and "</td>" not in prose and "```" not in prose
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;/td&gt;" in markdown
    assert "| stuck | 1 failed: apply\\_error, 2 failed: apply\\_error, 3 failed: apply\\_error | failed (parked) |" in markdown
    assert re.search(r"^```diff\n", markdown, re.M)
    assert markdown.count("<details><summary>Transcript</summary>") == 6


def test_report_refuses_an_unwritable_output_in_one_line(hostile, tmp_path):
    root, env = hostile
    done = subprocess.run([sys.executable, "-m", "autopack", "report", "hostile", "-o", str(tmp_path / "no" / "r.html")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "cannot write the report: No such file or directory" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- report in a real browser ---------------------------------------------------------------


def _chromium() -> str | None:
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found is None and os.environ.get("AUTOPACK_CI") == "1":
        pytest.fail("Chromium is not installed, and AUTOPACK_CI=1 requires the browser test (.ci/run installs it)")
    if found is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the report is not rendered in a browser")
    return found


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered RGB(A) rows of an 8-bit truecolour PNG (stdlib zlib only)."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, *_ = header
    assert depth == 8 and colour in (2, 6)
    bpp = 3 if colour == 2 else 4
    raw, stride, rows_out, previous = zlib.decompress(idat), width * bpp, [], bytes(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows_out.append(bytes(line))
        previous = bytes(line)
    return width, height, [bytes(r) for r in rows_out] if bpp == 3 else [
        bytes(b for i, b in enumerate(r) if i % 4 != 3) for r in rows_out]


def test_report_renders_in_headless_chromium(hostile, tmp_path):
    browser = _chromium()
    root, env = hostile
    page = tmp_path / "report.html"
    _report(root, env, "-o", str(page))
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,1400"]
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180, check=True)
    width, height, lines = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1400)
    pixels = [line[i:i + 3] for line in lines for i in range(0, len(line), 3)]
    non_white = sum(1 for p in pixels if min(p) < 235)
    assert non_white > 0.03 * len(pixels), non_white  # text, tables and charts were drawn
    colours = set(pixels)
    assert bytes.fromhex("2e7d32") in colours and bytes.fromhex("c62828") in colours  # the timeline's boxes
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180,
                         check=True).stdout
    assert "Timeline" in dom and "phase-stuck" in dom and "Transcript (1 turn)" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;/td&gt;" in dom
    assert "<script" not in dom  # no element from hostile text reached the DOM
