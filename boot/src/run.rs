//! One run of the system: make sure the emulator is installed, build the artifacts, pack the
//! bundle, make the disk image, start the emulator on a pty, run the console session and decide
//! the outcome from the exit status and the hypervisor's last `(hv) power off:` line. dom0's
//! data disk (its image store) is attached as the secondary ATA master and locked for the run.

use crate::console::{Input, Pty, Session, SessionEnd, SessionOptions, run_session};
use crate::emulator::{self, Accel, CpuFeature, Emulator, QEMU_STATUS_FAILURE, QEMU_STATUS_SUCCESS};
use crate::image::{self, BundleSpec, Firmware};
use crate::store_cmd::{self, DiskOpenError};
use crate::{BootError, artifacts, io_err, linux, setup};
use std::fmt;
use std::path::{Path, PathBuf};
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
    /// With the default guests, also pack the Linux guest (Debian kernel + initramfs, fetched
    /// and built under `target/linux/`) as the bundle entries `linux` and `linux-initrd`.
    pub linux: bool,
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
    /// dom0's data disk.
    pub disk: DataDisk,
    /// Kill the emulator by its PID once the console shows this (a power cut for tests).
    pub kill_on: Option<String>,
    /// Prompts besides dom0's that script lines also wait for (a guest's shell, reached
    /// through dom0's `console DOMAIN`).
    pub extra_prompts: Vec<String>,
}

/// Which data disk (dom0's image store) a run attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataDisk {
    /// `target/store.img`, made on first use; left out (and said so) while another run holds
    /// it, so runs in parallel still boot. A test that needs the disk names its own.
    Default,
    /// This file, made if missing; an error if another process holds it.
    Path(PathBuf),
    /// None.
    None,
}

/// What a run did about its data disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskUse {
    /// Attached this file.
    Attached(PathBuf),
    /// Left out the default disk: another run held it.
    Busy(PathBuf),
    /// No data disk was asked for.
    Off,
}

impl DiskUse {
    /// The attached file, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Attached(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for DiskUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attached(p) => write!(f, "{}", p.display()),
            Self::Busy(p) => write!(f, "none ({} is in use by another run)", p.display()),
            Self::Off => f.write_str("none"),
        }
    }
}

