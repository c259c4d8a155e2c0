//! The boot bundle (guest images, configuration, scripts) and the BIOS or UEFI disk image that
//! carries the hypervisor with the bundle as its ramdisk.

use crate::linux::{LinuxArtifacts, is_bzimage};
use crate::{BootError, io_err};
use bootloader::{BootConfig, DiskImageBuilder};
use guest_abi::bundle::{BundleWriter, EntryKind, LINUX_INITRD_ENTRY, LINUX_KERNEL_ENTRY};
use std::path::{Path, PathBuf};

/// Which firmware boots the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS (SeaBIOS in QEMU, the Bochs BIOS).
    Bios,
    /// UEFI (OVMF in QEMU).
    Uefi,
}

/// Bochs reads disks in whole cylinders of 16 heads x 63 sectors x 512 bytes.
pub const BOCHS_CYLINDER_BYTES: u64 = 16 * 63 * 512;

/// What goes into the boot bundle.
#[derive(Clone, Debug, Default)]
pub struct BundleSpec {
    /// Guest images: (name, ELF path).
    pub guests: Vec<(String, PathBuf)>,
    /// Hypervisor configuration lines (`key=value`).
    pub config: Vec<String>,
    /// The Linux guest, packed as `linux` (bzImage) and `linux-initrd` (initramfs).
    pub linux: Option<LinuxArtifacts>,
}

/// Parses `NAME=PATH` as given to `--guest`.
pub fn parse_guest_arg(arg: &str) -> Result<(String, PathBuf), BootError> {
    match arg.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok((name.to_string(), PathBuf::from(path))),
        _ => Err(BootError::Usage(format!("--guest takes NAME=PATH, got {arg:?}"))),
    }
}

/// Serializes the bundle. A later guest of the same name replaces an earlier one, so
/// `--guest NAME=PATH` can override a default image.
pub fn build_bundle(spec: &BundleSpec) -> Result<Vec<u8>, BootError> {
    let mut guests: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, path) in &spec.guests {
        let data = std::fs::read(path).map_err(io_err(format!("reading guest image {}", path.display())))?;
        if data.len() < 4 || data[..4] != *b"\x7fELF" {
            return Err(BootError::Bundle(format!("{} is not an ELF file", path.display())));
        }
        guests.retain(|(n, _)| n != name);
        guests.push((name.clone(), data));
    }
    let mut w = BundleWriter::new();
    let config = spec.config.join("\n");
    w.add("config", EntryKind::Config, 0, config.as_bytes()).map_err(|e| BootError::Bundle(e.to_string()))?;
    for (name, data) in &guests {
        w.add(name, EntryKind::Elf, 0, data).map_err(|e| BootError::Bundle(e.to_string()))?;
    }
    if let Some(linux) = &spec.linux {
        let read = |p: &Path| std::fs::read(p).map_err(io_err(format!("reading {}", p.display())));
        let kernel = read(&linux.bzimage)?;
        if !is_bzimage(&kernel) {
            return Err(BootError::Bundle(format!("{} is not a bzImage", linux.bzimage.display())));
        }
        let initrd = read(&linux.initramfs)?;
        if !initrd.starts_with(crate::cpio::MAGIC) {
            return Err(BootError::Bundle(format!("{} is not a newc cpio archive", linux.initramfs.display())));
        }
        w.add(LINUX_KERNEL_ENTRY, EntryKind::LinuxKernel, 0, &kernel).map_err(|e| BootError::Bundle(e.to_string()))?;
        w.add(LINUX_INITRD_ENTRY, EntryKind::Initramfs, 0, &initrd).map_err(|e| BootError::Bundle(e.to_string()))?;
    }
    Ok(w.finish())
}

