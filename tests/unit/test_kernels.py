"""Kernel resolution of paths: both package layouts, and the error naming the fix."""

import pytest

from mfinject.vm import kernels


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def test_debian_6x_layout(tmp_path):
    vmlinuz = _touch(tmp_path / "boot" / "vmlinuz-6.1.0-56-amd64")
    _touch(tmp_path / "lib" / "modules" / "6.1.0-56-amd64" / "modules.dep")
    k = kernels.resolve(str(vmlinuz))
    assert k.release == "6.1.0-56-amd64"
    assert k.modules == tmp_path / "lib" / "modules" / "6.1.0-56-amd64"


def test_7x_layout_vmlinuz_inside_modules(tmp_path):
    vmlinuz = _touch(tmp_path / "usr" / "lib" / "modules" / "7.2.0-1-amd64" / "vmlinuz")
    _touch(tmp_path / "usr" / "lib" / "modules" / "7.2.0-1-amd64" / "modules.dep")
    k = kernels.resolve(str(vmlinuz))
    assert k.release == "7.2.0-1-amd64"
    assert k.modules == vmlinuz.parent


def test_vmlinuz_without_modules_names_the_fix(tmp_path):
    vmlinuz = _touch(tmp_path / "boot" / "vmlinuz-6.1.0-56-amd64")
    with pytest.raises(kernels.KernelResolveError, match="no modules found.*lib/modules"):
        kernels.resolve(str(vmlinuz))


def test_unknown_names(tmp_path):
    with pytest.raises(kernels.KernelResolveError, match="no Debian suite ships a 5.10 kernel|unknown Debian kernel"):
        kernels.resolve("debian:5.10")
    with pytest.raises(kernels.KernelResolveError, match="no such file"):
        kernels.resolve(str(tmp_path / "nope"))


def test_kernel_path_config_without_memory_failure_is_refused(tmp_path):
    vmlinuz = _touch(tmp_path / "boot" / "vmlinuz-6.1.0-1-amd64")
    _touch(tmp_path / "lib" / "modules" / "6.1.0-1-amd64" / "modules.dep")
    (tmp_path / "boot" / "config-6.1.0-1-amd64").write_text(
        "CONFIG_FS_DAX=y\n# CONFIG_MEMORY_FAILURE is not set\nCONFIG_HWPOISON_INJECT=m\n")
    with pytest.raises(kernels.KernelResolveError,
                       match="lacks CONFIG_MEMORY_FAILURE .*rebuild it with CONFIG_MEMORY_FAILURE=y"):
        kernels.resolve(str(vmlinuz))
    (tmp_path / "boot" / "config-6.1.0-1-amd64").write_text(
        "CONFIG_FS_DAX=y\nCONFIG_MEMORY_FAILURE=y\nCONFIG_HWPOISON_INJECT=m\n")
    assert kernels.resolve(str(vmlinuz)).release == "6.1.0-1-amd64"
