"""Contract 2: the builder's edits are applied all-or-nothing and never escape the project root."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from autopack import edits
from autopack.edits import TOOL_DEFINITIONS, TOOL_NAMES, EditError, EditOp, apply_edits, parse_tool_uses

SCOPE = ["calc/ops.py", "tests/", "docs/"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repo with a couple of files, a symlinked dir and file pointing outside, and an outside sentinel."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel.txt").write_text("do not touch\n")
    root = tmp_path / "repo"
    (root / "calc").mkdir(parents=True)
    (root / "calc" / "ops.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_ops.py").write_text("from calc.ops import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "tests" / "escape").symlink_to(outside, target_is_directory=True)
    (root / "tests" / "link.py").symlink_to(outside / "sentinel.txt")
    return root


def snapshot(base: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every entry under base (symlinks not followed): kind and content."""
    entries: dict[str, tuple[str, bytes | str]] = {}
    for directory, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = Path(directory) / name
            key = str(path.relative_to(base))
            if path.is_symlink():
                entries[key] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[key] = ("dir", "")
            else:
                entries[key] = (oct(path.stat().st_mode), path.read_bytes())
    return entries


def ops_from(*blocks: dict) -> list[EditOp]:
    return parse_tool_uses(list(blocks))


def write(path: str, content: str = "x = 1\n") -> dict:
    return {"name": "write_file", "input": {"path": path, "content": content}}


def edit(path: str, old: str, new: str) -> dict:
    return {"name": "edit_file", "input": {"path": path, "old": old, "new": new}}


def delete(path: str) -> dict:
    return {"name": "delete_file", "input": {"path": path}}


HOSTILE = {
    "parent escape": ([write("../x")], None, "'..'"),
    "nested parent escape": ([write("a/../../x")], None, "'..'"),
    "absolute path": ([write("/etc/passwd")], None, "absolute"),
    "windows drive": ([write("C:/x")], None, "absolute"),
    "git config": ([write(".git/config")], None, "protected '.git'"),
    "nested git hook": ([write("sub/.git/hooks/pre-commit")], None, "protected '.git'"),
    "git upper case": ([write(".GIT/HEAD")], None, "protected '.GIT'"),
    "git trailing dot": ([write(".git./config")], None, "protected"),
    "autopack state": ([write(".autopack/autopack.db")], None, "protected '.autopack'"),
    "symlink dir escape": ([write("tests/escape/sentinel.txt", "pwned\n")], SCOPE, "symbolic link"),
    "symlink dir new file": ([write("tests/escape/new.py")], SCOPE, "symbolic link"),
    "symlink file": ([write("tests/link.py", "pwned\n")], SCOPE, "symbolic link"),
    "delete through symlink": ([delete("tests/link.py")], SCOPE, "symbolic link"),
    "out of scope": ([write("setup.py")], SCOPE, "outside the phase scope (calc/ops.py, tests/, docs/)"),
    "scope file is not a dir": ([write("calc/ops.py/x")], SCOPE, "outside the phase scope"),
    "scope prefix is not a dir": ([write("tests_evil.py")], SCOPE, "outside the phase scope"),
    "old text 0 matches": ([edit("calc/ops.py", "def sub", "def mul")], SCOPE, "matches 0 times"),
    "old text 2 matches": ([edit("calc/ops.py", "b", "c")], SCOPE, "matches 2 times"),
    "old text empty": ([edit("calc/ops.py", "", "x")], SCOPE, "old text is empty"),
    "nul in path": ([write("calc/ops\x00.py")], None, "NUL"),
    "backslash path": ([write("calc\\ops.py")], None, "backslash"),
    "edit missing file": ([edit("calc/missing.py", "a", "b")], None, "does not exist"),
    "delete missing file": ([delete("calc/missing.py")], None, "does not exist"),
    "empty path": ([write("")], None, "empty"),
    "dot path": ([write(".")], None, "names no file"),
    "trailing slash": ([write("calc/")], None, "file path is required"),
    "directory target": ([write("calc")], None, "is a directory"),
    "parent is a file": ([write("calc/ops.py/inner.py")], None, "parent 'calc/ops.py' is a file"),
    "too large": ([write("calc/big.py", "x" * 2000)], None, "byte limit"),
    "valid then invalid": ([write("calc/new.py"), write("../x")], None, "edit 2 (write_file ../x)"),
    "name too long": ([write("calc/" + "n" * 300 + ".py")], None, "a name in the path is 303 bytes; names may have "
                      "at most 232 bytes here"),
    "directory name too long": ([write("d" * 256 + "/x.py")], None, "a name in the path is 256 bytes; names may "
                                "have at most 255 bytes here"),
    "path too long": ([write("d/" * 3000 + "x.py")], None, "the path is too long: "),
    "lone surrogate": ([write("calc/\ud800.py")], None, "lone surrogate"),
}