/// Writes the disk image for `firmware` to `out`, with `bundle` as the ramdisk. With
/// `pad_for_bochs` the image is padded to whole cylinders.
pub fn make_disk_image(
    kernel: &Path,
    bundle: &Path,
    firmware: Firmware,
    out: &Path,
    pad_for_bochs: bool,
) -> Result<(), BootError> {
    let mut config = BootConfig::default();
    config.frame_buffer_logging = false;
    config.serial_logging = false;
    let mut builder = DiskImageBuilder::new(kernel.to_path_buf());
    builder.set_ramdisk(bundle.to_path_buf()).set_boot_config(&config);
    let made = match firmware {
        Firmware::Bios => builder.create_bios_image(out),
        Firmware::Uefi => builder.create_uefi_image(out),
    };
    made.map_err(|e| BootError::Image(format!("{e:#}")))?;
    if pad_for_bochs {
        let len = std::fs::metadata(out).map_err(io_err("reading the disk image size"))?.len();
        let padded = len.div_ceil(BOCHS_CYLINDER_BYTES) * BOCHS_CYLINDER_BYTES;
        let f = std::fs::OpenOptions::new().write(true).open(out).map_err(io_err("opening the disk image"))?;
        f.set_len(padded).map_err(io_err("padding the disk image"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_abi::bundle::Bundle;

    #[test]
    fn guest_arg_needs_name_and_path() {
        assert_eq!(parse_guest_arg("hello=/x/y").unwrap(), ("hello".to_string(), PathBuf::from("/x/y")));
        assert!(parse_guest_arg("hello").is_err());
        assert!(parse_guest_arg("=/x").is_err());
        assert!(parse_guest_arg("a=").is_err());
    }

    #[test]
    fn later_guest_replaces_earlier_of_same_name_and_non_elf_is_refused() {
        let dir = std::env::temp_dir().join(format!("boot-image-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.elf");
        let b = dir.join("b.elf");
        let c = dir.join("c.txt");
        std::fs::write(&a, b"\x7fELFaaaa").unwrap();
        std::fs::write(&b, b"\x7fELFbbbb").unwrap();
        std::fs::write(&c, b"text").unwrap();
        let spec = BundleSpec {
            guests: vec![("g".into(), a.clone()), ("g".into(), b.clone())],
            config: vec!["loglevel=debug".into()],
            linux: None,
        };
        let bytes = build_bundle(&spec).unwrap();
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(bundle.find("g", EntryKind::Elf).unwrap().data, b"\x7fELFbbbb");
        assert_eq!(bundle.find("config", EntryKind::Config).unwrap().data, b"loglevel=debug");
        let bad = BundleSpec { guests: vec![("t".into(), c)], config: vec![], linux: None };
        assert!(matches!(build_bundle(&bad), Err(BootError::Bundle(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn linux_kernel_and_initramfs_go_in_as_their_own_kinds_and_are_checked() {
        let dir = std::env::temp_dir().join(format!("boot-image-linux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut kernel = vec![0u8; 0x400];
        kernel[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
        kernel[0x202..0x206].copy_from_slice(b"HdrS");
        let (bz, initrd, elf) = (dir.join("bzImage"), dir.join("initramfs.cpio"), dir.join("g.elf"));
        std::fs::write(&bz, &kernel).unwrap();
        let mut w = crate::cpio::CpioWriter::new();
        w.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        let archive = w.finish();
        std::fs::write(&initrd, &archive).unwrap();
        std::fs::write(&elf, b"\x7fELFgggg").unwrap();
        let linux = LinuxArtifacts {
            bzimage: bz.clone(),
            initramfs: initrd.clone(),
            kernel_version: "6.1.0-48-amd64".into(),
            kernel_package: "linux-image-6.1.0-48-amd64".into(),
        };
        let spec = BundleSpec { guests: vec![("g".into(), elf)], config: vec![], linux: Some(linux.clone()) };
        let bytes = build_bundle(&spec).unwrap();
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(bundle.find(LINUX_KERNEL_ENTRY, EntryKind::LinuxKernel).unwrap().data, kernel.as_slice());
        assert_eq!(bundle.find(LINUX_INITRD_ENTRY, EntryKind::Initramfs).unwrap().data, archive.as_slice());
        let elves: Vec<&str> = bundle.entries().filter(|e| e.kind == EntryKind::Elf).map(|e| e.name).collect();
        assert_eq!(elves, ["g"], "dom0's image list stays ELF only");
        // A kernel that is not a bzImage is refused.
        std::fs::write(&bz, b"\x7fELF").unwrap();
        let bad = BundleSpec { linux: Some(linux), ..spec };
        assert!(matches!(build_bundle(&bad), Err(BootError::Bundle(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
