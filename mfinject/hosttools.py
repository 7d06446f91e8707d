"""Every program mfinject runs, with the Debian package that provides it.

One list for three jobs: ``scripts/setup`` installs its packages, ``mfinject
vm`` checks it before anything boots (a missing tool stops the run with the
package to install), and a unit test checks that every program the runner,
the guest and the fixtures execute is on it.

The guest of a VM run shares the host's root filesystem, so the programs the
guest runs must be installed on the host too.

This module uses the standard library only: ``scripts/setup`` runs it with the
system python3 before the virtualenv exists (``python3 mfinject/hosttools.py
packages``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass

VM = "vm"  # the host side of `mfinject vm`: virtme-ng, QEMU, the kernel fetch
GUEST = "guest"  # run by the fixtures and scenarios (in the VM, or on a pmem host)
BUILD = "build"  # builds a debug kernel from Debian's source (--kernel debian-debug:X.Y)


@dataclass(frozen=True)
class HostTool:
    program: str  # a name looked up on PATH, or an absolute path
    package: str  # the Debian package that provides it
    used_by: str  # VM or GUEST
    why: str
    required: bool = True  # False: reported when missing, never an error
    # other names that do the same job (virtme-ng takes the first it finds)
    alternatives: tuple[str, ...] = ()

    def names(self) -> tuple[str, ...]:
        return (self.program, *self.alternatives)

    def found(self) -> str | None:
        for name in self.names():
            if os.path.isabs(name):
                if os.path.exists(name):
                    return name
                continue
            path = shutil.which(name, path=_search_path())
            if path:
                return path
        return None


def _search_path() -> str:
    # root's PATH on Debian; a user's PATH may lack the sbin directories
    extra = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return os.environ.get("PATH", "") + os.pathsep + extra


TOOLS: tuple[HostTool, ...] = (
    # --- the VM runner and virtme-ng (mfinject/vm/) ---
    HostTool("qemu-system-x86_64", "qemu-system-x86", VM, "runs the guest"),
    # virtme/mkinitramfs.py find_busybox(): the initramfs is built around it
    HostTool("busybox", "busybox-static", VM, "virtme-ng builds the guest's initramfs with it",
             alternatives=("busybox-static", "busybox.static")),
    # virtme/commands/run.py: tried first, 9p is the fallback
    HostTool("virtiofsd", "virtiofsd", VM, "shares the root filesystem faster than 9p",
             required=False, alternatives=("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")),
    HostTool("depmod", "kmod", VM, "indexes the modules of an unpacked kernel"),
    HostTool("apt-get", "apt", VM, "downloads Debian kernels (never installs them)"),
    HostTool("apt-cache", "apt", VM, "finds the image package of a Debian kernel"),
    HostTool("dpkg", "dpkg", VM, "unpacks kernel packages (dpkg -x)"),
    HostTool("/usr/share/keyrings/debian-archive-keyring.gpg", "debian-archive-keyring", VM,
             "verifies the downloaded kernel packages"),
    # --- the guest side: fixtures, scenarios, pins (also on a pmem host) ---
    HostTool("bash", "bash", GUEST, "runs the guest's script for a boot (guest.sh, "
             "cache-imports.sh) and a pmem owner's command line (mfinject vm --pmem-host-command)"),
    HostTool("timeout", "coreutils", GUEST, "limits each mount of the guest's import cache "
             "(cache-imports.sh)"),
    HostTool("ndctl", "ndctl", GUEST, "finds, reconfigures and resets the namespace"),
    HostTool("mkfs.xfs", "xfsprogs", GUEST, "makes the XFS filesystems"),
    HostTool("xfs_io", "xfsprogs", GUEST, "sets the PMD extent size hint"),
    HostTool("mkfs.ext4", "e2fsprogs", GUEST, "makes the ext4 filesystems"),
    HostTool("mount", "mount", GUEST, "mounts the guest's cached share and debugfs in a guard test "
             "(the filesystems under test: mount(2))"),
    HostTool("umount", "mount", GUEST, "unmounts debugfs in a guard test and the guest's staging "
             "share"),
    HostTool("losetup", "mount", GUEST, "backs the dm-delay device of the O_DIRECT pin"),
    HostTool("blkid", "util-linux", GUEST, "refuses a designated device that holds data"),
    HostTool("dmsetup", "dmsetup", GUEST, "creates the dm-delay device of the O_DIRECT pin"),
    HostTool("modprobe", "kmod", GUEST, "loads hwpoison_inject, dm_delay, loop"),
    # --- the debug kernel's build (mfinject/vm/debugkernel.py; Documentation/process/changes.rst)
    HostTool("make", "make", BUILD, "runs the kernel build"),
    HostTool("gcc", "gcc", BUILD, "compiles the debug kernel"),
    HostTool("flex", "flex", BUILD, "generates the Kconfig and dtc lexers"),
    HostTool("bison", "bison", BUILD, "generates the Kconfig parser"),
    HostTool("bc", "bc", BUILD, "computes kernel/time constants"),
    HostTool("perl", "perl", BUILD, "runs the build's header scripts"),
    HostTool("tar", "tar", BUILD, "unpacks Debian's kernel source"),
    HostTool("xz", "xz-utils", BUILD, "unpacks linux-source-X.Y.tar.xz"),
    HostTool("/usr/include/gelf.h", "libelf-dev", BUILD, "objtool and the ORC unwinder"),
    HostTool("/usr/include/openssl/ssl.h", "libssl-dev", BUILD, "scripts/sign-file, "
             "certs/extract-cert"),
    # virtme-init starts udevd when it finds it; pyudev waits on its events
    HostTool("/lib/systemd/systemd-udevd", "udev", GUEST, "announces the namespace's devices",
             alternatives=("/usr/lib/systemd/systemd-udevd", "udevadm")),
)

# Python modules of the `vm` extra (pip install 'mfinject[vm]'): module -> requirement
VM_MODULES = {"virtme_ng": "virtme-ng"}

# What scripts/setup needs besides the tools: Python and its virtualenv
SETUP_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")


def packages() -> list[str]:
    """Every Debian package a required tool needs, in order, once each.

    Optional tools are left out: virtiofsd is not installed, and virtme-ng
    falls back to 9p (the configuration CI runs).
    """
    seen: dict[str, None] = dict.fromkeys(SETUP_PACKAGES)
    for tool in TOOLS:
        if tool.required:
            seen.setdefault(tool.package, None)
    return list(seen)


def by_program(name: str) -> HostTool | None:
    for tool in TOOLS:
        if name in tool.names() or os.path.basename(tool.program) == name:
            return tool
    return None


@dataclass(frozen=True)
class Missing:
    what: str
    provider: str
    fix: str
    required: bool

    def __str__(self) -> str:
        return f"missing {self.what} ({self.provider}): {self.fix}"


def missing(used_by: tuple[str, ...] = (VM, GUEST)) -> list[Missing]:
    """The tools (and vm-extra modules) that are not installed."""
    out = [Missing(t.program, f"Debian package {t.package}", "run scripts/setup"
                   if t.required else "not needed, it is faster when installed", t.required)
           for t in TOOLS if t.used_by in used_by and t.found() is None]
    if VM in used_by:
        out += [Missing(f"Python module {mod}", f"{req}, the vm extra",
                        "pip install 'mfinject[vm]' (in a checkout: run scripts/setup)", True)
                for mod, req in VM_MODULES.items() if importlib.util.find_spec(mod) is None]
    return out


def preflight(used_by: tuple[str, ...] = (VM, GUEST)) -> tuple[list[str], list[str]]:
    """(errors, notes): one line each; errors name the package and scripts/setup."""
    found = missing(used_by)
    return ([str(m) for m in found if m.required],
            [f"optional {m}" for m in found if not m.required])


if __name__ == "__main__":
    if sys.argv[1:] == ["packages"]:
        print("\n".join(packages()))
    elif sys.argv[1:] == ["check"]:
        errs, info = preflight((VM, GUEST, BUILD))
        print("\n".join([*errs, *info]) or "all host tools present")
        sys.exit(2 if errs else 0)
    else:
        print(f"usage: {sys.argv[0]} packages|check", file=sys.stderr)
        sys.exit(2)
