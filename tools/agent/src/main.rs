//! `cowvisor-agent`: run once by the initramfs' `/init`, as root. It parks the domain at the
//! freeze point (CPUID leaf `CPUID_LEAF_PARK`, unless the kernel command line says
//! `cowvisor.park=0`); when it resumes, it reads who it is now and, in a clone, sets the host
//! name `clone-N` and reseeds the kernel RNG from the hypervisor's entropy leaf, so no two
//! clones share the template's random state. Then it exits 0; every failure is a line on the
//! console, never a panic.

use core::arch::x86_64::{__cpuid_count, CpuidResult};
use guest_abi::agent::{
    CPUID_LEAF_ENTROPY, CPUID_LEAF_IDENTITY, CPUID_LEAF_PARK, Identity, IdentityFlags, PARK_ACCEPTED,
};
use guest_abi::hypercall::CPUID_LEAF_SIGNATURE;
use linux_agent::{
    NOT_PARKED_LINE, PREFIX, READY_LINE, RNDADDENTROPY, RNDRESEEDCRNG, Reseed, SEED_BYTES, SEED_FILES, clone_hostname,
    is_cowvisor_signature, leaf_bytes, park_requested, rand_pool_info, report_line,
};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Prints one line and flushes it (the console must show it before the domain pauses).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    // CPUID exits to the hypervisor from ring 3; the instruction itself has no side effects
    // on our memory.
    let CpuidResult { eax, ebx, ecx, edx } = __cpuid_count(leaf, sub);
    [eax, ebx, ecx, edx]
}

fn errno_of(e: &std::io::Error) -> (i32, String) {
    let errno = e.raw_os_error().unwrap_or(0);
    let mut message = e.to_string();
    if let Some(cut) = message.find(" (os error") {
        message.truncate(cut);
    }
    (errno, message)
}

fn set_hostname(name: &str) {
    // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        say(&format!("{PREFIX}sethostname {name} failed: {e}"));
    }
    if Path::new("/etc").is_dir()
        && let Err(e) = std::fs::write("/etc/hostname", format!("{name}\n"))
    {
        say(&format!("{PREFIX}writing /etc/hostname failed: {e}"));
    }
}

/// Hands 64 fresh bytes from the hypervisor to the kernel RNG, credited, and forces a reseed.
fn reseed_rng() -> Reseed {
    let mut seed = [0u8; SEED_BYTES];
    for chunk in seed.chunks_exact_mut(16) {
        chunk.copy_from_slice(&leaf_bytes(cpuid(CPUID_LEAF_ENTROPY, 0)));
    }
    #[repr(C, align(4))]
    struct PoolInfo([u8; linux_agent::RAND_POOL_INFO_BYTES]);
    let info = PoolInfo(rand_pool_info(&seed));
    let failed = |step: &'static str, e: std::io::Error| {
        let (errno, message) = errno_of(&e);
        Reseed::Failed { step, errno, message }
    };
    let urandom = match std::fs::OpenOptions::new().write(true).open("/dev/urandom") {
        Ok(f) => f,
        Err(e) => return failed("open /dev/urandom", e),
    };
    // SAFETY: RNDADDENTROPY reads a `struct rand_pool_info` whose buf_size (64) matches the
    // 64 bytes that follow its header in `info`.
    if unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY as _, &info as *const PoolInfo) } != 0 {
        return failed("RNDADDENTROPY", std::io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG as _) } != 0 {
        return failed("RNDRESEEDCRNG", std::io::Error::last_os_error());
    }
    Reseed::Done
}

/// A clone must not save or reuse the template's RNG seed on disk.
fn remove_seed_files() {
    for path in SEED_FILES {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => say(&format!("{PREFIX}removing {path} failed: {e}")),
        }
    }
}

fn main() {
    let cmdline = match std::fs::read_to_string("/proc/cmdline") {
        Ok(c) => c,
        Err(e) => {
            say(&format!("{PREFIX}cannot read /proc/cmdline ({e}); parking as by default"));
            String::new()
        }
    };
    let mut parked = false;
    if park_requested(&cmdline) {
        say(READY_LINE);
        parked = cpuid(CPUID_LEAF_PARK, 0)[0] == PARK_ACCEPTED;
        if !parked {
            say(NOT_PARKED_LINE);
        }
    }
    // Elsewhere (a host, another hypervisor) the identity leaves would be noise.
    if !parked && !is_cowvisor_signature(cpuid(CPUID_LEAF_SIGNATURE, 0)) {
        say(&format!("{PREFIX}not running under cowvisor (no signature at CPUID {CPUID_LEAF_SIGNATURE:#x})"));
        return;
    }
    let id = Identity::from_leaves(cpuid(CPUID_LEAF_IDENTITY, 0), cpuid(CPUID_LEAF_IDENTITY, 1));
    if id.flags.contains(IdentityFlags::CLONE) {
        set_hostname(&clone_hostname(id.clone_index));
        let reseed = reseed_rng();
        remove_seed_files();
        say(&report_line(&id, Some(&reseed)));
    } else {
        say(&report_line(&id, None));
    }
}
