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
}


def observed_field(p: ParticipantObs, field: str) -> str:
    """The observed value of ``field``, in the vocabulary the catalogue uses."""
    first = p.sigbus[0] if p.sigbus else None
    if field == "signal":
        return first.code if first else "none"
    if field == "si_addr":
        if first is None:
            return "no signal"
        return "own address" if first.addr == p.vaddr else f"{first.addr:#x}"
    if field == "si_addr_lsb":
        return str(first.addr_lsb) if first else "no signal"
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


def known_health(scenario: str, path: str, release: str, findings: list[str],
                 deviations: tuple[KnownDeviation, ...] = KNOWN_DEVIATIONS
                 ) -> KnownDeviation | None:
    """The known deviation that covers all of these health findings, if any."""
    from mfinject.observers.health import signature

    sig = signature(findings)
    version = Version.parse(release)
    return next((d for d in deviations
                 if d.covers(scenario, "kernel", "health", sig, path, version)), None)


def with_health(verdict: Verdict, findings: list[str], obs: Observation | None = None,
                deviations: tuple[KnownDeviation, ...] = KNOWN_DEVIATIONS) -> Verdict:
    """Add the kernel-health check: a splat or new taint fails the scenario,
    unless a known deviation for this scenario and kernel covers all of it."""
    from mfinject.expectations.sources import CODING_STYLE_WARN

    if not findings:
        check = Check("kernel", "health", "no splat", "no splat", PASS, CODING_STYLE_WARN.cite())
        return Verdict(verdict.verdict, (*verdict.checks, check))
    observed = "; ".join(findings)
    known = None if obs is None else known_health(obs.scenario, obs.path, obs.kernel, findings,
                                                     deviations)
    if known is not None:
        check = Check("kernel", "health", "no splat", observed, KNOWN_DEVIATION,
                      CODING_STYLE_WARN.cite(),
                      f"kernel health: {observed}: deviates from {CODING_STYLE_WARN.cite()}. "
                      f"Known deviation ({known.kind}): {known.explanation} "
                      f"[{known.source.cite()}]")
        return Verdict(combine([verdict.verdict, KNOWN_DEVIATION]), (*verdict.checks, check))
    check = Check("kernel", "health", "no splat", observed, FAIL, CODING_STYLE_WARN.cite(),
                  f"kernel health: {observed}: deviates from {CODING_STYLE_WARN.cite()}")
    return Verdict(combine([verdict.verdict, FAIL]), (*verdict.checks, check))


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


def judge(obs: Observation,
          expectations: dict[str, tuple[Expect, ...]] = EXPECTATIONS,
          deviations: tuple[KnownDeviation, ...] = KNOWN_DEVIATIONS) -> Verdict:
    version = Version.parse(obs.kernel)
    checks = []
    for exp in expectations.get(obs.scenario, ()):
        if not exp.applies(obs.path, version):
            continue
        got = observed_value(obs, exp.participant, exp.field)
        if got == exp.value:
            checks.append(Check(exp.participant, exp.field, exp.value, got, PASS, exp.source.cite()))
            continue
        known = next((d for d in deviations if d.covers(obs.scenario, exp.participant, exp.field,
                                                         got, obs.path, version)
                      and d.holds_for(obs.facts)), None)
        if known is not None:
            lead = "deviates from" if exp.source.is_doc else "differs from"
            msg = (f"{exp.participant} {exp.field}: expected {exp.value}, observed {got}: "
                   f"{lead} {exp.source.cite()}. Known deviation ({known.kind}): "
                   f"{known.explanation} [{known.source.cite()}]")
            checks.append(Check(exp.participant, exp.field, exp.value, got, KNOWN_DEVIATION,
                                exp.source.cite(), msg))
            continue
        lead = "deviates from" if exp.source.is_doc else "differs from"
        msg = (f"{exp.participant} {exp.field}: expected {exp.value}, observed {got}: "
               f"{lead} {exp.source.cite()}")
        checks.append(Check(exp.participant, exp.field, exp.value, got, FAIL, exp.source.cite(), msg))
    if not checks:
        raise KeyError(f"no expectation covers {obs.scenario} on {obs.path} for {obs.kernel}")
    return Verdict(combine([c.verdict for c in checks]), tuple(checks))
