"""The guest's entry point: which namespaces it finds, and pytest in a forked child."""

from __future__ import annotations

from pathlib import Path

from mfinject.vm import guest


def test_namespaces_with_a_size_in_natural_order(tmp_path: Path) -> None:
    for name, size in [("namespace10.0", 1 << 30), ("namespace2.0", 1 << 30),
                       ("namespace0.0", 1 << 30), ("namespace0.1", 0), ("region0", 1 << 30)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "size").write_text(f"{size}\n")
    (tmp_path / "namespace3.0").mkdir()  # no size file: not a namespace one can use
    assert guest.namespaces(tmp_path) == ["namespace0.0", "namespace2.0", "namespace10.0"]


def test_no_bus_no_namespaces(tmp_path: Path) -> None:
    assert guest.namespaces(tmp_path / "missing") == []


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
