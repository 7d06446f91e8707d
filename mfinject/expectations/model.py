"""Expectations as data, and the verdicts they give an observation.

An :class:`Expect` says what one participant should see for one field, on which
memory-failure path and which kernels, and names its source: a documentation
sentence or a kernel commit. A known deviation (a *case*: the
:class:`KnownDeviation` entries of a scenario with one ``case`` name) records a
documented case where the kernel does otherwise, with the explanation and the
kernels it was seen on (:class:`Seen`). Observed values are never folded into
the expectation: a mismatch is a failure, and the message quotes the source it
deviates from, unless a case explains it whole (every value it names observed
together, the facts it depends on known) on a kernel series it was seen on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mfinject.kernel import Version

PASS = "pass"
FAIL = "fail"
KNOWN_DEVIATION = "known-deviation"
# no documentation sentence or commit says what the kernel should do here: the
# observation is recorded and reported as such, never as a pass (nor a failure)
UNSPECIFIED = "unspecified"
ERROR = "error"
CRASHED = "crashed"
SKIPPED = "skipped"  # did not apply here: the row carries the reason
# crashed the guest in one boot and passed in another: both consoles kept; a
# failure of the run unless the crash is itself a catalogued known deviation
FLAKY = "flaky"

ALL_PATHS = frozenset({"generic", "notify_failure"})

# si_addr of a SIGBUS that points exactly at the poisoned page, as mapped by its receiver
POISONED_PAGE = "poisoned page"


@dataclass(frozen=True)
class Source:
    ref: str  # "madvise(2)", "Documentation/mm/hwpoison.rst", "commit 6100e34b2526"
    quote: str  # the sentence, or the commit subject
    release: str | None = None  # for commits: the release it landed in

    @property
    def is_doc(self) -> bool:
        return not self.ref.startswith("commit ")

    def cite(self) -> str:
        if self.is_doc:
            return f'{self.ref}: "{self.quote}"'
        return f'{self.ref} ("{self.quote}", {self.release})'


@dataclass(frozen=True)
class KernelRange:
    since: Version | None = None  # inclusive
    until: Version | None = None  # exclusive

    def holds(self, v: Version) -> bool:
        return (self.since is None or v >= self.since) and (self.until is None or v < self.until)

    def __str__(self) -> str:
        if self.since is None and self.until is None:
            return "all"
        lo = f">={self.since.major}.{self.since.minor}" if self.since else ""
        hi = f"<{self.until.major}.{self.until.minor}" if self.until else ""
        return ",".join(x for x in (lo, hi) if x)


ALL_KERNELS = KernelRange()


@dataclass(frozen=True)
class Expect:
    participant: str
    field: str  # one of mfinject.expectations.fields.FIELDS
    value: str
    source: Source
    paths: frozenset[str] = ALL_PATHS
    kernels: KernelRange = ALL_KERNELS
    # only where the observation's fact (name, value) says so: ("block_owner",
    # "free") for a freed block XFS kept as free space. An observation whose fact
    # no expectation of the field names, or which lacks it, is an error of the
    # run (evaluate.judge): nothing is judged against a guess
    when: tuple[str, str] | None = None

    def applies(self, path: str, version: Version) -> bool:
        return path in self.paths and self.kernels.holds(version)

    def describe_when(self) -> str:
        return "" if self.when is None else f"{self.when[0]}={self.when[1]}"


KERNEL_DEVIATION = "kernel"  # the kernel does not do what its documentation says
INJECTION_LIMIT = "software injection"  # the test method cannot reproduce hardware


@dataclass(frozen=True)
class Seen:
    """The first and the last kernel a known deviation was seen on (release strings).

    It is confirmed for every kernel series from the first's to the last's, both
    included (6.1.0-56 and 6.1.0-57 are one series, as are 7.3.4 and 7.3.5);
    anywhere else it is unconfirmed: nobody has looked, so it explains nothing.
    """

    first: str
    last: str

    def _series(self, release: str) -> tuple[int, int]:
        v = Version.parse(release)
        return v.major, v.minor

    def confirms(self, v: Version) -> bool:
        return self._series(self.first) <= (v.major, v.minor) <= self._series(self.last)

    def unconfirmed(self, release: str) -> str:
        """Why it explains nothing on ``release``, a kernel it does not confirm."""
        below = self._series(release) < self._series(self.first)
        seen = f"seen from {self.first}" if below else f"seen up to {self.last}"
        return f"{seen}, unconfirmed on {release}"

    def __str__(self) -> str:
        return self.first if self.first == self.last else f"{self.first} to {self.last}"


@dataclass(frozen=True)
class Value:
    """One observed value a known deviation explains (see ``catalogue.deviation``)."""

    participant: str
    field: str
    observed: str
    regex: bool = False  # ``observed`` is a regular expression the whole value must match
    kernels: KernelRange = ALL_KERNELS  # where the value can be observed at all


# the readings of a fact that say nothing: it was absent, or could not be read
UNKNOWN_FACTS = frozenset({"", "unknown"})


@dataclass(frozen=True)
class KnownDeviation:
    """One observed value of a known deviation (a *case*).

    A case is every entry of a scenario with the same ``case`` name; it explains
    an observation only when all of its values that apply on the kernel are
    observed together (``evaluate.lacking()`` says what an observation lacks).
    The entries of a case share kind, explanation, source, seen, paths and
    fact_lacks: :func:`mfinject.expectations.catalogue.deviation` makes them so.
    """

    scenario: str
    participant: str
    field: str
    observed: str
    kind: str  # KERNEL_DEVIATION or INJECTION_LIMIT
    explanation: str
    source: Source
    seen: Seen  # where the case was seen; elsewhere it is unconfirmed, and a failure
    paths: frozenset[str] = ALL_PATHS
    # where this value can be observed at all (a counter that exists from v6.4):
    # elsewhere the case does not ask for it
    kernels: KernelRange = ALL_KERNELS
    # only where this observed fact is known and does not contain the word:
    # ("nd_bus_commands", "clear_error") limits a case to buses that cannot clear
    # media errors; an absent or unreadable fact is unknown, and the case does not hold
    fact_lacks: tuple[str, str] | None = None
    # ``observed`` is a regular expression the whole observed value must match
    observed_regex: bool = False
    case: str = ""  # the name of the case this value belongs to

    def holds_for(self, facts: tuple[tuple[str, str], ...]) -> bool:
        if self.fact_lacks is None:
            return True
        name, word = self.fact_lacks
        fact = dict(facts).get(name, "")
        return fact not in UNKNOWN_FACTS and word not in fact.split()

    def matches(self, observed: str) -> bool:
        if self.observed_regex:
            return re.fullmatch(self.observed, observed) is not None
        return self.observed == observed


@dataclass(frozen=True)
class Check:
    participant: str
    field: str
    expected: str
    observed: str
    verdict: str
    source: str
    message: str = ""


@dataclass(frozen=True)
class Verdict:
    verdict: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def messages(self) -> list[str]:
        return [c.message for c in self.checks if c.verdict != PASS]


def combine(verdicts: list[str]) -> str:
    for v in (CRASHED, ERROR, FAIL, KNOWN_DEVIATION, UNSPECIFIED):
        if v in verdicts:
            return v
    return PASS
