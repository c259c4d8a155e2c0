//! One run of the system: make sure the emulator is installed, build the artifacts, pack the
//! bundle, make the disk image, start the emulator on a pty, run the console session and decide
//! the outcome from the exit status and the hypervisor's last `(hv) power off:` line.

use crate::console::{Input, Pty, Session, SessionEnd, SessionOptions, run_session};
use crate::emulator::{self, Accel, CpuFeature, Emulator, QEMU_STATUS_FAILURE, QEMU_STATUS_SUCCESS};
use crate::image::{self, BundleSpec, Firmware};
use crate::{BootError, artifacts, io_err, setup};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The dom0 shell's prompt; script lines are sent one per prompt.
pub const SHELL_PROMPT: &str = "dom0> ";
/// Line the hypervisor prints when it powers off normally.
pub const POWER_OFF_SUCCESS: &str = "(hv) power off: success";
/// Line the hypervisor prints when it powers off after a failure.
pub const POWER_OFF_FAILURE: &str = "(hv) power off: failure";

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// QEMU or Bochs.
    pub emulator: Emulator,
    /// Boot through OVMF (QEMU only).
    pub uefi: bool,
    /// Console input.
    pub input: Input,
    /// Stop the run after this long.
    pub timeout: Option<Duration>,
    /// Extra guest images (override defaults of the same name).
    pub guests: Vec<(String, PathBuf)>,
    /// Include the default guest images.
    pub default_guests: bool,
    /// Machine memory in MiB.
    pub mem_mib: u32,
    /// Repeatable instruction counts (QEMU `-icount`).
    pub icount: bool,
    /// QEMU acceleration.
    pub accel: Accel,
    /// Hypervisor configuration lines.
    pub config: Vec<String>,
    /// Copy console output to stdout while running.
    pub echo: bool,
    /// Keep the run directory (image, logs) even on success.
    pub keep: bool,
    /// Extra CPU features for QEMU TCG's `-cpu` (`+pku`, `+rdtscp`, ...).
    pub cpu_features: Vec<CpuFeature>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            emulator: Emulator::Qemu,
            uefi: false,
            input: Input::None,
            timeout: Some(Duration::from_secs(300)),
            guests: Vec::new(),
            default_guests: true,
            mem_mib: 512,
            icount: false,
            accel: Accel::Auto,
            config: Vec::new(),
            echo: false,
            cpu_features: Vec::new(),
            keep: false,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunResult {
    /// The machine powered off normally.
    Success,
    /// The hypervisor reported a failure (panic, exception, failed check).
    Failure(String),
    /// The timeout expired.
    Timeout,
    /// The user quit an interactive session.
    Quit,
    /// The emulator crashed or exited without the hypervisor powering off.
    EmulatorError(String),
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The result.
    pub result: RunResult,
    /// Serial console output (`\r` removed).
    pub serial: String,
    /// The emulator command line that ran.
    pub command_line: String,
    /// Directory with the image and emulator logs.
    pub run_dir: PathBuf,
    /// Wall-clock duration of the emulator run.
    pub elapsed: Duration,
    /// Script lines sent.
    pub lines_sent: usize,
}

impl RunOutcome {
    /// Process exit code for the runner: 0 success, 1 failure, 2 timeout, 3 emulator error,
    /// 130 user quit.
    pub fn exit_code(&self) -> i32 {
        match self.result {
            RunResult::Success => 0,
            RunResult::Failure(_) => 1,
            RunResult::Timeout => 2,
            RunResult::EmulatorError(_) => 3,
            RunResult::Quit => 130,
        }
    }

    /// Serial output lines.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.serial.lines()
    }
}

