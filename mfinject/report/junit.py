"""JUnit XML: one testcase per scenario, filesystem and kernel."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mfinject.expectations.model import CRASHED, ERROR, FAIL, KNOWN_DEVIATION
from mfinject.report import table
from mfinject.results import ResultSet, ScenarioResult


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


def render(rs: ResultSet) -> str:
    suites = ET.Element("testsuites", name="mfinject")
    by_kernel: dict[str, list[ScenarioResult]] = {}
    for r in rs.results:
        by_kernel.setdefault(r.kernel, []).append(r)
    for kernel, results in sorted(by_kernel.items()):
        suite = ET.SubElement(suites, "testsuite", name=f"mfinject.{kernel}",
                              tests=str(len(results)),
                              failures=str(sum(r.verdict == FAIL for r in results)),
                              errors=str(sum(r.verdict in (ERROR, CRASHED) for r in results)),
                              skipped=str(sum(r.verdict == KNOWN_DEVIATION for r in results)))
        for r in results:
            case = ET.SubElement(suite, "testcase", classname=f"{kernel}.{r.fs}", name=r.scenario,
                                 time=str((r.observation or {}).get("duration_s", 0)))
            _properties(case, r)
            text = r.message + ("\n" + "\n".join((r.observation or {}).get("dmesg", [])))
            if r.verdict == FAIL:
                ET.SubElement(case, "failure", message=table.short_cell(r)).text = text
            elif r.verdict in (ERROR, CRASHED):
                ET.SubElement(case, "error", message=table.short_cell(r)).text = text
            elif r.verdict == KNOWN_DEVIATION:
                ET.SubElement(case, "skipped", message="known deviation").text = text
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
