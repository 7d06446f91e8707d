"""Discovery of EINJ and ARS error injection, from sysfs and debugfs trees as the
kernel lays them out (drivers/acpi/apei/einj-core.c, drivers/acpi/nfit/core.c)."""

from __future__ import annotations

from pathlib import Path

from mfinject import hwinject


def _einj(tmp_path: Path, types: str | None, table: bool = True) -> hwinject.Availability:
    tables, debugfs = tmp_path / "tables", tmp_path / "einj"
    tables.mkdir(parents=True)
    if table:
        (tables / "EINJ").write_bytes(b"EINJ")
    if types is not None:
        debugfs.mkdir()
        (debugfs / "available_error_type").write_text(types)
    return hwinject.einj(tables / "EINJ", debugfs)


def test_einj_needs_the_firmware_table(tmp_path):
    a = _einj(tmp_path, None, table=False)
    assert not a.available and "no EINJ table" in a.reason


def test_einj_without_its_debugfs_names_the_module(tmp_path):
    a = _einj(tmp_path, None)
    assert not a.available and "modprobe einj" in a.reason


def test_einj_must_offer_memory_uncorrectable_non_fatal(tmp_path):
    a = _einj(tmp_path, "0x00000002\tProcessor Uncorrectable non-fatal\n"
                        "0x00000008\tMemory Correctable\n")
    assert not a.available and "0x2, 0x8" in a.reason
    ok = _einj(tmp_path / "b", "0x00000008\tMemory Correctable\n"
                               "0x00000010\tMemory Uncorrectable non-fatal\n")
    assert ok.available


def _bus(tmp_path: Path, mask: str | None) -> Path:
    bus = tmp_path / "ndbus0"
    (bus / "nfit").mkdir(parents=True)
    if mask is not None:
        (bus / "nfit" / "dsm_mask").write_text(mask + "\n")
    return bus


def test_ars_injection_needs_all_three_root_dsm_functions(tmp_path):
    # a bus with ARS and clear_error but no injection
    qemu = hwinject.ars_inject(_bus(tmp_path / "q", "0x3e"))
    assert not qemu.available and "lacks function 7 (ARS_INJECT_SET), 8" in qemu.reason
    assert hwinject.ars_inject(_bus(tmp_path / "r", "0x3be")).available
    assert not hwinject.ars_inject(_bus(tmp_path / "s", "0x1be")).available  # no GET


def test_a_bus_that_is_not_nfit_or_no_bus_at_all(tmp_path):
    assert "not an ACPI NFIT bus" in hwinject.ars_inject(_bus(tmp_path, None)).reason
    assert not hwinject.ars_inject(None).available


def test_the_bus_is_found_above_the_namespace(tmp_path):
    region = tmp_path / "devices" / "platform" / "ndbus1" / "region0"
    (region / "namespace0.0").mkdir(parents=True)
    devices = tmp_path / "bus_nd_devices"
    devices.mkdir()
    (devices / "namespace0.0").symlink_to(region / "namespace0.0")
    assert hwinject.bus_of("namespace0.0", devices) == (tmp_path / "devices" / "platform"
                                                        / "ndbus1").resolve()
