"""Kernel resolution of paths: both package layouts, and the error naming the fix."""

import pytest

from mfinject.vm import kernels


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def _bzimage(path, release):
    """A file shaped like an x86 bzImage: the boot header and the version string it points to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = bytearray(0x4000)
    image[0x1FE:0x200] = b"\x55\xaa"
    image[0x202:0x206] = b"HdrS"
    image[0x206:0x208] = (0x020F).to_bytes(2, "little")
    version = f"{release} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian\0"
    image[0x3000:0x3000 + len(version)] = version.encode()
    image[0x20E:0x210] = (0x3000 - 0x200).to_bytes(2, "little")
    path.write_bytes(bytes(image))
    return path


def test_debian_6x_layout(tmp_path):
    vmlinuz = _bzimage(tmp_path / "boot" / "vmlinuz-6.1.0-56-amd64", "6.1.0-56-amd64")
    _touch(tmp_path / "lib" / "modules" / "6.1.0-56-amd64" / "modules.dep")
    k = kernels.resolve(str(vmlinuz))
    assert k.release == "6.1.0-56-amd64"
    assert k.modules == tmp_path / "lib" / "modules" / "6.1.0-56-amd64"


def test_7x_layout_vmlinuz_inside_modules(tmp_path):
    vmlinuz = _bzimage(tmp_path / "usr" / "lib" / "modules" / "7.2.0-1-amd64" / "vmlinuz",
                       "7.2.0-1-amd64")
    _touch(tmp_path / "usr" / "lib" / "modules" / "7.2.0-1-amd64" / "modules.dep")
    k = kernels.resolve(str(vmlinuz))
    assert k.release == "7.2.0-1-amd64"
    assert k.modules == vmlinuz.parent


def test_vmlinuz_without_modules_names_the_fix(tmp_path):
    vmlinuz = _bzimage(tmp_path / "boot" / "vmlinuz-6.1.0-56-amd64", "6.1.0-56-amd64")
    with pytest.raises(kernels.KernelResolveError,
                       match="no modules of 6.1.0-56-amd64 found.*lib/modules/6.1.0-56-amd64"):
        kernels.resolve(str(vmlinuz))


def test_unknown_names(tmp_path):
    with pytest.raises(kernels.KernelResolveError, match="no Debian suite ships a 5.10 kernel|unknown Debian kernel"):
        kernels.resolve("debian:5.10")
    with pytest.raises(kernels.KernelResolveError, match="no such file"):
        kernels.resolve(str(tmp_path / "nope"))


def test_kernel_path_config_without_memory_failure_is_refused(tmp_path):
    vmlinuz = _bzimage(tmp_path / "boot" / "vmlinuz-6.1.0-1-amd64", "6.1.0-1-amd64")
    _touch(tmp_path / "lib" / "modules" / "6.1.0-1-amd64" / "modules.dep")
    (tmp_path / "boot" / "config-6.1.0-1-amd64").write_text(
        "CONFIG_FS_DAX=y\n# CONFIG_MEMORY_FAILURE is not set\nCONFIG_HWPOISON_INJECT=m\n")
    with pytest.raises(kernels.KernelResolveError,
                       match="lacks CONFIG_MEMORY_FAILURE .*rebuild it with CONFIG_MEMORY_FAILURE=y"):
        kernels.resolve(str(vmlinuz))
    (tmp_path / "boot" / "config-6.1.0-1-amd64").write_text(
        "CONFIG_FS_DAX=y\nCONFIG_MEMORY_FAILURE=y\nCONFIG_HWPOISON_INJECT=m\n")
    assert kernels.resolve(str(vmlinuz)).release == "6.1.0-1-amd64"


def test_not_a_bzimage_refused():
    """/etc/passwd once passed: release "etc", modules /etc, because /etc/kernel exists."""
    with pytest.raises(kernels.KernelResolveError) as e:
        kernels.resolve("/etc/passwd")
    assert str(e.value) == (
        "--kernel /etc/passwd is not a bzImage (no 'HdrS' boot header): give the vmlinuz of an "
        "x86 kernel, or --kernel debian:6.1")


def test_directory_refused(tmp_path):
    with pytest.raises(kernels.KernelResolveError, match="is a directory: give the vmlinuz in it"):
        kernels.resolve(str(tmp_path))


def test_text_file_in_a_module_tree_refused(tmp_path):
    vmlinuz = tmp_path / "usr" / "lib" / "modules" / "7.2.0-1-amd64" / "vmlinuz"
    _touch(vmlinuz.parent / "modules.dep")
    vmlinuz.write_text("not a kernel\n")
    with pytest.raises(kernels.KernelResolveError, match="is not a bzImage"):
        kernels.resolve(str(vmlinuz))


def test_header_without_release_refused(tmp_path):
    vmlinuz = _bzimage(tmp_path / "boot" / "vmlinuz-6.1.0-56-amd64", "6.1.0-56-amd64")
    data = bytearray(vmlinuz.read_bytes())
    data[0x20E:0x210] = b"\0\0"  # no kernel_version pointer
    vmlinuz.write_bytes(bytes(data))
    with pytest.raises(kernels.KernelResolveError, match="boot header but no kernel release"):
        kernels.resolve(str(vmlinuz))


def test_modules_of_another_release_refused(tmp_path):
    """The release comes from the image, not from the file name beside the modules."""
    vmlinuz = _bzimage(tmp_path / "boot" / "vmlinuz-6.1.0-99-amd64", "6.1.0-56-amd64")
    _touch(tmp_path / "lib" / "modules" / "6.1.0-99-amd64" / "modules.dep")
    with pytest.raises(kernels.KernelResolveError) as e:
        kernels.resolve(str(vmlinuz))
    assert "no modules of 6.1.0-56-amd64 found" in str(e.value)
    assert "only those of 6.1.0-99-amd64, another kernel" in str(e.value)
    assert "put them in ../lib/modules/6.1.0-56-amd64" in str(e.value)


def test_7x_layout_in_a_directory_of_another_release_refused(tmp_path):
    vmlinuz = _bzimage(tmp_path / "usr" / "lib" / "modules" / "7.2.0-1-amd64" / "vmlinuz",
                       "7.3.0-1-amd64")
    _touch(vmlinuz.parent / "modules.dep")
    with pytest.raises(kernels.KernelResolveError,
                       match="no modules of 7.3.0-1-amd64 .*only those of 7.2.0-1-amd64"):
        kernels.resolve(str(vmlinuz))


def test_release_read_from_the_image_not_the_name(tmp_path):
    vmlinuz = _bzimage(tmp_path / "boot" / "vmlinuz", "6.1.0-56-amd64")
    _touch(tmp_path / "lib" / "modules" / "6.1.0-56-amd64" / "modules.dep")
    k = kernels.resolve(str(vmlinuz))
    assert (k.release, k.modules) == ("6.1.0-56-amd64", tmp_path / "lib/modules/6.1.0-56-amd64")


def test_debian_image_header_read():
    images = sorted(kernels.cache_dir().glob("kernels/*/boot/vmlinuz-*"))
    if not images:
        pytest.skip("no Debian kernel in the cache yet: `mfinject vm --kernel debian:6.1` "
                    "downloads one")
    for image in images:
        assert kernels.image_release(image, str(image)) == image.name.removeprefix("vmlinuz-")
