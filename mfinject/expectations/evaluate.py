"""Turn an observation into checks and a verdict, using the catalogue."""

from __future__ import annotations

import re

from mfinject.expectations.catalogue import EXPECTATIONS, KNOWN_DEVIATIONS
from mfinject.expectations.model import (
    ERROR,
    FAIL,
    KNOWN_DEVIATION,
    PASS,
    POISONED_PAGE,
    UNKNOWN_FACTS,
    UNSPECIFIED,
    Check,
    Expect,
    KnownDeviation,
    Verdict,
    combine,
)
from mfinject.kernel import Version
from mfinject.scenarios.observation import Observation, ParticipantObs

# fields read straight off the participant: (attribute, text when it is unset)
_PLAIN = {
    "injection": ("injection", "none"),
    "injection2": ("injection2", "none"),
    "access": ("access", "not probed"),
    "unpoison": ("unpoison", "not tried"),
    "read": ("read", "not read"),
    "write": ("wrote", "not written"),
    "thread": ("signal_thread", "no signal"),
    "kill_policy": ("kill_policy", "unknown"),
    "pin": ("pin", "none"),
    "exit": ("exit", "unknown"),
}


# The two lines of XFS's shutdown for poison in its own metadata
# (xfs_do_force_shutdown() with SHUTDOWN_CORRUPT_ONDISK, 0x10, from
# fs/xfs/xfs_notify_failure.c), alike from 6.1.0-57 to 7.3.4; group 1 the device
XFS_NOTIFY_SHUTDOWN = (
    r"(?:^|\] )XFS \((\w+)\): Corruption of on-disk metadata \(0x10\) detected at "
    r"xfs_dax_notify_\w+\S*(?: \[xfs\])? \(fs/xfs/xfs_notify_failure\.c:\d+\)\.\s+"
    r"Shutting down filesystem\.",
    r"(?:^|\] )XFS \((\w+)\): Please unmount the filesystem and rectify the problem\(s\)$",
)
ANY_SHUTDOWN = r"XFS \([^)]+\): .*(?:[Ss]hutting down|rectify the problem)"
SHUT_DOWN = "shut down"
INJECTING = "Injecting memory failure"  # mm/hwpoison-inject.c, mm/madvise.c
# the kernel-log lines a passing check expects, by (participant, field, value):
# they are that check's evidence, not an unexpected error of the kernel's health
EXPECTED_LOG = {("kernel", "fs_shutdown", SHUT_DOWN): XFS_NOTIFY_SHUTDOWN}


def _of_device(rx: str, line: str, device: str | None) -> bool:
    m = re.search(rx, line)
    return m is not None and device is not None and m[1] == device


def fs_shutdown(obs: Observation) -> str:
    """SHUT_DOWN when, after the injection, XFS logged both lines of its shutdown for
    poisoned metadata on the scenario's own device (the fs_device fact); any other
    shutdown report, or half of one, is named as it is; else "none"."""
    device = obs.fact("fs_device")
    # no injection logged: nothing counts as its shutdown
    start = next((i for i, line in enumerate(obs.dmesg) if INJECTING in line), len(obs.dmesg))
    after = obs.dmesg[start:]
    if all(any(_of_device(rx, line, device) for line in after) for rx in XFS_NOTIFY_SHUTDOWN):
        return SHUT_DOWN
    other = [re.sub(r"^\[[ \d.]+\] ", "", line) for line in obs.dmesg
             if re.search(ANY_SHUTDOWN, line)]
    return f"not the expected report: {'; '.join(other)}" if other else "none"


SECOND_MAPPING = "poisoned page, in its second mapping"
A_POISONED_PAGE = "a poisoned page's address"


def describe_si_addr(p: ParticipantObs, addr: int, lsb: int) -> str:
    """Where a SIGBUS's si_addr points, in the participant's own mapping.

    "poisoned page": exactly the address at which this participant maps the
    poisoned page. Anything else is named for what it is, so that a kernel that
    reports the mapping's start, the base of the extent si_addr_lsb covers, or
    another process's address is told apart: sigaction(2) defines si_addr as
    the address of the fault and si_addr_lsb as the least significant bit of it
    that is meaningful, so a base of that extent still points at the poison.
    """
    want = p.poison_addr if p.poison_addr is not None else p.vaddr
    if want is None:
        return f"{addr:#x} (maps nothing)"
    if addr == want:
        return POISONED_PAGE
    if p.poison_addr2 is not None and addr == p.poison_addr2:
        return SECOND_MAPPING
    base = want & ~((1 << lsb) - 1) if 12 <= lsb < 64 else None
    if lsb > 12 and addr == base:
        return f"base of the poisoned page's 2^{lsb} extent"
    if addr == p.vaddr:
        return "mapping start"
    if p.vaddr is not None and p.range_pages and 0 <= addr - p.vaddr < p.range_pages * 4096:
        return f"page {(addr - p.vaddr) // 4096} of the mapping ({addr:#x})"
    return f"{addr:#x}"


