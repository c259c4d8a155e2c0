//! Makes sure the emulators and firmware the runner needs are installed: installs Debian
//! packages with apt-get when running as root, otherwise says exactly what to run.

use crate::BootError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// OVMF code/vars pairs, in order of preference.
pub const OVMF_CANDIDATES: &[(&str, &str)] = &[
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
];
/// The Bochs BIOS image.
pub const BOCHS_BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// The VGA BIOS Bochs needs (from the `vgabios` package).
pub const BOCHS_VGABIOS: &str = "/usr/share/bochs/VGABIOS-lgpl-latest";
/// Bochs' headless-capable display plugin (from the `bochs-term` package).
pub const BOCHS_TERM_PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so";

/// Finds `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The OVMF code and vars files, if installed.
pub fn ovmf_files() -> Option<(PathBuf, PathBuf)> {
    OVMF_CANDIDATES
        .iter()
        .find(|(c, v)| Path::new(c).is_file() && Path::new(v).is_file())
        .map(|(c, v)| (PathBuf::from(c), PathBuf::from(v)))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn apt_get(args: &[&str]) -> bool {
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Installs `packages` with apt-get if root, else fails with the command to run.
fn install(what: &str, packages: &[&str]) -> Result<(), BootError> {
    let command = format!("sudo apt-get install -y {}", packages.join(" "));
    if !is_root() || which("apt-get").is_none() {
        return Err(BootError::Missing { what: what.to_string(), install: command });
    }
    eprintln!("(boot) {what} is missing; installing {} with apt-get", packages.join(" "));
    let mut install_args = vec!["install", "-y", "-qq"];
    install_args.extend_from_slice(packages);
    if apt_get(&install_args) || (apt_get(&["update", "-qq"]) && apt_get(&install_args)) {
        Ok(())
    } else {
        Err(BootError::Missing { what: what.to_string(), install: command })
    }
}

/// Makes sure QEMU (and OVMF when `uefi`) is installed.
pub fn ensure_qemu(uefi: bool) -> Result<(), BootError> {
    if which("qemu-system-x86_64").is_none() {
        install("qemu-system-x86_64", &["qemu-system-x86"])?;
    }
    if uefi && ovmf_files().is_none() {
        install("OVMF (UEFI firmware for QEMU)", &["ovmf"])?;
    }
    match (which("qemu-system-x86_64"), !uefi || ovmf_files().is_some()) {
        (Some(_), true) => Ok(()),
        _ => Err(BootError::Missing {
            what: "QEMU or OVMF".into(),
            install: "sudo apt-get install -y qemu-system-x86 ovmf".into(),
        }),
    }
}

/// Debian packages for Bochs with its BIOS, VGA BIOS and terminal display plugin.
pub const BOCHS_PACKAGES: [&str; 4] = ["bochs", "bochsbios", "vgabios", "bochs-term"];

/// Makes sure Bochs with its BIOS and VGA BIOS is installed.
pub fn ensure_bochs() -> Result<(), BootError> {
    let present = || {
        which("bochs").is_some()
            && [BOCHS_BIOS, BOCHS_VGABIOS, BOCHS_TERM_PLUGIN].iter().all(|f| Path::new(f).is_file())
    };
    if !present() {
        install("Bochs", &BOCHS_PACKAGES)?;
    }
    if present() {
        Ok(())
    } else {
        Err(BootError::Missing { what: "Bochs".into(), install: format!("sudo apt-get install -y {}", BOCHS_PACKAGES.join(" ")) })
    }
}

/// Whether `/dev/kvm` is usable and KVM has nested virtualization on, so a hypervisor can run
/// inside a KVM guest.
pub fn kvm_nested_available() -> bool {
    let kvm_ok = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    let nested = ["/sys/module/kvm_intel/parameters/nested", "/sys/module/kvm_amd/parameters/nested"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .any(|v| matches!(v.trim(), "Y" | "y" | "1"));
    kvm_ok && nested
}
