"""One filesystem on the namespace, kept mounted from test to test while that is safe.

Making a filesystem for every test (namespace reset, mkfs, mount, read its
features back, unmount) cost about 5 s of each test under TCG, several times
the scenario itself. Each scenario creates files of its own names and never
reads another's, so a filesystem can serve the next test of the same kind as
long as what the last test left behind cannot reach it:

- every page poisoned since the namespace was reset (:mod:`mfinject.ledger`)
  still lies inside a file on the filesystem, so no later file can be given
  it (a truncate, unlink, hole punch or rewrite that freed one forces a reset);
- the namespace records no bad block (the badblocks injector leaves one);
- the device and the mount are still there (unbind takes both);
- no two files share blocks (what evicting a shared fsdax inode logs at
  unmount, 6.1's WARN in dax_disassociate_entry, belongs to the test that
  shared them);
- the test did not fail, and the kernel-health check found nothing in it;
- the next test does not choose its filesystem itself (unbind wants its own).

Otherwise, and whenever the next test wants another kind, the filesystem is
unmounted in that test's teardown, and the namespace is reset (PG_hwpoison
cleared, :func:`mfinject.pmem.reset`) before the next mkfs. Every scenario
still checks that none of its pages is in the ledger before it injects.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from mfinject import fs, ledger, pmem, quarantine
from mfinject.syscalls import PAGE_SIZE

def _raise(e: OSError) -> None:
    raise e


def kept_files(mount: fs.Mount) -> list[str]:
    """Every regular file on the filesystem; an unreadable directory raises."""
    return [os.path.join(top, name)
            for top, _dirs, files in os.walk(mount.mountpoint, onerror=_raise)
            for name in files
            if os.path.isfile(os.path.join(top, name))
            and not os.path.islink(os.path.join(top, name))]


def kept_extents(mount: fs.Mount) -> list[fs.Extent]:
    """Every extent of every file on the filesystem (FIEMAP, once per file)."""
    return [ext for path in kept_files(mount) for ext in fs.extents(path)]


def loose_poison(poisoned: frozenset[int], kept: list[range]) -> list[int]:
    """The poisoned PFNs that no kept file holds: free space a later file may be given."""
    return sorted(p for p in poisoned if not any(p in r for r in kept))


@dataclass
class FsPool:
    namespace: pmem.Namespace
    kind_name: str | None = None
    mount: fs.Mount | None = None
    uses: int = 0  # tests the current filesystem has served
    # this session made the namespace's memmap (a reset, or ndctl create-namespace
    # putting it into fsdax mode): no page flag from before the session is left
    memmap_made: bool = False
    spares: list[str] = field(default_factory=list)  # namespaces to move to, in order
    left: list[str] = field(default_factory=list)  # namespaces moved away from
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def acquire(self, kind: fs.FsKind) -> fs.Mount:
        """The filesystem of ``kind``: the kept one, or a new one on a reset namespace."""
        if self.mount is not None and self.kind_name == kind.name:
            self.uses += 1
            return self.mount
        self.release()
        if self.needs_reset():
            self._reset()
        mount = self._stack.enter_context(fs.mounted(kind, self.namespace.devpath))
        try:
            quarantine.fence(mount.mountpoint, pmem.badblocks(self.namespace))
        except BaseException:
            self.release()  # never kept unfenced
            raise
        self.mount, self.kind_name, self.uses = mount, kind.name, 1
        return self.mount

    def release(self) -> None:
        """Unmount, if mounted; the next acquire resets the namespace before its mkfs."""
        self.mount, self.kind_name = None, None
        self._stack.close()

    def clean_namespace(self) -> pmem.Namespace:
        """Nothing mounted, every page fresh: for a test that formats the device itself."""
        self.release()
        self._reset()
        return self.namespace

    def move_to_spare(self) -> pmem.Namespace | None:
        """Leave the namespace for the next spare (None: there is none left).

        For bad blocks nothing in the machine clears (a machine check's: see
        mfinject.hooks.request_fresh_boot): a new filesystem on them could
        hold them as metadata. The spare is put in fsdax mode; one that was in
        it already is reset before its first filesystem.
        """
        self.release()
        if not self.spares:
            return None
        name = self.spares.pop(0)
        found = pmem.lookup(name)
        if found.name in self.left or found.name == self.namespace.name:
            raise pmem.PmemError(f"spare {name} is {found.name}, which this session left with "
                                 "bad blocks: name other namespaces as spares")
        self.left.append(self.namespace.name)
        self.namespace = pmem.ensure_fsdax(found, may_reconfigure=True)
        # the pages poisoned so far lie in the namespaces left; a spare put into fsdax
        # mode just now has a new memmap, as a reset would give it
        ledger.forget()
        self.memmap_made = found.mode != self.namespace.mode
        return self.namespace

    def needs_reset(self) -> bool:
        """Whether a new filesystem needs the namespace reset first.

        Not if this session reset it and nothing was injected since (the
        ledger is empty): its pages are as fresh as a reset would make them,
        and mkfs overwrites the rest. The session's first filesystem does,
        unless the session put the namespace into fsdax mode itself (ndctl
        create-namespace made its memmap): what an earlier session or process
        left is unknown. And so does
        one whose block device is gone: unbind-mounted unbinds it from its
        driver (on 6.12 the unbind completes), and only the reset binds it
        again.
        """
        return not self.memmap_made or bool(ledger.poisoned()) \
            or not pmem.present(self.namespace)

    def _reset(self) -> None:
        self.namespace = pmem.reset(self.namespace)
        self.memmap_made = True

    def why_not_keep(self) -> str | None:
        """Why the filesystem must not serve another test (None: it may). Anything that
        cannot be checked is a reason."""
        try:
            return self._why_not_keep()
        except Exception as e:  # noqa: BLE001 - unknown state: never kept
            return f"its state could not be checked ({type(e).__name__}: {e})"

    def _why_not_keep(self) -> str | None:
        m = self.mount
        if m is None:
            return "nothing mounted"
        if not os.path.exists(m.devpath) or not os.path.ismount(m.mountpoint):
            return f"{m.devpath} or its mount at {m.mountpoint} is gone"
        # every file's extents, read once: the three checks below used to read
        # them each, for every file of every test the filesystem served
        extents = kept_extents(m)
        unplaced = [ext for ext in extents if not ext.placed]
        if unplaced:
            return (f"an extent at {unplaced[0].logical} cannot be placed on the device "
                    f"(FIEMAP flags {unplaced[0].flags:#x})")
        held = [range(e.physical, e.physical + e.length) for e in extents]
        # a bad block inside a kept file (the poisoned test's own, or a quarantine
        # chunk) is as harmless as poison there: nobody touches those files again
        bad = quarantine.uncovered(
            quarantine.bad_byte_ranges(pmem.badblocks(self.namespace)), held)
        if bad:
            return (f"{self.namespace.blockdev} records bad blocks outside every file "
                    f"(bytes {', '.join(f'{r.start:#x}+{len(r)}' for r in bad)})")
        start = pmem.data_start(self.namespace)
        loose = loose_poison(ledger.poisoned(), fs.extent_pfn_ranges(extents, start))
        if loose:
            return (f"poisoned pfn {', '.join(hex(p) for p in loose[:4])} no longer lies in a "
                    "file (freed by a truncate, unlink, hole punch or rewrite)")
        if any(ext.shared for ext in extents):
            # what a shared fsdax entry logs when its inodes are evicted (the 6.1
            # WARN in dax_disassociate_entry) belongs to the test that shared it
            return "files share blocks (reflink): their eviction at unmount is this test's"
        return None