ONLY_POISONED = "only the poisoned page unmapped"


def describe_window(bits: str | None, index: int | None) -> str:
    """Which pages of a mapper's window are still mapped after the injection.

    ``bits`` has one character per page, "1" present. Read from pagemap when
    the scenario looked (or, for a process a signal ended, at that signal).
    """
    if bits is None or index is None or not 0 <= index < len(bits):
        return "unknown"
    others = bits[:index] + bits[index + 1:]
    if bits[index] == "0" and "0" not in others:
        return ONLY_POISONED
    if "1" not in bits:
        return "all unmapped"
    if "0" not in bits:
        return "all mapped"
    gone = [str(i) for i, b in enumerate(bits) if b == "0"]
    return f"unmapped: pages {', '.join(gone)} of {len(bits)} (poisoned: {index})"


COVERS_POISONED_PAGE = "covers the poisoned page"


def describe_extent(p: ParticipantObs, addr: int, lsb: int) -> str:
    """Whether the extent a SIGBUS reports (si_addr with its low si_addr_lsb bits not
    significant, sigaction(2)) holds the poisoned page: the granularity a PMD
    mapping's signal is documented at. Otherwise, where si_addr points."""
    want = p.poison_addr if p.poison_addr is not None else p.vaddr
    if want is not None and 12 <= lsb < 64 and addr >> lsb == want >> lsb:
        return COVERS_POISONED_PAGE
    return describe_si_addr(p, addr, lsb)


def observed_field(p: ParticipantObs, field: str) -> str:
    """The observed value of ``field``, in the vocabulary the catalogue uses.

    ``signal``, ``si_addr`` and ``si_addr_lsb`` list every SIGBUS the injection
    brought, in order ("BUS_MCEERR_AO, BUS_MCEERR_AO" for two), so an expectation
    of one signal fails on a second; ``other_signals`` names every other signal
    and ``exit`` how the process ended ("alive": it had not ended at the last step).
    """
    if field == "signal":
        return ", ".join(s.code for s in p.sigbus) or "none"
    if field == "si_addr":
        return ", ".join(describe_si_addr(p, s.addr, s.addr_lsb) for s in p.sigbus) or "no signal"
    if field == "si_addr_any":
        # either of the process's mappings of the poisoned page
        return ", ".join(A_POISONED_PAGE if describe_si_addr(p, s.addr, s.addr_lsb) in (
            POISONED_PAGE, SECOND_MAPPING) else describe_si_addr(p, s.addr, s.addr_lsb)
            for s in p.sigbus) or "no signal"
    if field == "window2":
        return describe_window(p.range_after2, p.poison_index2)
    if field == "si_addr_extent":
        return ", ".join(describe_extent(p, s.addr, s.addr_lsb) for s in p.sigbus) or "no signal"
    if field == "access_si_addr":
        s = p.access_sigbus
        return describe_si_addr(p, s.addr, s.addr_lsb) if s else "no signal"
    if field == "si_addr_lsb":
        return ", ".join(str(s.addr_lsb) for s in p.sigbus) or "no signal"
    if field == "other_signals":
        return ", ".join(p.other_signals) or "none"
    if field == "mapping":
        if p.mapped_after is None:
            return "unknown"
        return "mapped" if p.mapped_after else "unmapped"
    if field in _PLAIN:
        attr, absent = _PLAIN[field]
        return getattr(p, attr) or absent
    if field == "fault":
        return "SIGBUS" if (p.access or "").startswith("SIGBUS") else (p.access or "not probed")
    if field.startswith("io:"):
        return dict(p.io).get(field[3:], "not done")
    if field == "window":
        return describe_window(p.range_after, p.poison_index)
    if field == "range":
        if p.range_present is None:
            return "unknown"
        if p.range_present == 0:
            return "all unmapped"
        return f"{p.range_present} of {p.range_pages} pages mapped"
    raise KeyError(field)


def _health_case(scenario: str, path: str, version: Version, sig: str,
                 deviations: tuple[KnownDeviation, ...]) -> KnownDeviation | None:
    """The known deviation whose health signature this is, wherever it was seen."""
    return next((d for d in deviations
                 if (d.scenario, d.participant, d.field) == (scenario, "kernel", "health")
                 and d.matches(sig) and path in d.paths and d.kernels.holds(version)), None)


def known_health(scenario: str, path: str, release: str, findings: list[str],
                 deviations: tuple[KnownDeviation, ...] = KNOWN_DEVIATIONS
                 ) -> KnownDeviation | None:
    """The known deviation that covers all of these health findings on this kernel, if any."""
    from mfinject.observers.health import signature

    version = Version.parse(release)
    known = _health_case(scenario, path, version, signature(findings), deviations)
    return known if known is not None and known.seen.confirms(version) else None


