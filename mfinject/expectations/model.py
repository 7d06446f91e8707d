"""Expectations as data, and the verdicts they give an observation.

An :class:`Expect` says what one participant should see for one field, on which
memory-failure path and which kernels, and names its source: a documentation
sentence or a kernel commit. A :class:`KnownDeviation` records a documented
case where the kernel does otherwise, with the explanation. Observed values are
never folded into the expectation: a mismatch that no known deviation covers
is a failure, and the message quotes the source it deviates from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mfinject.kernel import Version

PASS = "pass"
FAIL = "fail"
KNOWN_DEVIATION = "known-deviation"
ERROR = "error"
CRASHED = "crashed"
SKIPPED = "skipped"  # did not apply here: the row carries the reason
# crashed the guest in one boot and passed in another: both consoles kept; a
# failure of the run unless the crash is itself a catalogued known deviation
FLAKY = "flaky"

ALL_PATHS = frozenset({"generic", "notify_failure"})


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

    def applies(self, path: str, version: Version) -> bool:
        return path in self.paths and self.kernels.holds(version)


KERNEL_DEVIATION = "kernel"  # the kernel does not do what its documentation says
INJECTION_LIMIT = "software injection"  # the test method cannot reproduce hardware


@dataclass(frozen=True)
class KnownDeviation:
    scenario: str
    participant: str
    field: str
    observed: str
    kind: str  # KERNEL_DEVIATION or INJECTION_LIMIT
    explanation: str
    source: Source
    paths: frozenset[str] = ALL_PATHS
    kernels: KernelRange = ALL_KERNELS
    # only where this observed fact does not contain the word: ("nd_bus_commands",
    # "clear_error") limits a deviation to buses that cannot clear media errors
    fact_lacks: tuple[str, str] | None = None

    def holds_for(self, facts: tuple[tuple[str, str], ...]) -> bool:
        if self.fact_lacks is None:
            return True
        name, word = self.fact_lacks
        return word not in dict(facts).get(name, "").split()

    # ``observed`` is a regular expression the whole observed value must match
    observed_regex: bool = False

    def covers(self, scenario: str, participant: str, fld: str, observed: str,
               path: str, version: Version) -> bool:
        if (self.scenario, self.participant, self.field) != (scenario, participant, fld):
            return False
        same = (re.fullmatch(self.observed, observed) is not None if self.observed_regex
                else self.observed == observed)
        return same and path in self.paths and self.kernels.holds(version)


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
    for v in (CRASHED, ERROR, FAIL, KNOWN_DEVIATION):
        if v in verdicts:
            return v
    return PASS
