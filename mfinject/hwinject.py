"""Which hardware error injection a machine offers, and why not where it does not.

On real pmem a media error reaches memory-failure as a machine check. Two
ways exist to make the platform raise one; whether a machine has them is a
property of its firmware, read here, never assumed:

- ACPI EINJ (drivers/acpi/apei/einj-core.c): the firmware publishes an EINJ
  table (/sys/firmware/acpi/tables/EINJ); the einj module then offers
  /sys/kernel/debug/apei/einj, whose available_error_type must list
  0x00000010, "Memory Uncorrectable non-fatal".
- ndctl inject-error (ARS error injection): the NVDIMM bus's root DSM offers
  functions 7, 8, 9 (NFIT_CMD_ARS_INJECT_SET/CLEAR/GET in
  drivers/acpi/nfit/core.c), read from the bus's nfit/dsm_mask; the error
  then surfaces through an address range scrub (ndctl start-scrub).

Neither is used to inject yet: this says which a machine could use, in the
session header and in the machine-check injector's refusal outside the VM.
QEMU's emulated machine has neither (no EINJ table; its NFIT root DSM offers
no injection function): a guard test checks that on the running kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EINJ_TABLE = Path("/sys/firmware/acpi/tables/EINJ")
EINJ_DEBUGFS = Path("/sys/kernel/debug/apei/einj")
EINJ_MEMORY_UC = 0x10  # "Memory Uncorrectable non-fatal" (einj_error_type_string)
ARS_INJECT_FUNCTIONS = {7: "ARS_INJECT_SET", 8: "ARS_INJECT_CLEAR", 9: "ARS_INJECT_GET"}


@dataclass(frozen=True)
class Availability:
    name: str
    available: bool
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {'available' if self.available else 'not available'} ({self.reason})"


def einj(table: Path = EINJ_TABLE, debugfs: Path = EINJ_DEBUGFS) -> Availability:
    name = "ACPI EINJ"
    if not table.exists():
        return Availability(name, False, f"no EINJ table in {table.parent}: the firmware "
                            "offers no error injection (on a server, its setup may enable it)")
    types = debugfs / "available_error_type"
    try:
        text = types.read_text()
    except OSError as e:
        return Availability(name, False, f"the EINJ table is there but {types} cannot be read "
                            f"({e.strerror}): mount debugfs and modprobe einj "
                            "(CONFIG_ACPI_APEI_EINJ)")
    offered = {int(line.split()[0], 16) for line in text.splitlines() if line.strip()}
    if EINJ_MEMORY_UC not in offered:
        return Availability(name, False, f"type {EINJ_MEMORY_UC:#x} (Memory Uncorrectable "
                            f"non-fatal) not offered; {types} lists "
                            + (", ".join(f"{t:#x}" for t in sorted(offered)) or "nothing"))
    return Availability(name, True, f"type {EINJ_MEMORY_UC:#x} Memory Uncorrectable non-fatal")


def bus_of(namespace: str, devices: Path = Path("/sys/bus/nd/devices")) -> Path | None:
    node = (devices / namespace).resolve()
    return next((d for d in (node, *node.parents) if d.name.startswith("ndbus")), None)


def ars_inject(bus: Path | None) -> Availability:
    name = "ndctl inject-error"
    if bus is None:
        return Availability(name, False, "the namespace sits on no NVDIMM bus")
    mask_file = bus / "nfit" / "dsm_mask"
    try:
        mask = int(mask_file.read_text().strip(), 16)
    except (OSError, ValueError):
        return Availability(name, False, f"{bus.name} is not an ACPI NFIT bus (no readable "
                            f"{mask_file.relative_to(bus)}): only NFIT buses inject through ARS")
    lacking = [f"{fn} ({what})" for fn, what in ARS_INJECT_FUNCTIONS.items()
               if not mask & (1 << fn)]
    if lacking:
        return Availability(name, False, f"{bus.name}'s root DSM (dsm_mask {mask:#x}) lacks "
                            f"function {', '.join(lacking)}")
    return Availability(name, True, f"{bus.name}'s root DSM offers ARS error injection "
                        f"(dsm_mask {mask:#x})")


def discover(namespace: str) -> tuple[Availability, Availability]:
    return einj(), ars_inject(bus_of(namespace))
