"""JUnit XML: one testcase per scenario, filesystem and kernel.

A failure is ``<failure>`` (a flaky row too, with type="flaky": a failure of
the run unless catalogued); a scenario that could not be set up and a crashed
guest are ``<error>``; a skipped row, a known deviation and an unspecified
case are ``<skipped>`` (pytest writes an xfail so), the last two told apart
by type ("known-deviation", "unspecified"), each with the row's message.
Console and dmesg excerpts may hold characters that XML 1.0 cannot carry
(ESC of a colour sequence, NUL, BEL): colour sequences are dropped and other
such characters written as ``\\xNN``, so the file always parses.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from mfinject.expectations.model import (CRASHED, ERROR, FAIL, FLAKY, KNOWN_DEVIATION, PASS,
                                         SKIPPED, UNSPECIFIED)
from mfinject.report import plain_text, table
from mfinject.results import ResultSet, ScenarioResult


def _scrub(root: ET.Element) -> None:
    for el in root.iter():
        if el.text:
            el.text = plain_text(el.text)
        el.attrib = {k: plain_text(v) for k, v in el.attrib.items()}


def _properties(case: ET.Element, r: ScenarioResult) -> None:
    props = ET.SubElement(case, "properties")

    def prop(name: str, value: object) -> None:
        ET.SubElement(props, "property", name=name, value=str(value))

    prop("kernel", r.kernel)
    prop("filesystem", r.fs)
    prop("path", r.path)
    prop("injector", r.injector)
    prop("verdict", r.verdict)
    obs = r.observation or {}
    if obs:
        prop("pfn", hex(obs["pfn"]))
        prop("hardware_corrupted_delta_kb", obs["hardware_corrupted_delta_kb"])
    for p in obs.get("participants", []):
        for i, s in enumerate(p["sigbus"]):
            prop(f"{p['name']}.sigbus[{i}]",
                 f"{s['code']} si_addr={s['addr']:#x} si_addr_lsb={s['addr_lsb']} "
                 f"after_ms={s['after_ms']:.1f}")
        if not p["sigbus"]:
            prop(f"{p['name']}.sigbus", "none")
        if p["mapped_after"] is not None:
            prop(f"{p['name']}.mapped_after", p["mapped_after"])
        prop(f"{p['name']}.exit", p["exit"])


def _seconds(r: ScenarioResult) -> float:
    return float((r.observation or {}).get("duration_s") or 0)


def _outcome(case: ET.Element, r: ScenarioResult) -> None:
    """The failure, error or skipped element; none for a pass."""
    dmesg = (r.observation or {}).get("dmesg", [])
    text = "\n".join([r.message, *dmesg]) if dmesg else r.message
    first = (r.message.splitlines() or [""])[0]
    if r.verdict == PASS:
        return
    if r.verdict == SKIPPED:
        ET.SubElement(case, "skipped", message=first or "skipped").text = text
    elif r.verdict == KNOWN_DEVIATION:
        ET.SubElement(case, "skipped", type="known-deviation",
                      message=f"known deviation: {first}" if first else "known deviation"
                      ).text = text
    elif r.verdict == UNSPECIFIED:  # no source says what the kernel should do: no pass
        ET.SubElement(case, "skipped", type="unspecified",
                      message=f"unspecified: {first}" if first else "unspecified").text = text
    elif r.verdict in (FAIL, FLAKY):
        ET.SubElement(case, "failure", type=r.verdict, message=table.short_cell(r)).text = text
    else:  # ERROR, CRASHED, and a verdict this version does not know
        ET.SubElement(case, "error", type=r.verdict, message=table.short_cell(r)).text = text


def _timestamp(created: object) -> str | None:
    """``created`` (yyyymmdd-HHMMSS, local time as cli.py stamps it) in ISO 8601."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.strptime(str(created), "%Y%m%d-%H%M%S"))
    except ValueError:
        return None


def _suite(suites: ET.Element, kernel: str, results: list[ScenarioResult],
           stamp: str | None) -> None:
    def n(*verdicts: str) -> str:
        return str(sum(r.verdict in verdicts for r in results))

    known = (PASS, FAIL, FLAKY, SKIPPED, KNOWN_DEVIATION, UNSPECIFIED)
    suite = ET.SubElement(suites, "testsuite", name=f"mfinject.{kernel}", tests=str(len(results)),
                          failures=n(FAIL, FLAKY),
                          errors=str(sum(r.verdict not in known for r in results)),
                          skipped=n(SKIPPED, KNOWN_DEVIATION, UNSPECIFIED),
                          time=f"{sum(map(_seconds, results)):.3f}")
    if stamp:
        suite.set("timestamp", stamp)
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"{kernel}.{r.fs}", name=r.scenario,
                             time=f"{_seconds(r):.3f}")
        _properties(case, r)
        _outcome(case, r)


def render(rs: ResultSet) -> str:
    suites = ET.Element("testsuites", name="mfinject")
    by_kernel: dict[str, list[ScenarioResult]] = {}
    for r in rs.results:
        by_kernel.setdefault(r.kernel, []).append(r)
    stamp = _timestamp(rs.meta.get("created"))
    for kernel, results in sorted(by_kernel.items()):
        _suite(suites, kernel, results, stamp)
    _scrub(suites)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