fn unique_run_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    std::env::temp_dir().join("cowvisor-runs").join(format!(
        "{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    ))
}

/// The line that best explains a failure: a panic, an exception, or the last error.
fn failure_reason(serial: &str) -> String {
    let interesting = |l: &&str| l.contains("PANIC") || l.contains("EXCEPTION");
    serial
        .lines()
        .find(interesting)
        .or_else(|| serial.lines().filter(|l| l.contains("error")).last())
        .unwrap_or("hypervisor reported failure")
        .trim()
        .to_string()
}

fn decide(emulator: Emulator, session: &Session, serial: &str, run_dir: &std::path::Path) -> RunResult {
    let success = serial.contains(POWER_OFF_SUCCESS);
    let failure = serial.contains(POWER_OFF_FAILURE);
    match &session.end {
        SessionEnd::TimedOut => RunResult::Timeout,
        SessionEnd::Quit => RunResult::Quit,
        SessionEnd::Exited(status) => {
            let code = status.code();
            match emulator {
                Emulator::Qemu => match code {
                    Some(QEMU_STATUS_SUCCESS) if success => RunResult::Success,
                    Some(QEMU_STATUS_FAILURE) => RunResult::Failure(failure_reason(serial)),
                    _ if failure => RunResult::Failure(failure_reason(serial)),
                    _ => RunResult::EmulatorError(format!(
                        "qemu exited with {status} without the hypervisor powering off; see {}",
                        run_dir.join("emulator.log").display()
                    )),
                },
                // Bochs always exits 1: the serial output is the only witness.
                Emulator::Bochs => {
                    if failure {
                        RunResult::Failure(failure_reason(serial))
                    } else if success {
                        RunResult::Success
                    } else {
                        RunResult::EmulatorError(format!(
                            "bochs exited with {status} without the hypervisor powering off; see {}",
                            run_dir.join("bochs.log").display()
                        ))
                    }
                }
            }
        }
    }
}

/// Builds everything and runs the machine once.
pub fn run(opts: &RunOptions) -> Result<RunOutcome, BootError> {
    match opts.emulator {
        Emulator::Qemu => setup::ensure_qemu(opts.uefi)?,
        Emulator::Bochs => setup::ensure_bochs()?,
    }
    if opts.uefi && opts.emulator == Emulator::Bochs {
        return Err(BootError::Usage("--uefi needs QEMU (Bochs has no UEFI firmware here)".into()));
    }
    let built = artifacts::build()?;
    let run_dir = unique_run_dir();
    std::fs::create_dir_all(&run_dir).map_err(io_err(format!("creating {}", run_dir.display())))?;

    let mut spec = BundleSpec { guests: Vec::new(), config: opts.config.clone() };
    if opts.default_guests {
        spec.guests.extend(built.guests.iter().cloned());
    }
    spec.guests.extend(opts.guests.iter().cloned());
    let bundle = image::build_bundle(&spec)?;
    let bundle_path = run_dir.join("bundle.bin");
    std::fs::write(&bundle_path, &bundle).map_err(io_err("writing the boot bundle"))?;
    let firmware = if opts.uefi { Firmware::Uefi } else { Firmware::Bios };
    let image_path = run_dir.join("disk.img");
    image::make_disk_image(&built.hypervisor, &bundle_path, firmware, &image_path, opts.emulator == Emulator::Bochs)?;

    let pty = Pty::open().map_err(io_err("opening a pty for the serial console"))?;
    let mut cmd = match opts.emulator {
        Emulator::Qemu => {
            emulator::qemu_command(&image_path, firmware, opts.mem_mib, opts.icount, opts.accel, &opts.cpu_features, &pty.path, &run_dir)?
        }
        Emulator::Bochs => emulator::bochs_command(&image_path, opts.mem_mib, &pty.path, &run_dir)?,
    };
    let command_line = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    );
    let log = std::fs::File::create(run_dir.join("emulator.log")).map_err(io_err("creating emulator.log"))?;
    let log2 = log.try_clone().map_err(io_err("duplicating emulator.log"))?;
    cmd.current_dir(&run_dir).stdin(Stdio::null()).stdout(log).stderr(log2);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(io_err(format!("starting {}", cmd.get_program().to_string_lossy())))?;
    let session_opts = SessionOptions {
        timeout: opts.timeout,
        input: opts.input.clone(),
        prompt: SHELL_PROMPT.to_string(),
        echo: opts.echo,
    };
    let session = match run_session(&mut child, &pty, &session_opts) {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BootError::Io { what: "console session".into(), source: e });
        }
    };
    let elapsed = started.elapsed();
    let serial = String::from_utf8_lossy(&session.output).replace('\r', "");
    let result = decide(opts.emulator, &session, &serial, &run_dir);
    if matches!(result, RunResult::Success | RunResult::Quit) && !opts.keep {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(RunOutcome { result, serial, command_line, run_dir, elapsed, lines_sent: session.lines_sent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reason_prefers_panic_and_exception_lines() {
        let s = "(hv) booting\n(hv) error: minor\n(hv) PANIC at x.rs:1: boom\n(hv) power off: failure\n";
        assert_eq!(failure_reason(s), "(hv) PANIC at x.rs:1: boom");
        assert_eq!(failure_reason("(hv) error: a\n(hv) error: b\n"), "(hv) error: b");
    }
}
