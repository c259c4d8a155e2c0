//! `boot`: the command that builds the images and runs the system. Its interface is a contract
//! scripts rely on:
//!
//! ```text
//! boot [run] [--emulator qemu|bochs] [--uefi] [--script FILE] [--timeout SECS]
//!            [--guest NAME=PATH]... [--mem MIB] [--icount]
//!            [--log-level LEVEL] [--config KEY=VALUE]... [--accel auto|tcg] [--cpu-feature +FLAG]...
//!            [--disk PATH | --no-disk] [--no-default-guests] [--no-linux] [--keep] [--quiet]
//! boot store ls|get|put|rm|verify ... [--disk PATH]
//! ```
//! Exit status: 0 the machine powered off normally, 1 the hypervisor reported a failure,
//! 2 timeout, 3 the emulator crashed, 4 setup or build error, 64 bad arguments, 130 user quit.

use boot::console::Input;
use boot::emulator::{Accel, CpuFeature, Emulator};
use boot::run::{DataDisk, RunOptions, RunResult, run};
use boot::{BootError, image};
use std::io::IsTerminal;
use std::time::Duration;

const USAGE: &str = "\
usage: boot [run] [options]
       boot store ls|get|put|rm|verify ... [--disk PATH]   (see boot store --help)

Builds the hypervisor, dom0 and guest images, packs them into a bootable disk image and runs
it. The serial console is your terminal (Ctrl-] twice quits); dom0 first shows the copy-on-write
cloning demo, then gives you its shell.

options:
  --emulator qemu|bochs   QEMU (AMD SVM+NPT under TCG, or KVM if nested virtualization
                          works) or Bochs (Intel VMX+EPT). Default: qemu
  --uefi                  boot through OVMF instead of BIOS (QEMU only)
  --script FILE           type FILE's lines into the dom0 shell, one per prompt
  --timeout SECS          stop the machine after SECS seconds (default: none when
                          interactive, 600 otherwise)
  --guest NAME=PATH       add the ELF image PATH to the boot bundle as NAME (repeatable)
  --mem MIB               machine memory (default 512)
  --icount                repeatable instruction counts (QEMU -icount shift=0)
  --log-level LEVEL       hypervisor log level: off|error|warn|info|debug|trace
  --config KEY=VALUE      extra hypervisor boot configuration (repeatable)
  --accel auto|tcg        QEMU acceleration (default auto)
  --cpu-feature +FLAG     add a feature to QEMU TCG's CPU model, e.g. +pku or +rdtscp
                          (repeatable; QEMU then uses TCG even where KVM works)
  --disk PATH             dom0's data disk (its image store), a raw file made on first
                          use (2 GiB, sparse). Default: target/store.img, left out while
                          another run holds it
  --no-disk               no data disk
  --no-default-guests     do not bundle the default guest images (nor the Linux guest)
  --no-linux              do not bundle the Linux guest (Debian kernel `linux` and its
                          initramfs `linux-initrd`, fetched with apt-get into target/linux)
  --keep                  keep the run directory (disk image, emulator logs)
  --quiet                 do not copy the console to stdout

exit status: 0 powered off normally, 1 failure reported, 2 timeout, 3 emulator error,
4 setup/build error, 64 bad arguments, 130 quit with Ctrl-] twice";

