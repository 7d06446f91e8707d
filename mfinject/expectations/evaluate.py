"""Turn an observation into checks and a verdict, using the catalogue."""

from __future__ import annotations

import re

from mfinject.expectations.catalogue import EXPECTATIONS, KNOWN_DEVIATIONS
from mfinject.expectations.model import (
    FAIL,
    KNOWN_DEVIATION,
    PASS,
    Check,
    Expect,
    KnownDeviation,
    Verdict,
    combine,
)
from mfinject.kernel import Version
from mfinject.scenarios.runner import Observation, ParticipantObs

# fields read straight off the participant: (attribute, text when it is unset)
_PLAIN = {
    "injection": ("injection", "none"),
    "injection2": ("injection2", "none"),
    "access": ("access", "not probed"),
    "unpoison": ("unpoison", "not tried"),
    "read": ("read", "not read"),
    "thread": ("signal_thread", "no signal"),
    "kill_policy": ("kill_policy", "unknown"),
    "pin": ("pin", "none"),
    "exit": ("exit", "unknown"),
}


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
        return ", ".join("own address" if s.addr == p.vaddr else f"{s.addr:#x}"
                         for s in p.sigbus) or "no signal"
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


def with_health(verdict: Verdict, findings: list[str], obs: Observation | None = None,
                deviations: tuple[KnownDeviation, ...] = KNOWN_DEVIATIONS) -> Verdict:
    """Add the kernel-health check: a splat or new taint fails the scenario,
    unless a known deviation for this scenario, seen on this kernel, covers all of it."""
    from mfinject.expectations.sources import CODING_STYLE_WARN
    from mfinject.observers.health import signature

    cite = CODING_STYLE_WARN.cite()
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


def judge(obs: Observation,
          expectations: dict[str, tuple[Expect, ...]] = EXPECTATIONS,
          deviations: tuple[KnownDeviation, ...] = KNOWN_DEVIATIONS) -> Verdict:
    version = Version.parse(obs.kernel)
    checks = []
    for exp in expectations.get(obs.scenario, ()):
        if not exp.applies(obs.path, version):
            continue
        got = observed_value(obs, exp.participant, exp.field)
        checks.append(Check(exp.participant, exp.field, exp.value, got, PASS, exp.source.cite())
                      if got == exp.value else _mismatch(exp, got, obs, version, deviations))
    if not checks:
        raise KeyError(f"no expectation covers {obs.scenario} on {obs.path} for {obs.kernel}")
    return Verdict(combine([c.verdict for c in checks]), tuple(checks))
