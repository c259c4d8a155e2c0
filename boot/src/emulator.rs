//! Command lines for the two emulators: QEMU (TCG with AMD SVM+NPT, or KVM with nesting) and
//! Bochs (Intel VMX+EPT, `corei7_skylake_x`). The serial port goes to a pty the runner owns.
//! dom0's data disk, when there is one, is the master of the secondary ATA channel (ports
//! 0x170-0x177, 0x376) on both: QEMU's q35 gets a PIIX3 IDE controller for it.

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

/// Heads and sectors per track Bochs assumes for a flat disk image; its size must be a whole
/// number of such cylinders.
pub const BOCHS_HEADS: u64 = 16;
/// See [`BOCHS_HEADS`].
pub const BOCHS_SECTORS_PER_TRACK: u64 = 63;
/// Bytes of one cylinder of [`BOCHS_HEADS`] x [`BOCHS_SECTORS_PER_TRACK`] sectors.
pub const CYLINDER_BYTES: u64 = BOCHS_HEADS * BOCHS_SECTORS_PER_TRACK * 512;

/// QEMU's `-device`/`-drive` arguments that hang `disk` (a raw file) as master on the
/// secondary channel of a PIIX3 IDE controller, so it answers at the legacy ports 0x170-0x177
/// and 0x376 on the q35 machine.
pub fn qemu_disk_args(disk: &Path) -> Vec<String> {
    // In QEMU's option syntax a comma in a value is written twice.
    let file = disk.display().to_string().replace(',', ",,");
    vec![
        "-device".into(),
        "piix3-ide,id=ide9".into(),
        "-drive".into(),
        format!("if=none,id=store,format=raw,file={file}"),
        "-device".into(),
        "ide-hd,drive=store,bus=ide9.1,unit=0".into(),
    ]
}

/// Builds the QEMU command; `cpu_features` are added to TCG's CPU model; `disk` is dom0's data
/// disk.
#[allow(clippy::too_many_arguments)]
pub fn qemu_command(
    image: &Path,
    firmware: Firmware,
    mem_mib: u32,
    icount: bool,
    accel: Accel,
    cpu_features: &[CpuFeature],
    disk: Option<&Path>,
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
        // The boot disk on the q35 AHCI controller, first in the boot order: SeaBIOS would
        // otherwise try the (unbootable) data disk on the PIIX3 controller first and stop.
        .arg("-drive")
        .arg(format!("if=none,id=boot,format=raw,file={}", image.display().to_string().replace(',', ",,")))
        .args(["-device", "ide-hd,drive=boot,bus=ide.0,bootindex=0"]);
    if let Some(disk) = disk {
        cmd.args(qemu_disk_args(disk));
    }
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

/// The Bochs configuration for one run; `disk` is dom0's data disk and its size in cylinders
/// (of [`CYLINDER_BYTES`]).
pub fn bochsrc(image: &Path, mem_mib: u32, disk: Option<(&Path, u64)>, serial_tty: &Path, log: &Path) -> String {
    let disk = match disk {
        Some((path, cylinders)) => format!(
            "ata1: enabled=1, ioaddr1=0x170, ioaddr2=0x370, irq=15\n\
             ata1-master: type=disk, path=\"{}\", mode=flat, cylinders={cylinders}, heads={BOCHS_HEADS}, \
             spt={BOCHS_SECTORS_PER_TRACK}\n",
            path.display()
        ),
        None => String::new(),
    };
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
         {disk}\
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
/// `disk` (dom0's data disk) must be a whole number of [`CYLINDER_BYTES`] cylinders.
pub fn bochs_command(
    image: &Path,
    mem_mib: u32,
    disk: Option<&Path>,
    serial_tty: &Path,
    run_dir: &Path,
) -> Result<Command, BootError> {
    let rc = run_dir.join("bochsrc");
    let commands = run_dir.join("bochs-commands");
    let log = run_dir.join("bochs.log");
    let disk = match disk {
        Some(path) => {
            let len = std::fs::metadata(path).map_err(io_err(format!("reading the size of {}", path.display())))?.len();
            Some((path, len / CYLINDER_BYTES))
        }
        None => None,
    };
    std::fs::write(&rc, bochsrc(image, mem_mib, disk, serial_tty, &log)).map_err(io_err("writing bochsrc"))?;
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
    fn the_data_disk_is_the_secondary_master_on_both_emulators() {
        let args = |c: &Command| c.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
        let dir = Path::new("/tmp");
        let qemu = |disk| qemu_command(Path::new("boot.img"), Firmware::Bios, 512, false, Accel::Tcg, &[], disk, dir, dir);
        let with = args(&qemu(Some(Path::new("/d/s,1.img"))).unwrap());
        let want = "-device piix3-ide,id=ide9 -drive if=none,id=store,format=raw,file=/d/s,,1.img \
                    -device ide-hd,drive=store,bus=ide9.1,unit=0";
        assert!(with.contains(want), "{with}");
        assert!(!args(&qemu(None).unwrap()).contains("piix3-ide"));

        let rc = bochsrc(Path::new("boot.img"), 512, Some((Path::new("/d/store.img"), 4161)), dir, dir);
        assert!(rc.contains("ata1: enabled=1, ioaddr1=0x170, ioaddr2=0x370, irq=15\n"), "{rc}");
        let master = "ata1-master: type=disk, path=\"/d/store.img\", mode=flat, cylinders=4161, heads=16, spt=63\n";
        assert!(rc.contains(master), "{rc}");
        assert!(rc.contains("ata0-master: type=disk, path=\"boot.img\", mode=flat\n"), "{rc}");
        assert!(!bochsrc(Path::new("boot.img"), 512, None, dir, dir).contains("ata1"));
    }

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