def expected_in_log(verdict: Verdict, finding: str, obs: Observation | None) -> bool:
    """Whether a health finding is an error line that a passing check of this verdict
    expected: one of the two lines of the XFS shutdown a poisoned metadata block
    brings, on the scenario's own device. A splat never is; nor is any other line."""
    from mfinject.observers.health import UNEXPECTED_ERROR

    prefix = f"{UNEXPECTED_ERROR}: "  # health.Finding.text()
    if obs is None or not finding.startswith(prefix):
        return False
    line = finding[len(prefix):]
    return any(c.verdict == PASS and any(_of_device(rx, line, obs.fact("fs_device"))
                                         for rx in EXPECTED_LOG[key])
               for c in verdict.checks
               if (key := (c.participant, c.field, c.expected)) in EXPECTED_LOG)


def with_health(verdict: Verdict, findings: list[str], obs: Observation | None = None,
                deviations: tuple[KnownDeviation, ...] = KNOWN_DEVIATIONS) -> Verdict:
    """Add the kernel-health check: a splat or new taint fails the scenario,
    unless a known deviation for this scenario, seen on this kernel, covers all of it."""
    from mfinject.expectations.sources import CODING_STYLE_WARN
    from mfinject.observers.health import signature

    cite = CODING_STYLE_WARN.cite()
    findings = [f for f in findings if not expected_in_log(verdict, f, obs)]
    if not findings:
        check = Check("kernel", "health", "no splat", "no splat", PASS, cite)
        return Verdict(verdict.verdict, (*verdict.checks, check))
    observed = "; ".join(findings)
    msg = f"kernel health: {observed}: deviates from {cite}"
    case = None if obs is None else _health_case(
        obs.scenario, obs.path, Version.parse(obs.kernel), signature(findings), deviations)
    result = FAIL
    if case is not None:
        confirmed = case.seen.confirms(Version.parse(obs.kernel))
        seen = "" if confirmed else " " + case.seen.unconfirmed(obs.kernel)
        msg += f". Known deviation{seen} ({case.kind}): {case.explanation} [{case.source.cite()}]"
        result = KNOWN_DEVIATION if confirmed else FAIL
    check = Check("kernel", "health", "no splat", observed, result, cite, msg)
    return Verdict(combine([verdict.verdict, result]), (*verdict.checks, check))


def observed_value(obs: Observation, participant: str, field: str) -> str:
    """A participant's field, or for participant "kernel" a fact about the whole injection."""
    if participant == "kernel":
        if field == "path":
            return obs.path_observed
        if field == "hardware_corrupted_kb":
            return f"+{obs.hardware_corrupted_delta_kb}"
        if field == "recovery_action":
            seen: list[str] = []
            for line in obs.dmesg:
                m = re.search(r"recovery action for dax page: (\w+)", line)
                if m and m[1] not in seen:
                    seen.append(m[1])
            return ", ".join(seen) or "none"
        if field == "fs_shutdown":
            return fs_shutdown(obs)
        if field == "badblocks":
            n = len(obs.badblocks)
            return f"{n} bad range{'s' if n > 1 else ''}" if n else "none"
        fact = obs.fact(field)
        if fact is None:
            raise KeyError(field)
        return fact
    return observed_field(obs.participant(participant), field)


def _value_or_none(obs: Observation, participant: str, field: str) -> str | None:
    try:
        return observed_value(obs, participant, field)
    except KeyError:  # a participant or a fact this observation does not have
        return None


def lacking(case: list[KnownDeviation], obs: Observation, version: Version) -> list[str]:
    """What this observation lacks of a known case: empty when all of it is there.

    Every value of the case that can be observed on this kernel must be, and a
    fact the case depends on must be known (read) and say what the case needs.
    """
    missing = []
    for d in case:
        if not d.kernels.holds(version):
            continue
        got = _value_or_none(obs, d.participant, d.field)
        if got is None or not d.matches(got):
            want = f"matching {d.observed!r}" if d.observed_regex else d.observed
            missing.append(f"{d.participant}.{d.field} {want} (observed {got or 'nothing'})")
    if not case[0].holds_for(obs.facts) and case[0].fact_lacks is not None:
        name, word = case[0].fact_lacks
        missing.append(f"the {name} fact known and without {word} "
                       f"(observed {obs.fact(name) or 'nothing'})")
    return missing