/// Attempts at locking a named data disk before it counts as in use, and the wait between.
const DISK_LOCK_TRIES: u32 = 50;
const DISK_LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Makes, checks and locks the data disk `choice` asks for (`default` standing for the
/// default path). The returned file holds the lock; keep it until the emulator has exited.
pub fn prepare_disk(
    choice: &DataDisk,
    default: &Path,
    emulator: Emulator,
) -> Result<(DiskUse, Option<std::fs::File>), BootError> {
    let (path, is_default) = match choice {
        DataDisk::None => return Ok((DiskUse::Off, None)),
        DataDisk::Default => (default, true),
        DataDisk::Path(p) => (p.as_path(), false),
    };
    let bad = |m: String| BootError::Usage(format!("data disk {}: {m}", path.display()));
    store_cmd::create_disk(path).map_err(io_err(format!("making the data disk {}", path.display())))?;
    // A lock just released can linger for a moment: a process forked beside its holder keeps
    // a copy until it execs. A named disk gets a few seconds before it counts as in use.
    let mut tries = if is_default { 1 } else { DISK_LOCK_TRIES };
    let lock = loop {
        tries -= 1;
        match store_cmd::lock_disk(path) {
            Ok(f) => break f,
            Err(DiskOpenError::InUse) if is_default => return Ok((DiskUse::Busy(path.to_path_buf()), None)),
            Err(DiskOpenError::InUse) if tries > 0 => std::thread::sleep(DISK_LOCK_RETRY),
            Err(e) => return Err(bad(e.to_string())),
        }
    };
    let len = lock.metadata().map_err(io_err(format!("reading the size of {}", path.display())))?.len();
    if let Some(problem) = store_cmd::disk_size_problem(len) {
        return Err(bad(problem));
    }
    if emulator == Emulator::Bochs && len % emulator::CYLINDER_BYTES != 0 {
        return Err(bad(format!(
            "Bochs needs a whole number of {}-byte cylinders (16 heads x 63 sectors), and {len} bytes is not; \
             e.g. `truncate -s {} {}`",
            emulator::CYLINDER_BYTES,
            len / emulator::CYLINDER_BYTES * emulator::CYLINDER_BYTES,
            path.display()
        )));
    }
    if emulator == Emulator::Bochs && path.to_string_lossy().contains('"') {
        return Err(bad("Bochs cannot take a path with a double quote".into()));
    }
    // The emulator runs in the run directory: give it an absolute path.
    let path = std::fs::canonicalize(path).map_err(io_err(format!("resolving {}", path.display())))?;
    // Bochs marks an image in use with `IMAGE.lock` and leaves it behind when it is killed
    // (a timeout, a power-cut test); we hold the disk's own lock, so no Bochs of ours is
    // using it now and the marker is stale.
    let mut bochs_lock = path.clone().into_os_string();
    bochs_lock.push(".lock");
    let _ = std::fs::remove_file(bochs_lock);
    Ok((DiskUse::Attached(path), Some(lock)))
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
            linux: true,
            mem_mib: 512,
            icount: false,
            accel: Accel::Auto,
            config: Vec::new(),
            echo: false,
            cpu_features: Vec::new(),
            keep: false,
            disk: DataDisk::Default,
            kill_on: None,
            extra_prompts: Vec::new(),
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
    /// The emulator was killed when the console showed `kill_on`.
    Killed,
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
    /// The data disk it had.
    pub disk: DiskUse,
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
            RunResult::Killed => 2,
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
        SessionEnd::Killed => RunResult::Killed,
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

    let mut spec = BundleSpec { guests: Vec::new(), config: opts.config.clone(), linux: None };
    if opts.default_guests {
        spec.guests.extend(built.guests.iter().cloned());
        if opts.linux {
            spec.linux = Some(linux::linux_artifacts()?);
        }
    }
    spec.guests.extend(opts.guests.iter().cloned());
    let bundle = image::build_bundle(&spec)?;
    let bundle_path = run_dir.join("bundle.bin");
    std::fs::write(&bundle_path, &bundle).map_err(io_err("writing the boot bundle"))?;
    let firmware = if opts.uefi { Firmware::Uefi } else { Firmware::Bios };
    let image_path = run_dir.join("disk.img");
    image::make_disk_image(&built.hypervisor, &bundle_path, firmware, &image_path, opts.emulator == Emulator::Bochs)?;

    // Held until this function returns, after the emulator has exited.
    let (disk, _disk_lock) = prepare_disk(&opts.disk, &store_cmd::default_disk_path(), opts.emulator)?;

    let pty = Pty::open().map_err(io_err("opening a pty for the serial console"))?;
    let mut cmd = match opts.emulator {
        Emulator::Qemu => emulator::qemu_command(
            &image_path,
            firmware,
            opts.mem_mib,
            opts.icount,
            opts.accel,
            &opts.cpu_features,
            disk.path(),
            &pty.path,
            &run_dir,
        )?,
        Emulator::Bochs => emulator::bochs_command(&image_path, opts.mem_mib, disk.path(), &pty.path, &run_dir)?,
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
        extra_prompts: opts.extra_prompts.clone(),
        echo: opts.echo,
        kill_on: opts.kill_on.clone(),
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
    Ok(RunOutcome { result, serial, command_line, disk, run_dir, elapsed, lines_sent: session.lines_sent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_disk_is_made_checked_and_locked_for_the_run() {
        let dir = std::env::temp_dir().join(format!("run-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let default = dir.join("store.img");
        assert_eq!(prepare_disk(&DataDisk::None, &default, Emulator::Qemu).unwrap().0, DiskUse::Off);
        assert!(!default.exists());

        // Made on first use; held for the run.
        let (used, lock) = prepare_disk(&DataDisk::Default, &default, Emulator::Bochs).unwrap();
        assert_eq!(used, DiskUse::Attached(std::fs::canonicalize(&default).unwrap()));
        assert_eq!(std::fs::metadata(&default).unwrap().len(), store_cmd::DEFAULT_DISK_BYTES);
        // Another run leaves the default disk out, but refuses a disk it was told to use.
        let busy = prepare_disk(&DataDisk::Default, &default, Emulator::Qemu).unwrap().0;
        assert_eq!(busy, DiskUse::Busy(default.clone()));
        let err = prepare_disk(&DataDisk::Path(default.clone()), &default, Emulator::Qemu).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(lock);

        let sized = |name: &str, len: u64| {
            let p = dir.join(name);
            std::fs::File::create(&p).unwrap().set_len(len).unwrap();
            DataDisk::Path(p)
        };
        let err = prepare_disk(&sized("odd.img", (16 << 20) + 100), &default, Emulator::Qemu).unwrap_err();
        assert!(err.to_string().contains("512-byte sectors"), "{err}");
        let err = prepare_disk(&sized("small.img", 1 << 20), &default, Emulator::Qemu).unwrap_err();
        assert!(err.to_string().contains("8 MiB"), "{err}");
        // Whole sectors but not whole cylinders: QEMU takes it, Bochs does not.
        let uneven = sized("uneven.img", 16 << 20);
        assert!(matches!(prepare_disk(&uneven, &default, Emulator::Qemu).unwrap().0, DiskUse::Attached(_)));
        let err = prepare_disk(&uneven, &default, Emulator::Bochs).unwrap_err();
        assert!(err.to_string().contains("cylinders"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failure_reason_prefers_panic_and_exception_lines() {
        let s = "(hv) booting\n(hv) error: minor\n(hv) PANIC at x.rs:1: boom\n(hv) power off: failure\n";
        assert_eq!(failure_reason(s), "(hv) PANIC at x.rs:1: boom");
        assert_eq!(failure_reason("(hv) error: a\n(hv) error: b\n"), "(hv) error: b");
    }
}
