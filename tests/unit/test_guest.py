"""The guest's entry point: which namespaces it finds, and pytest in a forked child."""

from __future__ import annotations

from pathlib import Path

from mfinject import pmem
from mfinject.vm import guest


def test_namespaces_with_a_size_in_natural_order(tmp_path: Path) -> None:
    for name, size in [("namespace10.0", 1 << 30), ("namespace2.0", 1 << 30),
                       ("namespace0.0", 1 << 30), ("namespace0.1", 0), ("region0", 1 << 30)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "size").write_text(f"{size}\n")
    (tmp_path / "namespace3.0").mkdir()  # no size file: not a namespace one can use
    assert pmem.namespaces(tmp_path) == ["namespace0.0", "namespace2.0", "namespace10.0"]


def test_no_bus_no_namespaces(tmp_path: Path) -> None:
    assert pmem.namespaces(tmp_path / "missing") == []


def _run(tmp_path: Path, body: str) -> tuple[int, str]:
    (tmp_path / "test_it.py").write_text(body)
    log = tmp_path / "guest.log"
    with log.open("w", buffering=1) as logf:
        logf.write("guest: before\n")
        rc = guest.pytest_forked([str(tmp_path / "test_it.py"), "-q", "-p", "no:cacheprovider",
                                  "--disable-plugin-autoload"], {"PATH": "/usr/bin:/bin"}, logf)
        logf.write(f"guest: pytest exited {rc}\n")
    return rc, log.read_text()


def test_the_forked_pytest_says_its_status_and_writes_into_the_log(tmp_path: Path) -> None:
    rc, text = _run(tmp_path, "def test_ok():\n    assert True\n\ndef test_no():\n    assert 0\n")
    assert rc == 1
    lines = text.splitlines()
    assert lines[0] == "guest: before" and lines[-1] == "guest: pytest exited 1"
    assert "1 failed, 1 passed" in text


def test_a_session_that_ends_with_os_exit_still_gives_its_status(tmp_path: Path) -> None:
    """mfinject.hooks.kernel_hung ends the session with os._exit(3): guest-exit must say 3."""
    rc, text = _run(tmp_path, "import os\n\ndef test_hung():\n    os._exit(3)\n")
    assert rc == 3 and text.splitlines()[-1] == "guest: pytest exited 3"


def test_a_timer_a_test_started_still_fires(tmp_path: Path) -> None:
    """A fresh interpreter waits for its threads that are not daemons before it exits, and so
    must the forked child: a planted crash is such a timer (mfinject.vm.planted)."""
    marker = tmp_path / "fired"
    rc, _ = _run(tmp_path, "import threading\n\ndef test_timer():\n"
                           f"    threading.Timer(0.3, lambda: open({str(marker)!r}, 'w').close())"
                           ".start()\n")
    assert rc == 0 and marker.exists()


def test_the_session_gets_exactly_the_environment_given(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MFINJECT_PARENT_ONLY", "1")
    seen = tmp_path / "env"
    rc, _ = _run(tmp_path, "import os\n\ndef test_env():\n"
                           f"    open({str(seen)!r}, 'w').write(repr(sorted(os.environ.items())))\n")
    assert rc == 0
    assert [(k, v) for k, v in eval(seen.read_text())  # and pytest's own
            if not k.startswith("PYTEST_")] == [("PATH", "/usr/bin:/bin")]
    assert guest.os.environ["MFINJECT_PARENT_ONLY"] == "1"  # the parent's is its own


def test_a_session_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    rc, text = _run(tmp_path, "import os, signal\n\ndef test_killed():\n"
                              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert rc == -9 and text.splitlines()[-1] == "guest: pytest exited -9"


def test_namespaces_wait_for_the_bus_to_probe_first(tmp_path: Path, monkeypatch) -> None:
    """libndctl reads each bus's wait_probe before it lists (devices register asynchronously)."""
    (tmp_path / "ndbus0").mkdir()
    (tmp_path / "ndbus0" / "wait_probe").write_text("0\n")
    (tmp_path / "namespace0.0").mkdir()
    (tmp_path / "namespace0.0" / "size").write_text("1073741824\n")
    read: list[str] = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda p, *a, **k: read.append(p.name) or real(p))
    assert pmem.namespaces(tmp_path) == ["namespace0.0"]
    assert read == ["wait_probe", "size"]
