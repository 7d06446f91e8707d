"""Every program the runner, the guest and the fixtures execute is on the host-tools list.

A fresh machine runs only what scripts/setup installs, and scripts/setup
installs the packages of mfinject/hosttools.py. This reads the code's own
command lists (every subprocess call, and what virtme-ng looks for) and fails
when one of them names a program the list does not have: the next missing
install step is caught here, not on a user's fresh machine.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mfinject import fs, hosttools
from mfinject.vm import runner

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "mfinject").rglob("*.py")), *sorted((ROOT / "fixtures").glob("*.py")),
           *sorted((ROOT / "tests" / "kernel").glob("*.py"))]
SUBPROCESS = {"run", "Popen", "check_output", "check_call", "call"}
LOOKUPS = {"which", "require_tool", "find_binary", "find_binary_or_raise"}
# Calls whose command is a variable, and where its program is checked instead.
COVERED = {
    ("fs.py", "mkfs"): "an FsKind's mkfs command (checked below)",
    ("fs.py", "_run"): "callers pass literal lists (scanned) or an FsKind's mkfs (checked below)",
    ("pin.py", "_run"): "callers pass literal lists (scanned)",
    ("shares.py", "_run"): "callers pass literal lists (scanned)",
    ("shares.py", "rust_virtiofsd"): "asks an optional virtiofsd for --help (9p without one)",
    ("pmem.py", "ndctl"): "cmd starts with require_tool('ndctl', ...) (scanned)",
    ("kernels.py", "_apt"): "cmd starts with 'apt-get' or 'apt-cache' (scanned)",
    ("debugkernel.py", "_run"): "callers pass literal lists (scanned)",
    ("debugkernel.py", "_configure"): "cmd starts with configkernel(): virtme-configkernel, "
                                      "the vm extra's",
    ("guest.py", "main"): "cmd is _command(): bash -c, a pmem owner's command line",
    ("shares.py", "precompile_rewritten"): "cmd is sys.executable -m pytest, on the host",
    ("runner.py", "_probe_kvm"): "cmd starts with vng_path(): the vm extra (VM_MODULES)",
    ("runner.py", "_boot"): "cmd is vng_command(): vng, then QEMU (on the list)",
    ("benchmark.py", "_timed"): "argv is sys.executable -m mfinject.cli vm, or the runner's "
                                "vng command (vng-command.txt) with --exec true",
    ("participant.py", "op_run"): "argv comes from a scenario step: no scenario uses it yet",
}
# the guest's shell scripts (run with bash) and the programs they run
SHELL_SCRIPTS = {"cache-imports.sh": ("busybox", "mount", "umount", "timeout")}
# Python itself (sys.executable), and vng: the vm extra's entry point in the
# venv, checked as hosttools.VM_MODULES (virtme-configkernel is its too)
PYTHON = {"python3", sys.executable, "vng", "virtme-configkernel"}


def _heads(node: ast.expr) -> list[str]:
    """The program names a command expression can start with (literals only)."""
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        return _heads(node.elts[0])
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Attribute) and node.attr == "executable":
        return [sys.executable]  # sys.executable: Python itself
    if isinstance(node, ast.IfExp):
        return _heads(node.body) + _heads(node.orelse)
    if isinstance(node, ast.Call) and _name(node.func) in LOOKUPS and node.args:
        return _heads(node.args[0])
    return []


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _runs_a_program(call: ast.Call) -> bool:
    """subprocess.run(...) and friends, or one of the modules' _run() wrappers."""
    f = call.func
    if isinstance(f, ast.Attribute) and getattr(f.value, "id", "") == "subprocess":
        return f.attr in SUBPROCESS
    return isinstance(f, ast.Name) and f.id == "_run"


def _functions(tree: ast.AST) -> dict[ast.AST, str]:
    owner: dict[ast.AST, str] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                owner.setdefault(node, fn.name)
    return owner


