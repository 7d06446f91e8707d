"""Keeping a filesystem from test to test: only while no poisoned page is loose.

The wrong kept filesystem would hand a later test's file a page an earlier
test poisoned: that test would then judge the kernel on a page that was
poisoned before its injection. These feed the decision exactly that.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from types import SimpleNamespace

import pytest

from mfinject import fs, fspool, ledger, pmem, syscalls
from mfinject.fspool import FsPool
from mfinject.hooks import by_fs_kind

PAGE = syscalls.PAGE_SIZE


def _kept(mount, data_start=0):
    """The PFNs of every file on the filesystem, as FsPool.why_not_keep() reads them."""
    return fs.extent_pfn_ranges(fspool.kept_extents(mount), data_start)


@pytest.fixture(autouse=True)
def empty_ledger():
    ledger.forget()
    yield
    ledger.forget()


def _files(tmp_path, *names: str) -> SimpleNamespace:
    for name in names:
        with open(tmp_path / name, "wb") as f:
            f.write(b"\x5a" * (4 * PAGE))
            f.flush()
            os.fsync(f.fileno())
    return SimpleNamespace(mountpoint=str(tmp_path))


def _pfn(path, page: int) -> int:
    return fs.physical_offset(str(path), page * PAGE) // PAGE


def test_poison_inside_a_kept_file_is_not_loose(tmp_path):
    mount = _files(tmp_path, "a.dat", "b.dat")
    poisoned = frozenset({_pfn(tmp_path / "a.dat", 2), _pfn(tmp_path / "b.dat", 0)})
    assert fspool.loose_poison(poisoned, _kept(mount)) == []


def test_poison_of_a_file_since_unlinked_is_loose(tmp_path):
    """unlink (or truncate, hole punch) freed the block: a later file may be given it."""
    mount = _files(tmp_path, "a.dat", "b.dat")
    freed = _pfn(tmp_path / "a.dat", 1)
    os.unlink(tmp_path / "a.dat")
    assert fspool.loose_poison(frozenset({freed}), _kept(mount)) == [freed]


def test_poison_of_a_truncated_file_is_loose(tmp_path):
    mount = _files(tmp_path, "a.dat")
    freed = _pfn(tmp_path / "a.dat", 3)
    os.truncate(tmp_path / "a.dat", PAGE)
    os.sync()
    assert fspool.loose_poison(frozenset({freed}), _kept(mount)) == [freed]


def test_the_data_start_moves_every_range(tmp_path):
    mount = _files(tmp_path, "a.dat")
    pfn = _pfn(tmp_path / "a.dat", 0)
    shifted = _kept(mount, 1 << 30)
    assert fspool.loose_poison(frozenset({pfn}), shifted) == [pfn]
    assert fspool.loose_poison(frozenset({pfn + (1 << 30) // PAGE}), shifted) == []


def test_every_extent_of_a_fragmented_file_is_read(tmp_path):
    """More extents than one FIEMAP call returns: the later ones count too."""
    path = tmp_path / "holes.dat"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for page in range(0, 40, 2):  # every other page: a hole between extents
            os.pwrite(fd, b"\x5a" * PAGE, page * PAGE)
        os.fsync(fd)
    finally:
        os.close(fd)
    found = fs.extents(str(path), per_call=3)
    assert [e.logical for e in found] == [p * PAGE for p in range(0, 40, 2)]
    last = _pfn(path, 38)
    assert fspool.loose_poison(frozenset({last}),
                               _kept(SimpleNamespace(mountpoint=str(tmp_path)))
                               ) == []


def test_a_scenario_refuses_a_page_the_ledger_holds():
    ledger.note(0x1234)
    ledger.check_fresh([0x1233, None, 0x1235], "A's window")
    with pytest.raises(ledger.PoisonedPageError, match="0x1234 was poisoned by an earlier test"):
        ledger.check_fresh([0x1233, 0x1234], "A's window")
    ledger.forget()
    ledger.check_fresh([0x1234], "A's window")


def _item(name: str, fs_name: str | None, chooses: bool = False) -> SimpleNamespace:
    params = {"mf_dax_fs": fs_name} if fs_name else {}
    marks = [SimpleNamespace(args=("mf_dax_fs", [fs_name]), kwargs={})] if chooses else []
    return SimpleNamespace(name=name, callspec=SimpleNamespace(params=params),
                           iter_markers=lambda _name, m=marks: iter(m))


def test_tests_run_grouped_by_kind_in_the_kinds_order():
    items = [_item("race-a", "xfs"), _item("race-a", "ext4"), _item("guard", None),
             _item("unbind", "xfs-rmapbt", chooses=True), _item("scn-b", "xfs"),
             _item("scn-b", "ext4"), _item("scn-c", "xfs-rmapbt")]
    got = [(i.name, i.callspec.params.get("mf_dax_fs"))
           for i in by_fs_kind(items, ["xfs", "xfs-rmapbt", "ext4"])]
    assert got == [("guard", None), ("race-a", "xfs"), ("scn-b", "xfs"),
                   ("scn-c", "xfs-rmapbt"), ("race-a", "ext4"), ("scn-b", "ext4"),
                   ("unbind", "xfs-rmapbt")]


def test_within_a_kind_the_tests_that_spoil_the_filesystem_come_last():
    # each of them makes the next test reset the namespace and mkfs again: last,
    # the others share one filesystem
    items = [_item("race-truncate", "xfs"), _item("corrupt-pfn-deleted", "xfs"),
             _item("madvise-self", "xfs"), _item("corrupt-pfn-shared", "ext4"),
             _item("race-munmap", "xfs"), _item("madvise-self", "ext4"),
             _item("corrupt-pfn-metadata", "xfs")]
    got = [(i.name, i.callspec.params.get("mf_dax_fs"))
           for i in by_fs_kind(items, ["xfs", "ext4"])]
    assert got == [("madvise-self", "xfs"), ("race-munmap", "xfs"), ("race-truncate", "xfs"),
                   ("corrupt-pfn-deleted", "xfs"), ("corrupt-pfn-metadata", "xfs"),
                   ("madvise-self", "ext4"), ("corrupt-pfn-shared", "ext4")]


def test_shards_are_contiguous_parts_that_together_are_the_run():
    from mfinject.hooks import shard_of
    items = list(range(23))
    for parts in (1, 2, 3, 5, 23, 30):
        got = [shard_of(items, k, parts) for k in range(1, parts + 1)]
        assert [x for part in got for x in part] == items  # each once, in order
        assert max(map(len, got)) - min(map(len, got)) <= 1


def test_a_shard_is_k_of_n():
    from mfinject.options import parse_shard
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "2", "a/b", "1/0", ""):
        with pytest.raises(ValueError, match="give K/N"):
            parse_shard(bad)


def test_vm_parts_of_a_kernel(monkeypatch):
    from mfinject import cli
    from mfinject.errors import MfinjectError
    from mfinject.vm import runner
    assert cli._parts("2/3", None, 1) == ["2/3"]
    assert cli._parts(None, 1, 3) == [None]
    assert cli._parts(None, 3, 1) == ["1/3", "2/3", "3/3"]
    # by default: what the host can run beside the other kernels (2 cores: one VM)
    monkeypatch.setattr(runner, "plan_parallelism", lambda n: runner.Parallelism(4, "8 cores"))
    assert cli._parts(None, None, 2) == ["1/2", "2/2"]
    monkeypatch.setattr(runner, "plan_parallelism", lambda n: runner.Parallelism(1, "2 cores"))
    assert cli._parts(None, None, 1) == [None]
    for shard, jobs in (("1/2", 2), ("2/1", None), (None, 0)):
        with pytest.raises(MfinjectError):
            cli._parts(shard, jobs, 1)


def test_a_new_filesystem_skips_the_reset_only_on_pages_this_session_reset_and_left_clean(
        monkeypatch) -> None:
    ns = pmem.Namespace("namespace0.0", "fsdax", "pmem0", 0, 1 << 30)
    reset_calls: list[str] = []
    monkeypatch.setattr(pmem, "reset", lambda n: reset_calls.append(n.name) or n)
    monkeypatch.setattr(pmem, "present", lambda n: True)
    ledger.forget()
    pool = FsPool(ns)
    assert pool.needs_reset()  # what an earlier session left is unknown
    pool.clean_namespace()
    assert reset_calls == ["namespace0.0"]
    assert not pool.needs_reset()  # reset here, nothing injected since
    ledger.note(0x101400)
    assert pool.needs_reset()  # a poisoned page: a new mkfs could hand it to a file
    ledger.forget()
    # unbind-mounted left the device unbound (6.12 completes the unbind): only the
    # reset binds it again, nothing poisoned or not
    monkeypatch.setattr(pmem, "present", lambda n: False)
    assert pool.needs_reset()


def test_machine_check_tests_come_last_by_kind():
    # their bad ranges outlive them: nothing but another machine-check test of the
    # same kind may follow one in a VM (mfinject.hooks.request_fresh_boot)
    items = [_item("mce", "ext4"), _item("scn-b", "ext4"), _item("mce-file-io", "xfs"),
             _item("unbind", "xfs-rmapbt", chooses=True), _item("mce", "xfs"),
             _item("scn-b", "xfs")]
    got = [(i.name, i.callspec.params.get("mf_dax_fs"))
           for i in by_fs_kind(items, ["xfs", "xfs-rmapbt", "ext4"])]
    # unbind-mounted after everything: on 7.2/7.3 its hang ends the session
    assert got == [("scn-b", "xfs"), ("scn-b", "ext4"), ("mce-file-io", "xfs"),
                   ("mce", "xfs"), ("mce", "ext4"), ("unbind", "xfs-rmapbt")]


def test_bad_blocks_move_the_pool_to_the_next_spare_then_to_none(monkeypatch) -> None:
    spare = pmem.Namespace("namespace1.0", "raw", "pmem1", 1 << 32, 1 << 30)
    made: list[str] = []
    monkeypatch.setattr(pmem, "lookup", lambda name: spare)
    monkeypatch.setattr(pmem, "ensure_fsdax", lambda n, may_reconfigure: made.append(n.name)
                        or pmem.Namespace(n.name, "fsdax", "pmem1", n.phys_start, n.phys_size))
    pool = FsPool(pmem.Namespace("namespace0.0", "fsdax", "pmem0", 0, 1 << 30),
                  spares=["namespace1.0"])
    pool.memmap_made = True
    monkeypatch.setattr(pmem, "present", lambda n: True)
    ledger.note(0x1234)  # a page of namespace0.0
    moved = pool.move_to_spare()
    assert moved is not None and moved.name == "namespace1.0" and moved.mode == "fsdax"
    assert pool.namespace is moved and made == ["namespace1.0"]
    # raw until now: ndctl create-namespace made its memmap, and namespace0.0's pages
    # are nothing to it
    assert not pool.needs_reset() and not ledger.poisoned()
    assert pool.move_to_spare() is None  # none left: the caller asks for a new VM


def test_a_spare_in_fsdax_mode_already_is_reset_before_its_first_filesystem(monkeypatch):
    spare = pmem.Namespace("namespace1.0", "fsdax", "pmem1", 1 << 32, 1 << 30)
    monkeypatch.setattr(pmem, "lookup", lambda name: spare)
    monkeypatch.setattr(pmem, "ensure_fsdax", lambda n, may_reconfigure: n)
    monkeypatch.setattr(pmem, "present", lambda n: True)
    pool = FsPool(pmem.Namespace("namespace0.0", "fsdax", "pmem0", 0, 1 << 30),
                  spares=["namespace1.0"], memmap_made=True)
    pool.move_to_spare()
    assert pool.needs_reset()  # what was done on it before is unknown


def test_each_nvdimm_is_its_own_device_in_qemu(tmp_path) -> None:
    from mfinject.vm import runner
    images = runner.nvdimm_images(tmp_path)
    opts = runner.nvdimm_opts(images[:3])
    assert opts.startswith("-machine nvdimm=on -m 2G,slots=4,maxmem=9G ")
    assert f"id=nv2,share=on,mem-path={images[2]},size=1G -device nvdimm,id=nvdimm2,memdev=nv2" \
        in opts
    assert images[0].name == "nvdimm.img" and len(images) == 1 + runner.SPARE_NVDIMMS


def test_a_spare_that_is_the_namespace_in_use_is_refused(monkeypatch) -> None:
    ns = pmem.Namespace("namespace0.0", "fsdax", "pmem0", 0, 1 << 30)
    monkeypatch.setattr(pmem, "lookup", lambda name: ns)  # /dev/pmem0 is namespace0.0
    pool = FsPool(ns, spares=["/dev/pmem0"])
    with pytest.raises(pmem.PmemError, match="spare /dev/pmem0 is namespace0.0, which this "
                       "session left with bad blocks"):
        pool.move_to_spare()


def test_every_injector_says_how_long_to_wait_after_it() -> None:
    from mfinject import injectors
    for name, cls in injectors.INJECTORS.items():
        want = injectors.ASYNC_QUIET_S if name.startswith("mce") else injectors.SYNC_QUIET_S
        assert cls.settle_quiet_s == want, name


def test_a_reset_rebinds_the_pfn_device_that_claims_the_namespace(tmp_path, monkeypatch):
    """sysfs as the 6.1 guest shows it (pfn0.0 claims namespace0.0, pfn0.1 is the seed)."""
    devices, driver = tmp_path / "devices", tmp_path / "nd_pmem"
    driver.mkdir()
    for name, claims, bound in (("pfn0.0", "namespace0.0", True), ("pfn0.1", "", False),
                                ("pfn1.0", "namespace1.0", False)):
        (devices / name).mkdir(parents=True)
        (devices / name / "namespace").write_text(claims + "\n")
        if bound:
            (devices / name / "driver").symlink_to(driver)
    ns = pmem.Namespace("namespace0.0", "fsdax", "pmem0", 0, 1 << 30)
    assert pmem.claim_of(ns, devices) == "pfn0.0"
    assert pmem.claim_of(dataclasses.replace(ns, name="namespace2.0"), devices) is None
    ledger.note(0x1234)
    pmem._rebind("pfn0.0", None, driver, devices)
    assert (driver / "unbind").read_text() == "pfn0.0" == (driver / "bind").read_text()
    assert not ledger.poisoned()  # the memmap is new: no page is poisoned any more
    (driver / "unbind").unlink()
    pmem._rebind("pfn1.0", None, driver, devices)  # unbound already (6.12, unbind-mounted)
    assert not (driver / "unbind").exists() and (driver / "bind").read_text() == "pfn1.0"
    # a block device someone still holds (a mount elsewhere): never unbound under it
    disk = tmp_path / "pmem0"
    disk.write_text("")
    real_open = os.open

    def busy(path, flags, *args):
        if str(path) == str(disk) and flags & os.O_EXCL:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        return real_open(path, flags, *args)
    monkeypatch.setattr(pmem.os, "open", busy)
    ledger.note(0x1234)
    with pytest.raises(pmem.PmemError, match="pmem0 is in use .*unmount it"):
        pmem._rebind("pfn0.0", str(disk), driver, devices)
    assert not (driver / "unbind").exists() and ledger.poisoned()
    ledger.forget()


def test_a_namespace_is_read_from_sysfs_as_ndctl_lists_it(tmp_path):
    """The layouts of a 6.1 guest: fsdax (pfn0.0 claims namespace0.0 and holds pmem0),
    raw (the namespace itself bound, pmem1 under it), disabled (nothing bound)."""
    devices = tmp_path / "devices"
    driver = tmp_path / "nd_pmem"
    driver.mkdir()

    def dev(name, holder=None, bound=False, disk=None):
        (devices / name).mkdir(parents=True)
        if holder is not None:
            (devices / name / "holder").write_text(holder + "\n")
        if bound:
            (devices / name / "driver").symlink_to(driver)
        if disk:
            (devices / name / "block" / disk).mkdir(parents=True)
    dev("namespace0.0", "pfn0.0")
    dev("pfn0.0", bound=True, disk="pmem0")
    dev("namespace1.0", "", bound=True, disk="pmem1")
    dev("namespace2.0", "pfn2.0")
    dev("pfn2.0")
    dev("namespace3.0")  # no holder attribute: ask ndctl
    assert pmem.from_sysfs("namespace0.0", devices) == ("fsdax", "pmem0")
    assert pmem.from_sysfs("namespace1.0", devices) == ("raw", "pmem1")
    assert pmem.from_sysfs("namespace2.0", devices) is None
    assert pmem.from_sysfs("namespace3.0", devices) is None
