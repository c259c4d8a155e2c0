//! Command lines for the two emulators: QEMU (TCG with AMD SVM+NPT, or KVM with nesting) and
//! Bochs (Intel VMX+EPT, `corei7_skylake_x`). The serial port goes to a pty the runner owns.

use crate::image::Firmware;
use crate::{BootError, io_err, setup};
use std::path::Path;
use std::process::Command;

/// Which emulator runs the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulator {
    /// QEMU: TCG with `-cpu qemu64,+svm,+npt`, or KVM when nested virtualization works.
    Qemu,
    /// Bochs with an Intel VMX+EPT CPU model.
    Bochs,
}

impl Emulator {
    /// Parses `qemu` or `bochs`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "qemu" => Some(Self::Qemu),
            "bochs" => Some(Self::Bochs),
            _ => None,
        }
    }
}

/// CPU acceleration for QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM if nested virtualization is available, else TCG.
    Auto,
    /// Always TCG (emulated AMD SVM+NPT).
    Tcg,
}

/// `-icount` arguments that make the guest TSC advance one tick per instruction, identically
/// run after run.
pub const ICOUNT_ARGS: &[&str] = &["-icount", "shift=0,sleep=off", "-rtc", "base=2024-01-01T00:00:00,clock=vm"];

/// A QEMU CPU feature switch for TCG's `-cpu` model: `+` or `-` and a lower-case flag name
/// (`+pku`, `-rdtscp`). Checked once, when it is made, so the command line takes it as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuFeature(String);

impl CpuFeature {
    /// `f` as a feature switch, if it is one.
    pub fn parse(f: &str) -> Option<Self> {
        let mut chars = f.chars();
        let valid = matches!(chars.next(), Some('+' | '-'))
            && f.len() > 1
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.');
        valid.then(|| Self(f.to_string()))
    }

    /// The switch as QEMU takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Builds the QEMU command; `cpu_features` are added to TCG's CPU model.
#[allow(clippy::too_many_arguments)]
pub fn qemu_command(
    image: &Path,
    firmware: Firmware,
    mem_mib: u32,
    icount: bool,
    accel: Accel,
    cpu_features: &[CpuFeature],
    serial_tty: &Path,
    run_dir: &Path,
) -> Result<Command, BootError> {
    let mut cmd = Command::new("qemu-system-x86_64");
    let kvm = accel == Accel::Auto && setup::kvm_nested_available() && !icount && cpu_features.is_empty();
    cmd.args(["-machine", "q35"]);
    if kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        let mut model = String::from("qemu64,+svm,+npt");
        for f in cpu_features {
            model.push(',');
            model.push_str(f.as_str());
        }
        cmd.args(["-accel", "tcg", "-cpu", &model]);
    }
    cmd.args(["-m", &mem_mib.to_string(), "-smp", "1"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-serial")
        .arg(serial_tty)
        .arg("-drive")
        .arg(format!("format=raw,file={}", image.display()));
    if firmware == Firmware::Uefi {
        let (code, vars) = setup::ovmf_files().ok_or_else(|| BootError::Missing {
            what: "OVMF".into(),
            install: "sudo apt-get install -y ovmf".into(),
        })?;
        let vars_copy = run_dir.join("ovmf-vars.fd");
        std::fs::copy(&vars, &vars_copy).map_err(io_err("copying the OVMF variable store"))?;
        cmd.arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={}", code.display()))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars_copy.display()));
    }
    if icount {
        cmd.args(ICOUNT_ARGS);
    }
    Ok(cmd)
}

/// QEMU exit status when the hypervisor wrote the success code to `isa-debug-exit`.
pub const QEMU_STATUS_SUCCESS: i32 = 33;
/// QEMU exit status when the hypervisor wrote the failure code.
pub const QEMU_STATUS_FAILURE: i32 = 35;

/// The Bochs configuration for one run.
pub fn bochsrc(image: &Path, mem_mib: u32, serial_tty: &Path, log: &Path) -> String {
    format!(
        "megs: {mem_mib}\n\
         romimage: file={bios}, options=fastboot\n\
         vgaromimage: file={vga}\n\
         cpu: model=corei7_skylake_x, count=1, ips=10000000, reset_on_triple_fault=0\n\
         clock: sync=none, time0=946684800\n\
         display_library: term\n\
         plugin_ctrl: speaker=0, gameport=0, parallel=0\n\
         sound: driver=dummy\n\
         boot: disk\n\
         ata0-master: type=disk, path=\"{image}\", mode=flat\n\
         log: {log}\n\
         panic: action=fatal, term=report\n\
         error: action=report\n\
         info: action=report\n\
         debug: action=ignore\n\
         port_e9_hack: enabled=1\n\
         com1: enabled=1, mode=term, dev={tty}\n",
        bios = setup::BOCHS_BIOS,
        vga = setup::BOCHS_VGABIOS,
        image = image.display(),
        log = log.display(),
        tty = serial_tty.display(),
    )
}

/// Builds the Bochs command; writes the config and the debugger's command file to `run_dir`.
pub fn bochs_command(image: &Path, mem_mib: u32, serial_tty: &Path, run_dir: &Path) -> Result<Command, BootError> {
    let rc = run_dir.join("bochsrc");
    let commands = run_dir.join("bochs-commands");
    let log = run_dir.join("bochs.log");
    std::fs::write(&rc, bochsrc(image, mem_mib, serial_tty, &log)).map_err(io_err("writing bochsrc"))?;
    // Bochs is built with its debugger: continue, then quit when the machine stops.
    std::fs::write(&commands, "c\nquit\n").map_err(io_err("writing the Bochs command file"))?;
    let mut cmd = Command::new("bochs");
    cmd.arg("-q").arg("-f").arg(&rc).arg("-rc").arg(&commands).env("TERM", "dumb");
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_features_are_a_sign_and_a_lower_case_flag_name() {
        for f in ["+pku", "-rdtscp", "+avx512-fp16", "+x2apic", "+sse4.2", "+la57_x"] {
            assert_eq!(CpuFeature::parse(f).map(|c| c.as_str().to_string()), Some(f.to_string()), "{f}");
        }
        for bad in ["", "+", "-", "pku", "+PKU", "+pku,+svm", "+pku x", "+p=1"] {
            assert_eq!(CpuFeature::parse(bad), None, "{bad:?}");
        }
    }
}
