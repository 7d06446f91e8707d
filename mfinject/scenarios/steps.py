"""The steps a scenario's timeline is made of.

Each step is a small frozen record of what one participant (or the test)
does; the player (:mod:`mfinject.scenarios.runner`) carries them out in
order and records what each came to (:class:`~mfinject.scenarios.observation.StepObs`).
Where a step names a page, it is the poisoned page: the player chooses
where it lies (see :class:`Layout`), so that no scenario quietly relies on
page 0 of a mapping at file offset 0.
"""

from __future__ import annotations

from dataclasses import dataclass

MAIN = "main"    # the scenario's file
CLONE = "clone"  # a FICLONE copy of it (the Clone step), sharing every block


# where a clone holds the scenario file's blocks: 2 MiB further into the file
# than the file itself (still 2 MiB-aligned, so a PMD can map them), so the
# shared page has another file index, and another address, in each owner
CLONE_SHIFT_PAGES = 512


@dataclass(frozen=True)
class Clone:
    """The test makes ``dst`` share every block of ``src`` (ioctl FICLONERANGE), at
    ``shift_pages`` pages further into ``dst`` (before that, a hole)."""

    src: str = MAIN
    dst: str = CLONE
    shift_pages: int = CLONE_SHIFT_PAGES

    def describe(self) -> str:
        return (f"{self.dst} shares every block of {self.src}, {self.shift_pages} pages "
                "further in (FICLONERANGE)")


@dataclass(frozen=True)
class Map:
    """``who`` maps the scenario's window of ``file`` and faults in every page of it."""

    who: str
    file: str = MAIN
    fault: bool = True  # False: map only; the first load comes later (Touch)

    def describe(self) -> str:
        how = "maps and faults" if self.fault else "maps (no fault)"
        return f"{self.who} {how} the window of {self.file}"


@dataclass(frozen=True)
class MapAgain:
    """``who`` maps the same file a second time, at a window that starts ``back_pages``
    pages earlier in the file (so the poisoned page is another page of it, at another
    address), and faults every page of it."""

    who: str
    back_pages: int = 1

    def describe(self) -> str:
        return f"{self.who} maps the file again, {self.back_pages} page(s) earlier, and faults it"


@dataclass(frozen=True)
class Touch:
    """``who`` loads a byte of the poisoned page through its mapping (a fresh fault, or a
    load from a page still mapped); a SIGBUS is the answer and ends the process."""

    who: str

    def describe(self) -> str:
        return f"{self.who} loads the poisoned page"


@dataclass(frozen=True)
class Unmap:
    who: str

    def describe(self) -> str:
        return f"{self.who} unmaps its window"


@dataclass(frozen=True)
class Truncate:
    """The file is truncated to 0 (and synced): its blocks belong to no file."""

    file: str = MAIN

    def describe(self) -> str:
        return f"{self.file} is truncated to 0"


@dataclass(frozen=True)
class Unlink:
    """The file is unlinked (nobody holds it open): its blocks are free."""

    file: str = MAIN

    def describe(self) -> str:
        return f"{self.file} is unlinked"


@dataclass(frozen=True)
class FindPfn:
    """Nobody maps the page: its PFN comes from the file's extent map (FIEMAP) and the
    namespace's data start, checked first on another page of the file through pagemap."""

    file: str = MAIN

    def describe(self) -> str:
        return f"the poisoned page's pfn is read from {self.file}'s extent map"


@dataclass(frozen=True)
class FindMetadata:
    """Nobody maps the page, and no file owns it: the first block of XFS's per-AG
    metadata (a free-space btree block) that the space map (GETFSMAP) names."""

    def describe(self) -> str:
        return "the poisoned page is an XFS metadata block, found through GETFSMAP"


@dataclass(frozen=True)
class Pin:
    """``who`` holds a reference on the page across the injection: ``odirect`` (an
    O_DIRECT read into its mapping in flight, on thread 1) or ``io_uring`` (its
    mapping registered as a fixed buffer: a long-term pin)."""

    who: str
    how: str

    def describe(self) -> str:
        return f"{self.who} pins the page ({self.how})"


@dataclass(frozen=True)
class Inject:
    """``who`` poisons the page with the scenario's injector, from thread ``thread``
    (0: the main thread); then the test waits for the signals to settle. The first
    Inject is the injection; a later one injects the poisoned page again."""

    who: str
    thread: int = 0

    def describe(self) -> str:
        return f"{self.who} injects" + (f" from thread {self.thread}" if self.thread else "")


@dataclass(frozen=True)
class Unpoison:
    """``who`` writes the page's PFN to debugfs hwpoison/unpoison-pfn."""

    who: str

    def describe(self) -> str:
        return f"{self.who} unpoisons the pfn"


@dataclass(frozen=True)
class MapAfter:
    """``who`` maps the window only now and loads the poisoned page (a fresh fault)."""

    who: str
    file: str = MAIN

    def describe(self) -> str:
        return f"{self.who} maps {self.file} and loads the poisoned page"


@dataclass(frozen=True)
class Pread:
    """``who`` reads the poisoned page of the file with pread()."""

    who: str
    file: str = MAIN

    def describe(self) -> str:
        return f"{self.who} preads the poisoned page of {self.file}"


@dataclass(frozen=True)
class FileIO:
    """``who`` does file I/O on the poisoned page: read, pread, O_DIRECT read,
    a sub-page write, a whole-page write, a read back."""

    who: str
    file: str = MAIN

    def describe(self) -> str:
        return f"{self.who} does file I/O on the poisoned page of {self.file}"


@dataclass(frozen=True)
class Write:
    """``who`` pwrite()s 16 bytes into the poisoned page of ``file``: on a shared
    block, a copy-on-write that unshares it (the copy reads the poisoned source)."""

    who: str
    file: str = MAIN

    def describe(self) -> str:
        return f"{self.who} writes 16 bytes into the poisoned page of {self.file}"


@dataclass(frozen=True)
class Probe:
    """Every mapper still alive, that mapped before the injection and did not unmap,
    loads the poisoned page again."""

    def describe(self) -> str:
        return "every mapper still alive loads the poisoned page again"


Step = (Clone | Map | MapAgain | Touch | Unmap | Truncate | Unlink | FindPfn | FindMetadata | Pin
        | Inject | Unpoison | MapAfter | Pread | FileIO | Write | Probe)


@dataclass(frozen=True)
class Layout:
    """Where the poisoned page lies: the mappers' window starts at file page
    ``offset_page`` and is ``pages`` long, and the page poisoned is its
    ``index``-th page (file page offset_page + index)."""

    offset_page: int
    pages: int
    index: int

    @property
    def file_page(self) -> int:
        return self.offset_page + self.index

    def describe(self) -> str:
        return (f"window of {self.pages} pages at file page {self.offset_page}, "
                f"page {self.index} of it poisoned (file page {self.file_page})")