fn parse(args: &[String]) -> Result<RunOptions, BootError> {
    let mut opts = RunOptions { echo: true, timeout: None, ..RunOptions::default() };
    let mut script = None;
    let mut timeout = None;
    let mut it = args.iter().peekable();
    if it.peek().map(|a| a.as_str()) == Some("run") {
        it.next();
    }
    let usage = |m: String| BootError::Usage(m);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| usage(format!("{name} needs a value")));
        match arg.as_str() {
            "--emulator" => {
                let v = value("--emulator")?;
                opts.emulator = Emulator::parse(&v).ok_or_else(|| usage(format!("unknown emulator {v:?} (qemu|bochs)")))?;
            }
            "--uefi" => opts.uefi = true,
            "--script" => script = Some(value("--script")?),
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: u64 = v.parse().map_err(|_| usage(format!("--timeout takes whole seconds, got {v:?}")))?;
                timeout = Some(Duration::from_secs(secs));
            }
            "--guest" => opts.guests.push(image::parse_guest_arg(&value("--guest")?)?),
            "--mem" => {
                let v = value("--mem")?;
                opts.mem_mib = v.parse().ok().filter(|&m| m >= 64).ok_or_else(|| usage(format!("--mem takes MiB >= 64, got {v:?}")))?;
            }
            "--icount" => opts.icount = true,
            "--log-level" => opts.config.push(format!("loglevel={}", value("--log-level")?)),
            "--config" => {
                let v = value("--config")?;
                if !v.contains('=') {
                    return Err(usage(format!("--config takes KEY=VALUE, got {v:?}")));
                }
                opts.config.push(v);
            }
            "--accel" => {
                opts.accel = match value("--accel")?.as_str() {
                    "auto" => Accel::Auto,
                    "tcg" => Accel::Tcg,
                    v => return Err(usage(format!("unknown accel {v:?} (auto|tcg)"))),
                }
            }
            "--cpu-feature" => {
                let v = value("--cpu-feature")?;
                let f = CpuFeature::parse(&v)
                    .ok_or_else(|| usage(format!("--cpu-feature takes +NAME or -NAME (a QEMU CPU flag), got {v:?}")))?;
                opts.cpu_features.push(f);
            }
            "--disk" => opts.disk = DataDisk::Path(value("--disk")?.into()),
            "--no-disk" => opts.disk = DataDisk::None,
            "--no-default-guests" => opts.default_guests = false,
            "--no-linux" => opts.linux = false,
            "--keep" => opts.keep = true,
            "--quiet" => opts.echo = false,
            "-h" | "--help" | "help" => return Err(usage(USAGE.to_string())),
            other => return Err(usage(format!("unknown argument {other:?}\n\n{USAGE}"))),
        }
    }
    match script {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| usage(format!("cannot read script {path}: {e}")))?;
            let lines = text
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .map(String::from)
                .collect();
            opts.input = Input::Script(lines);
            opts.timeout = Some(timeout.unwrap_or(Duration::from_secs(600)));
        }
        None => {
            let interactive = std::io::stdin().is_terminal();
            opts.input = Input::Forward;
            opts.timeout = timeout.or((!interactive).then_some(Duration::from_secs(600)));
            // Without a script, dom0 first plays the copy-on-write demo.
            if !opts.config.iter().any(|c| c.starts_with("guest.dom0.cmdline=")) {
                opts.config.push("guest.dom0.cmdline=demo".to_string());
            }
        }
    }
    Ok(opts)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("store") {
        std::process::exit(boot::store_cmd::main(&args[1..]));
    }
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    if matches!(opts.input, Input::Forward) && std::io::stdin().is_terminal() {
        eprintln!("(boot) console attached to your terminal; press Ctrl-] twice to quit");
    }
    let outcome = match run(&opts) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("(boot) error: {e}");
            std::process::exit(4);
        }
    };
    eprintln!("\r\n(boot) ran: {}", outcome.command_line);
    eprintln!("(boot) data disk: {}", outcome.disk);
    let verdict = match &outcome.result {
        RunResult::Success => "machine powered off normally".to_string(),
        RunResult::Failure(r) => format!("FAILURE: {r}"),
        RunResult::Timeout => "TIMEOUT: the machine was stopped".to_string(),
        RunResult::Killed => "KILLED: the machine was stopped at the console text it was to be killed at".to_string(),
        RunResult::Quit => "quit".to_string(),
        RunResult::EmulatorError(e) => format!("EMULATOR ERROR: {e}"),
    };
    eprintln!("(boot) {verdict} after {:.1}s", outcome.elapsed.as_secs_f64());
    if !matches!(outcome.result, RunResult::Success | RunResult::Quit) {
        eprintln!("(boot) run directory kept: {}", outcome.run_dir.display());
    }
    std::process::exit(outcome.exit_code());
}