def explaining_case(obs: Observation, participant: str, field: str, got: str,
                    version: Version, deviations: tuple[KnownDeviation, ...] = KNOWN_DEVIATIONS
                    ) -> tuple[KnownDeviation, list[str]] | None:
    """The known case with this observed value, and what the observation lacks of it.

    A case seen on this kernel and observed whole comes first, then one observed
    whole but seen elsewhere, then the one this observation lacks least of.
    """
    cases: dict[str, list[KnownDeviation]] = {}
    for d in deviations:
        if d.scenario == obs.scenario and obs.path in d.paths:
            cases.setdefault(d.case, []).append(d)
    found = []
    for case in cases.values():
        mine = [d for d in case if (d.participant, d.field) == (participant, field)
                and d.kernels.holds(version) and d.matches(got)]
        if mine:
            missing = lacking(case, obs, version)
            found.append((len(missing), not mine[0].seen.confirms(version), mine[0], missing))
    if not found:
        return None
    _, _, known, missing = min(found, key=lambda f: (f[0], f[1]))
    return known, missing


def _mismatch(exp: Expect, got: str, obs: Observation, version: Version,
              deviations: tuple[KnownDeviation, ...]) -> Check:
    """The check of a value that is not the expected one: a failure, unless a known
    case explains it, whole, on a kernel it was seen on."""
    lead = "deviates from" if exp.source.is_doc else "differs from"
    msg = (f"{exp.participant} {exp.field}: expected {exp.value}, observed {got}: "
           f"{lead} {exp.source.cite()}")
    found = explaining_case(obs, exp.participant, exp.field, got, version, deviations)
    verdict = FAIL
    if found is not None:
        known, missing = found
        why = f"({known.kind}): {known.explanation} [{known.source.cite()}]"
        if missing:
            msg += f". Not the known deviation, which needs with it {'; '.join(missing)} {why}"
        elif not known.seen.confirms(version):
            msg += f". Known deviation {known.seen.unconfirmed(obs.kernel)} {why}"
        else:
            msg += f". Known deviation {why}"
            verdict = KNOWN_DEVIATION
    return Check(exp.participant, exp.field, exp.value, got, verdict, exp.source.cite(), msg)


def _unmet_conditions(obs: Observation, exps: list[Expect]) -> list[Check]:
    """An error for each field whose expectations depend on a fact this observation
    lacks, or holds a value none of them names: what the kernel should have done
    there is not known, so nothing is judged."""
    by_field: dict[tuple[str, str, str], list[str]] = {}
    for e in exps:
        if e.when is not None:
            by_field.setdefault((e.participant, e.field, e.when[0]), []).append(e.when[1])
    out = []
    for (participant, field, fact), values in by_field.items():
        seen, after = obs.fact(fact), obs.fact(f"{fact}_after")
        changed = after is not None and after not in UNKNOWN_FACTS and after != seen
        if seen not in values or changed:
            why = ("was not read" if seen is None or seen in UNKNOWN_FACTS
                   else f"is {seen!r}, which no expectation names" if seen not in values
                   else f"was {seen!r} before the injection and {after!r} after it")
            detail = obs.fact(f"{fact}_detail")
            msg = (f"{participant} {field}: its expectation depends on the {fact} fact "
                   f"({' or '.join(sorted(set(values)))}), which {why}"
                   + (f" ({detail})" if detail else "") + ": not judged")
            got = _value_or_none(obs, participant, field) or "unknown"
            out.append(Check(participant, field, f"{fact} {' or '.join(sorted(set(values)))}",
                             got, ERROR, f"the {fact} fact", msg))
    return out


def judge(obs: Observation,
          expectations: dict[str, tuple[Expect, ...]] = EXPECTATIONS,
          deviations: tuple[KnownDeviation, ...] = KNOWN_DEVIATIONS) -> Verdict:
    version = Version.parse(obs.kernel)
    checks = []
    applying = [e for e in expectations.get(obs.scenario, ()) if e.applies(obs.path, version)]
    unmet = _unmet_conditions(obs, applying)
    for exp in applying:
        if exp.when is not None and (obs.fact(exp.when[0]) != exp.when[1] or any(
                (c.participant, c.field) == (exp.participant, exp.field) for c in unmet)):
            continue
        got = observed_value(obs, exp.participant, exp.field)
        if exp.value == UNSPECIFIED:
            checks.append(Check(exp.participant, exp.field, exp.value, got, UNSPECIFIED,
                                exp.source.cite(),
                                f"{exp.participant} {exp.field}: observed {got}; unspecified: "
                                f"{exp.source.cite()}"))
            continue
        checks.append(Check(exp.participant, exp.field, exp.value, got, PASS, exp.source.cite())
                      if got == exp.value else _mismatch(exp, got, obs, version, deviations))
    checks += unmet
    if not checks:
        raise KeyError(f"no expectation covers {obs.scenario} on {obs.path} for {obs.kernel}")
    return Verdict(combine([c.verdict for c in checks]), tuple(checks))