@pytest.mark.parametrize("blocks, scope, reason", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_edit_is_rejected_and_nothing_is_written(project: Path, blocks, scope, reason) -> None:
    before = snapshot(project.parent)
    with pytest.raises(EditError) as caught:
        apply_edits(project, ops_from(*blocks), scope, max_file_bytes=1000)
    assert reason in str(caught.value)
    assert snapshot(project.parent) == before


MALFORMED = {
    "unknown tool": ([{"name": "run_shell", "input": {"cmd": "rm -rf /"}}], "edit 2 (run_shell): unknown tool"),
    "non-string content": ([{"name": "write_file", "input": {"path": "a.py", "content": 42}}], "'content' must be a string"),
    "missing field": ([{"name": "edit_file", "input": {"path": "a.py", "old": "x"}}], "missing field 'new'"),
    "extra field": ([{"name": "delete_file", "input": {"path": "a.py", "mode": 511}}], "unexpected field 'mode'"),
    "input not a dict": ([{"name": "write_file", "input": "a.py"}], "input must be an object"),
    "block not a dict": (["write_file"], "expected a tool_use block"),
}


@pytest.mark.parametrize("blocks, reason", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_tool_use_is_rejected(project: Path, blocks, reason) -> None:
    before = snapshot(project.parent)
    with pytest.raises(EditError) as caught:
        apply_edits(project, parse_tool_uses([write("calc/fine.py"), *blocks]), None)
    assert reason in str(caught.value)
    assert snapshot(project.parent) == before


def test_every_problem_is_reported_with_its_index(project: Path) -> None:
    ops = ops_from(write("../x"), write("calc/ok.py"), edit("calc/ops.py", "zzz", "y"), write(".git/HEAD"))
    with pytest.raises(EditError) as caught:
        apply_edits(project, ops, None)
    reasons = caught.value.reasons
    assert len(reasons) == 3
    assert reasons[0].startswith("edit 1 (write_file ../x): ")
    assert reasons[1] == "edit 3 (edit_file calc/ops.py): old text matches 0 times; it must match exactly once"
    assert reasons[2].startswith("edit 4 (write_file .git/HEAD): ")
    assert caught.value.exit_code == 2
    assert not (project / "calc" / "ok.py").exists()


def test_parse_reports_all_bad_blocks_and_accepts_empty() -> None:
    assert parse_tool_uses([]) == []
    with pytest.raises(EditError) as caught:
        parse_tool_uses([write("a.py"), {"name": "nope", "input": {}}, {"name": "write_file", "input": {"path": 3}}])
    assert [reason.split(":")[0] for reason in caught.value.reasons] == ["edit 2 (nope)", "edit 3 (write_file)"]


def test_parse_builds_edit_ops() -> None:
    assert ops_from(write("a.py", "A"), edit("a.py", "A", "B"), delete("b.py")) == [
        EditOp("write_file", "a.py", content="A"),
        EditOp("edit_file", "a.py", old="A", new="B"),
        EditOp("delete_file", "b.py"),
    ]


def test_tool_definitions_match_the_contract() -> None:
    assert tuple(tool["name"] for tool in TOOL_DEFINITIONS) == TOOL_NAMES
    for tool in TOOL_DEFINITIONS:
        schema = tool["input_schema"]
        assert tool["description"]
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) == set(schema["properties"])
    assert "exactly once" in TOOL_DEFINITIONS[1]["description"]


def test_write_new_file_in_new_directory(project: Path) -> None:
    stats = apply_edits(project, ops_from(write("tests/unit/deep/test_new.py", "é\r\nline\n")), SCOPE)
    assert (project / "tests/unit/deep/test_new.py").read_bytes() == "é\r\nline\n".encode()
    assert stats.files_touched == ("tests/unit/deep/test_new.py",)
    assert stats.bytes_written == len("é\r\nline\n".encode())
    assert not [p for p in (project / "tests/unit/deep").iterdir() if p.name.endswith("autopack-tmp")]


def test_edit_delete_and_write_then_edit_in_one_set(project: Path) -> None:
    ops = ops_from(
        edit("calc/ops.py", "return a + b", "return a + b  # sum"),
        write("calc/power.py", "def power(a, b):\n    return 0\n"),
        edit("calc/power.py", "return 0", "return a ** b"),
        delete("tests/test_ops.py"),
        write("./docs//notes.md", "# notes\n"),
    )
    stats = apply_edits(project, ops, ["calc/", "tests/", "docs/"])
    assert (project / "calc/ops.py").read_text() == "def add(a, b):\n    return a + b  # sum\n"
    assert (project / "calc/power.py").read_text() == "def power(a, b):\n    return a ** b\n"
    assert not (project / "tests/test_ops.py").exists()
    assert (project / "docs/notes.md").read_text() == "# notes\n"
    assert stats.to_dict() == {
        "operations_parsed": 5,
        "operations_applied": 5,
        "files_touched": ["calc/ops.py", "calc/power.py", "docs/notes.md", "tests/test_ops.py"],
        "bytes_written": len("def add(a, b):\n    return a + b  # sum\n")
        + len("def power(a, b):\n    return a ** b\n")
        + len("# notes\n"),
    }


def test_delete_then_write_recreates_and_unchanged_write_is_not_touched(project: Path) -> None:
    original = (project / "calc/ops.py").read_text()
    ops = ops_from(delete("tests/test_ops.py"), write("tests/test_ops.py", "new\n"), write("calc/ops.py", original))
    stats = apply_edits(project, ops, SCOPE)
    assert (project / "tests/test_ops.py").read_text() == "new\n"
    assert stats.files_touched == ("tests/test_ops.py",)
    assert stats.operations_applied == 3


def test_edit_after_delete_in_same_set_is_rejected(project: Path) -> None:
    with pytest.raises(EditError, match="edit 2 .*does not exist"):
        apply_edits(project, ops_from(delete("calc/ops.py"), edit("calc/ops.py", "add", "plus")), None)
    assert (project / "calc/ops.py").exists()


def test_deleted_file_can_become_a_directory(project: Path) -> None:
    apply_edits(project, ops_from(delete("calc/ops.py"), write("calc/ops.py/__init__.py", "")), None)
    assert (project / "calc/ops.py/__init__.py").is_file()


def test_write_then_nested_write_is_rejected(project: Path) -> None:
    with pytest.raises(EditError, match="parent 'calc/x' is a file"):
        apply_edits(project, ops_from(write("calc/x"), write("calc/x/y.py")), None)
    with pytest.raises(EditError, match="is a directory"):
        apply_edits(project, ops_from(write("calc/d/y.py"), write("calc/d")), None)


def test_executable_bit_is_preserved(project: Path) -> None:
    script = project / "tests" / "run.sh"
    script.write_text("#!/bin/sh\necho old\n")
    script.chmod(0o755)
    apply_edits(project, ops_from(edit("tests/run.sh", "old", "new")), SCOPE)
    assert script.read_text() == "#!/bin/sh\necho new\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755


def test_edit_of_non_utf8_file_is_rejected(project: Path) -> None:
    (project / "calc" / "blob.bin").write_bytes(b"\xff\xfe")
    with pytest.raises(EditError, match="not UTF-8"):
        apply_edits(project, ops_from(edit("calc/blob.bin", "a", "b")), None)


def test_failed_write_midway_rolls_back(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(project.parent)
    real_replace = os.replace
    calls = []

    def failing_replace(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(edits.os, "replace", failing_replace)
    ops = ops_from(
        edit("calc/ops.py", "a + b", "b + a"),
        write("tests/new/test_b.py", "b\n"),
        delete("tests/test_ops.py"),
    )
    with pytest.raises(EditError) as caught:
        apply_edits(project, ops, SCOPE)
    assert "No space left on device" in str(caught.value)
    assert "were undone" in str(caught.value)
    assert snapshot(project.parent) == before


def test_unrestricted_scope_still_stays_in_root(project: Path) -> None:
    stats = apply_edits(project, ops_from(write("setup.py", "")), None)
    assert stats.files_touched == ("setup.py",)
    with pytest.raises(EditError, match="outside the phase scope \\(empty\\)"):
        apply_edits(project, ops_from(write("setup.py", "x")), [])