def scan(path: Path) -> tuple[set[str], list[str]]:
    """(programs named in ``path``, call sites whose program is not accounted for)."""
    tree = ast.parse(path.read_text(), str(path))
    owner = _functions(tree)
    found: set[str] = set()
    unaccounted: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") in ("cmd", "argv")
                                                for t in node.targets):
            found.update(_heads(node.value))
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name, first = _name(node.func), node.args[0]
        if name in LOOKUPS:
            found.update(_heads(first))
        elif _runs_a_program(node):
            heads = _heads(first)
            found.update(heads)
            where = (path.name, owner.get(node, "<module>"))
            if not heads and where not in COVERED:
                unaccounted.append(f"{path.relative_to(ROOT)}:{node.lineno} in {where[1]}()")
    return found, unaccounted


def programs() -> tuple[set[str], list[str]]:
    found: set[str] = set()
    unaccounted: list[str] = []
    for path in SOURCES:
        f, u = scan(path)
        found |= f
        unaccounted += u
    found |= {kind.mkfs[0] for kind in fs.FS_KINDS.values()}
    found |= {argv[0] for argv in fs.MKFS.values()}  # a custom kind's mkfs
    found |= set(runner.VNG_NEEDS)
    for script, runs in SHELL_SCRIPTS.items():
        text = (ROOT / "mfinject" / "vm" / script).read_text()
        assert all(re.search(rf"\b{p}\b", text) for p in runs), f"{script} runs other programs now"
        found |= {"bash", *runs}
    return found - PYTHON, unaccounted


def not_listed(found: set[str], tools: tuple[hosttools.HostTool, ...]) -> set[str]:
    names = {n for t in tools for n in t.names()} | {Path(t.program).name for t in tools}
    return {p for p in found if p not in names and Path(p).name not in names}


def test_every_program_the_code_runs_is_on_the_host_tools_list():
    found, unaccounted = programs()
    assert {"ndctl", "mkfs.xfs", "mount", "dmsetup", "busybox",
            "qemu-system-x86_64"} <= found, \
        "the scan no longer sees the code's commands"
    assert not unaccounted, ("subprocess calls whose program the scan cannot see: give them a "
                             f"literal command or add them to COVERED: {unaccounted}")
    unlisted = sorted(not_listed(found, hosttools.TOOLS))
    assert not unlisted, f"add {unlisted} to mfinject/hosttools.py TOOLS with their Debian package"


def test_a_tool_taken_off_the_list_is_caught():
    found, _ = programs()
    without = tuple(t for t in hosttools.TOOLS if t.program != "busybox")
    assert not_listed(found, without) == {"busybox"}


def test_virtme_ng_looks_for_busybox_under_a_name_on_the_list():
    """virtme/mkinitramfs.py find_busybox(): the names it tries, read from its source."""
    spec = importlib.util.find_spec("virtme.mkinitramfs")
    if spec is None or spec.origin is None:
        pytest.fail("virtme-ng is not installed: scripts/setup installs the vm extra")
    tree = ast.parse(Path(spec.origin).read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
              and n.name == "find_busybox")
    tried = {c.value for c in ast.walk(fn) if isinstance(c, ast.Constant)
             and isinstance(c.value, str)}
    busybox = hosttools.by_program("busybox")
    assert busybox is not None and busybox.package == "busybox-static"
    assert tried & set(busybox.names()), f"virtme-ng now looks for {tried}"


def test_setup_installs_the_package_of_every_required_tool():
    out = subprocess.run([sys.executable, str(ROOT / "mfinject" / "hosttools.py"), "packages"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert "busybox-static" in out and "qemu-system-x86" in out
    assert {t.package for t in hosttools.TOOLS if t.required} <= set(out)
    assert "virtiofsd" not in out  # optional: 9p is the fallback
    assert "hosttools.py packages" in (ROOT / "scripts" / "setup").read_text()


def test_preflight_names_the_package_and_the_fix(monkeypatch):
    monkeypatch.setattr(hosttools, "_search_path", lambda: "/nonexistent")
    monkeypatch.setenv("PATH", "/nonexistent")
    errors, notes = hosttools.preflight((hosttools.VM,))
    assert "missing busybox (Debian package busybox-static): run scripts/setup" in errors
    assert "missing qemu-system-x86_64 (Debian package qemu-system-x86): run scripts/setup" \
        in errors
    assert not any("virtiofsd" in e for e in errors)  # optional: at most a note
    assert all(n.startswith("optional ") for n in notes)
