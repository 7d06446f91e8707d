"""The VM runner's pure logic: progress parsing, console excerpts, parallelism."""

import json

from mfinject.vm import runner

PROGRESS = """guest up: kernel 6.1.0-56-amd64, namespace namespace0.0
running tests/kernel/t.py::test_scenario[xfs-madvise-self] scenario=madvise-self fs=xfs
passed tests/kernel/t.py::test_scenario[xfs-madvise-self] (call, 0.7 s)
running tests/kernel/t.py::test_scenario[xfs-madvise-late] scenario=madvise-late fs=xfs
failed tests/kernel/t.py::test_scenario[xfs-madvise-late] (call, 0.7 s)
failed tests/kernel/t.py::test_scenario[xfs-madvise-late] (teardown, 0.1 s)
running tests/kernel/t.py::test_scenario[ext4-corrupt-pfn] scenario=corrupt-pfn fs=ext4
"""


def test_progress_finds_the_test_that_never_finished():
    done, running = runner.parse_progress(PROGRESS)
    assert done == {"tests/kernel/t.py::test_scenario[xfs-madvise-self]",
                    "tests/kernel/t.py::test_scenario[xfs-madvise-late]"}
    assert running is not None
    assert (running.scenario, running.fs) == ("corrupt-pfn", "ext4")


def test_progress_all_finished():
    done, running = runner.parse_progress(PROGRESS.rsplit("running", 1)[0])
    assert running is None and len(done) == 2


def test_console_excerpt_starts_at_the_panic(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("\n".join([f"[ {i}.0] boot line {i}" for i in range(50)]
                             + ["[ 60.1] Kernel panic - not syncing: sysrq triggered crash",
                                "[ 60.2] CPU: 1 PID: 255 Comm: python3"]
                             + [f"[ 61.{i}] trace {i}" for i in range(40)]))
    first, text = runner.console_excerpt(log, lines=5)
    assert first == "[ 60.1] Kernel panic - not syncing: sysrq triggered crash"
    assert text.splitlines()[2] == first
    assert len(text.splitlines()) == 7


def test_console_excerpt_without_trouble_is_the_tail(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("\n".join(f"line {i}" for i in range(100)))
    first, text = runner.console_excerpt(log, lines=3)
    assert first is None and text == "line 97\nline 98\nline 99"


def test_parallelism_is_bounded_and_explained():
    plan = runner.plan_parallelism(3)
    assert 1 <= plan.jobs <= 3
    assert "cores" in plan.reason and "GiB" in plan.reason


# vng's output on a host without busybox (seen on a fresh Debian 12 machine)
NO_BUSYBOX = ("virtme: waiting for virtiofsd to start\nfuse: invalid argument `/tmp/virtme49'\n"
              "virtme: waiting for virtiofsd to start\n"
              "virtme-run: failed to start virtiofsd, fallback to 9pvirtme-run: initramfs is "
              "needed, and no busybox was found\n")


def test_a_guest_vng_could_not_start_is_a_host_failure_with_vngs_words():
    why = runner.host_failure(NO_BUSYBOX, 1)
    assert why is not None and "no busybox was found" in why
    assert "waiting for virtiofsd" not in why


def test_a_guest_whose_kernel_printed_is_not_a_host_failure():
    booted = NO_BUSYBOX + "[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@...)\n"
    assert runner.host_failure(booted, 1) is None
    assert runner.host_failure(NO_BUSYBOX, 0) is None  # vng said all was well


def test_kvm_failure_is_cached_only_after_tcg_booted(tmp_path, monkeypatch):
    from mfinject.vm.kernels import Kernel
    monkeypatch.setenv("MFINJECT_CACHE", str(tmp_path))
    kernel = Kernel("debian:6.1", "6.1.0-56-amd64", tmp_path / "vmlinuz", tmp_path)
    marker = runner.accel_marker(kernel)
    marker.parent.mkdir(parents=True)
    runner.remember_kvm_failure(kernel, runner.AccelChoice("tcg", "--accel tcg given"))
    assert not marker.exists()
    runner.remember_kvm_failure(kernel, runner.AccelChoice(
        "tcg", "KVM did not boot 6.1.0-56-amd64 within 60 s: using TCG",
        remember_on_tcg_boot=True))
    assert json.loads(marker.read_text()) == {
        "kvm": False, "reason": "KVM did not boot 6.1.0-56-amd64 within 60 s"}


def test_the_guests_boot_script_caches_imports_then_runs_the_guest(tmp_path, monkeypatch):
    """Only the script's name goes on the kernel's command line (2048 bytes with
    virtme-ng's own): the command, however deep the results directory, is in the file."""
    from mfinject.vm import shares
    from mfinject.vm.kernels import Kernel
    deep = tmp_path / ("d" * 200) / "results"
    deep.mkdir(parents=True)
    monkeypatch.setattr(runner, "vng_path", lambda: "/usr/bin/vng")
    monkeypatch.setattr(shares, "precompile", lambda dirs: None)
    monkeypatch.setattr(shares, "precompile_rewritten", lambda suite, args: None)
    kernel = Kernel("debian:6.1", "6.1.0-57-amd64", tmp_path / "vmlinuz", tmp_path / "modules")
    opts = runner.VmOptions(pytest_args=("-k", "madvise-self"))
    cmd = runner._boot_command(kernel, deep, tmp_path / "suite", opts, "tcg", 1, ["t::x"],
                               runner.nvdimm_images(deep), tmp_path / "qmp")
    exec_cmd = cmd[cmd.index("--exec") + 1]
    assert exec_cmd == f"bash {deep / 'guest-1.sh'}"
    script = (deep / "guest-1.sh").read_text().splitlines()
    assert script[2] == (f"bash {shares.SCRIPT} {shares.STAGING} {deep / 'shares.txt'} "
                         f"> {deep / 'shares-said-1.txt'} 2>&1")
    assert script[3].startswith(f"cd {tmp_path / 'suite'} && exec env PYTHONDONTWRITEBYTECODE=1 ")
    assert f"-m mfinject.vm.guest --results {deep} --log guest-1.log" in script[3]
    assert script[3].endswith(f"--args-file {deep / 'pytest-args-1.json'} "
                              f"--shares-said {deep / 'shares-said-1.txt'}")
    assert (deep / "shares.txt").read_text().splitlines() == list(
        shares.plan(shares.import_dirs(tmp_path / "suite")))
    append = cmd[cmd.index("--append") + 1]
    assert f"modprobe.blacklist={','.join(runner.UNUSED_MODULES)}" in append.split()


def test_the_blacklist_spares_what_the_tests_need():
    """The pmem stack, the filesystems' checksums and what the suite loads by name stay."""
    needed = {"nfit", "libnvdimm", "nd_pmem", "nd_btt", "dax_pmem", "crc32c_intel",
              "crc32c_generic", "xfs", "ext4", "jbd2", "hwpoison_inject", "dm_delay", "dm_mod",
              "loop", "virtio_pci", "9p", "9pnet_virtio", "overlay"}
    assert not needed & set(runner.UNUSED_MODULES)
