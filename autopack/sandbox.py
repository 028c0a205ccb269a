"""Confine the test commands autopack starts with bubblewrap (``sandbox = "bwrap"``, contract 7).

``Sandbox.argv`` is the bwrap command line one test run is prefixed with: the root file system
read-only; a private ``/dev`` and ``/proc``; empty, private tmpfs over ``/tmp``, ``/var/tmp``,
``/run`` and the home directories (where sockets, agents and credentials live), with empty
read-only credential directories (``~/.ssh`` ...) in them; the interpreters and toolchains that
live under those directories bound back read-only, so the suite still finds its Python, Go or
Rust; the user's checkout and its git directory read-only; autopack's state directory (its
database, logs and locks) an empty read-only directory; the worktree, the report directory and
``sandbox_writable`` writable; every namespace unshared (the network too unless
``sandbox_network``), no capabilities, a new session, and the whole sandbox killed with
autopack. ``preflight`` checks once per process that bwrap can build such a sandbox here and
turns its refusal into one line with the cause and the fix.
"""

from __future__ import annotations

import functools
import os
import pwd
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from autopack.errors import EnvironmentProblem

MODES = ("none", "bwrap")  # weakest first: a plan may move a run right, never left
MASKED = (Path("/tmp"), Path("/var/tmp"), Path("/run"))  # and the home directories
CREDENTIAL_DIRS = (".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".config/gcloud", ".config/gh")
# Toolchain homes that may live under a home directory: (environment variable, default under home).
TOOLCHAIN_HOMES = (("VIRTUAL_ENV", None), ("PYENV_ROOT", ".pyenv"), ("GOROOT", None), ("GOPATH", "go"),
                   ("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup"), ("NVM_DIR", ".nvm"))
TOOLCHAIN_SECRETS = ("credentials", "credentials.toml")  # files in a toolchain home hidden behind /dev/null
NAMESPACES = ("--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL")
_OFF = 'or set sandbox = "none" (AUTOPACK_SANDBOX=none) to run the tests unconfined'


class SandboxUnavailable(EnvironmentProblem):
    """``sandbox = "bwrap"`` on a machine where bwrap cannot build the sandbox (exit 4)."""


def effective_mode(setting: str, plan: str | None) -> str:
    """The stricter of the setting and the plan's ``run.sandbox``: a plan tightens, never loosens."""
    return max(setting, plan or "none", key=MODES.index)


@dataclass(frozen=True)
class Sandbox:
    """A bubblewrap profile; ``argv`` adds what one test run needs (its worktree, its report directory)."""

    bwrap: str  # the executable's path
    network: bool = False
    writable: tuple[Path, ...] = ()  # sandbox_writable: bound writable when they exist
    readable: tuple[Path, ...] = ()  # sandbox_readable: bound read-only when they exist
    hidden: tuple[Path, ...] = ()  # autopack's state directories: an empty read-only directory

    def argv(self, cwd: Path, env: Mapping[str, str], writable: Sequence[Path] = ()) -> list[str]:
        """The bwrap prefix for a command run in ``cwd`` with ``env``; ``writable``: its report directories."""
        cwd = Path(cwd).resolve()
        homes = [home for home in _homes(env) if home.is_dir() or _under(home, MASKED)]
        masked = [*MASKED, *homes]
        args = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for root in _outermost(path for path in masked if path.is_dir() or _under(path, MASKED)):
            args += ["--tmpfs", str(root)]
        toolchains = (p for p in _toolchains(env, homes)
                      if _under(p, masked) and not any(root.is_relative_to(p) for root in masked))
        for path in _outermost(toolchains):
            args += ["--ro-bind", str(path), str(path)]
            for name in TOOLCHAIN_SECRETS:  # e.g. cargo's registry token
                if (path / name).is_file():
                    args += ["--ro-bind", "/dev/null", str(path / name)]
        for path in self.readable:
            args += ["--ro-bind-try", str(path), str(path)]
        for home in homes:
            for name in CREDENTIAL_DIRS:
                args += ["--tmpfs", str(home / name), "--remount-ro", str(home / name)]
        top, git_dirs = _checkout(cwd)
        for path in git_dirs:  # the user's checkout, read-only
            if path.name == ".git":
                args += ["--ro-bind", str(path.parent), str(path.parent)]
        hidden = [path for path in self.hidden if path.is_dir()]
        for path in hidden:
            args += ["--tmpfs", str(path)]
        args += ["--bind", str(top), str(top)]
        for path in writable:
            args += ["--bind", str(Path(path).resolve()), str(Path(path).resolve())]
        for path in self.writable:
            args += ["--bind-try", str(path), str(path)]
        for path in hidden:
            args += ["--remount-ro", str(path)]
        if (top / ".git").is_file():  # else the suite could point autopack's own git calls at a config of its own
            git_dirs.append(top / ".git")
        for path in git_dirs:  # last: whatever else is writable, git's own files are not
            args += ["--ro-bind", str(path), str(path)]
        args += list(NAMESPACES)
        if self.network:
            args.append("--share-net")
            resolv = Path("/etc/resolv.conf").resolve()
            if _under(resolv, masked) and resolv.exists():
                args += ["--ro-bind", str(resolv), str(resolv)]
        if env.get("TMPDIR"):
            args += ["--setenv", "TMPDIR", "/tmp"]
        return [*args, "--chdir", str(cwd), "--"]


def sandbox_for(settings: object, plan_mode: str | None, state_dir: Path) -> Sandbox | None:
    """The run's sandbox (None: unconfined): the ``sandbox`` setting, tightened by the plan's
    ``run.sandbox``; checked here (``preflight``), so a machine that cannot build it fails before
    anything is claimed."""
    if effective_mode(settings.sandbox, plan_mode) == "none":
        return None
    bwrap = preflight(settings.sandbox_bwrap)
    return Sandbox(bwrap=bwrap, network=settings.sandbox_network,
                   writable=tuple(Path(p).expanduser().resolve() for p in settings.sandbox_writable),
                   readable=tuple(Path(p).expanduser().resolve() for p in settings.sandbox_readable),
                   hidden=(Path(state_dir).resolve(),))


def preflight(bwrap: str = "bwrap") -> str:
    """The bwrap executable's path, once it has built a sandbox with the profile's namespaces here;
    SandboxUnavailable naming the cause and the fix otherwise."""
    import shutil

    found = shutil.which(bwrap)
    if found is None:
        raise SandboxUnavailable(f"sandbox = \"bwrap\": no bubblewrap executable {bwrap!r} "
                                 f"{'' if os.sep in bwrap else 'on PATH '}(sandbox_bwrap); install it "
                                 f"(Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap) {_OFF}")
    problem = _try(found)
    if problem:
        raise SandboxUnavailable(f"sandbox = \"bwrap\": {problem} {_OFF}")
    return found


@functools.cache
def _try(bwrap: str) -> str | None:
    """Why ``bwrap`` cannot build the sandbox here (with the fix), or None when it can."""
    import subprocess

    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *NAMESPACES, "true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except OSError as error:
        return f"cannot start {bwrap}: {error.strerror or error}; reinstall bubblewrap"
    except subprocess.TimeoutExpired:
        return f"{bwrap} did not start a sandbox within 30 s; check the machine's load"
    if done.returncode == 0:
        return None
    return explain(done.stderr)


def explain(stderr: str) -> str:
    """bwrap's refusal as the cause and its fix."""
    said = next((line.strip() for line in stderr.splitlines() if line.strip()), "no message")
    lowered = said.lower()
    if "namespace" in lowered or "uid map" in lowered or "enospc" in lowered or "no space left" in lowered:
        cause = "user namespaces are unavailable on this machine"
        fix = ("enable them (sysctl user.max_user_namespaces=15000, kernel.unprivileged_userns_clone=1; "
               "Ubuntu 24.04: kernel.apparmor_restrict_unprivileged_userns=0), or in a container allow them "
               "(a seccomp profile that permits clone/unshare, or --privileged)")
    elif "proc" in lowered:
        cause = "this container forbids mounting /proc in a sandbox"
        fix = "run the container with --security-opt systempaths=unconfined (or --privileged)"
    elif "operation not permitted" in lowered or "permission denied" in lowered:
        cause = "the kernel refused (seccomp, AppArmor or SELinux)"
        fix = "allow bwrap to create namespaces (an AppArmor profile for bwrap, or a seccomp profile permitting unshare)"
    else:
        cause, fix = "bwrap cannot build the sandbox", "check that the bubblewrap installation works"
    return f"{cause} (bwrap said: {said}); {fix},"


def _homes(env: Mapping[str, str]) -> list[Path]:
    """The suite's $HOME, autopack's and the user's own (where their secrets are)."""
    candidates = [env.get("HOME"), os.environ.get("HOME")]
    try:
        candidates.append(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        pass
    homes: list[Path] = []
    for text in candidates:
        if text and Path(text).is_absolute() and Path(text).resolve() != Path("/"):
            home = Path(text).resolve()
            if home not in homes:
                homes.append(home)
    return homes


def _toolchains(env: Mapping[str, str], homes: Sequence[Path]) -> list[Path]:
    """The running Python's prefixes, the toolchain homes and every PATH directory (resolved)."""
    found = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.base_exec_prefix)]
    for environ in (env, os.environ):
        for name, default in TOOLCHAIN_HOMES:
            if environ.get(name):
                found.append(Path(environ[name]))
            elif default:
                found += [home / default for home in homes]
        found += [Path(entry) for entry in environ.get("PATH", "").split(os.pathsep) if entry]
    paths = []
    for path in found:
        for each in (path, path.resolve()):
            if each.is_absolute() and each.is_dir() and each not in paths:
                paths.append(each)
    return paths


def _checkout(cwd: Path) -> tuple[Path, list[Path]]:
    """The worktree containing ``cwd`` (else ``cwd``), and its git directories: its own and the common one."""
    for top in (cwd, *cwd.parents):
        dot_git = top / ".git"
        if dot_git.is_dir():
            return top, [dot_git.resolve()]
        if dot_git.is_file():
            text = dot_git.read_text(errors="replace").strip()
            if not text.startswith("gitdir:"):
                return top, []
            git_dir = (top / text.removeprefix("gitdir:").strip()).resolve()
            dirs = [git_dir]
            common = git_dir / "commondir"
            if common.is_file():
                dirs.insert(0, (git_dir / common.read_text().strip()).resolve())
            return top, [path for path in dirs if path.is_dir()]
    return cwd, []


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths without those inside another (a bind or tmpfs over the outer one covers them)."""
    unique = sorted(set(paths), key=lambda path: len(path.parts))
    kept: list[Path] = []
    for path in unique:
        if not _under(path, kept):
            kept.append(path)
    return kept
