//! Builds the bare-metal artifacts (hypervisor, dom0, guest images) for `x86_64-unknown-none`
//! with a nested `cargo build` into its own target directory, so it never waits on the lock of
//! the `cargo run`/`cargo test` that started us.

use crate::{BootError, io_err, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target all bare-metal code is built for.
pub const BARE_TARGET: &str = "x86_64-unknown-none";

/// A guest image the runner packs into the boot bundle by default.
#[derive(Clone, Copy, Debug)]
pub struct GuestSpec {
    /// Name in the bundle (what `images` lists and `create` takes).
    pub image: &'static str,
    /// Cargo package that builds it.
    pub package: &'static str,
    /// Binary target in that package.
    pub bin: &'static str,
}

/// Guest images built and bundled by default.
pub const DEFAULT_GUESTS: &[GuestSpec] = &[
    GuestSpec { image: "dom0", package: "dom0", bin: "dom0" },
    GuestSpec { image: "hello", package: "guests", bin: "hello" },
    GuestSpec { image: "memory", package: "guests", bin: "memory" },
    GuestSpec { image: "hcfuzz", package: "guests", bin: "hcfuzz" },
    GuestSpec { image: "triple-fault", package: "guests", bin: "triple-fault" },
    GuestSpec { image: "spinner", package: "guests", bin: "spinner" },
    GuestSpec { image: "bench", package: "guests", bin: "bench" },
    GuestSpec { image: "unpriv", package: "guests", bin: "unpriv" },
    GuestSpec { image: "ticker", package: "guests", bin: "ticker" },
    GuestSpec { image: "demo", package: "guests", bin: "demo" },
    GuestSpec { image: "cowbench", package: "guests", bin: "cowbench" },
    GuestSpec { image: "xstate", package: "guests", bin: "xstate" },
    GuestSpec { image: "userspace", package: "guests", bin: "userspace" },
    GuestSpec { image: "upcall", package: "guests", bin: "upcall" },
    GuestSpec { image: "cr8-tpr", package: "guests", bin: "cr8-tpr" },
    GuestSpec { image: "swapgs-kgs", package: "guests", bin: "swapgs-kgs" },
    GuestSpec { image: "tsc-aux", package: "guests", bin: "tsc-aux" },
    GuestSpec { image: "dr7-state", package: "guests", bin: "dr7-state" },
    GuestSpec { image: "hidden-features", package: "guests", bin: "hidden-features" },
    GuestSpec { image: "long-mode-exit", package: "guests", bin: "long-mode-exit" },
    GuestSpec { image: "fxsave-leak", package: "guests", bin: "fxsave-leak" },
    GuestSpec { image: "console-flood", package: "guests", bin: "console-flood" },
    GuestSpec { image: "quota-tables", package: "guests", bin: "quota-tables" },
    GuestSpec { image: "ckptwriter", package: "guests", bin: "ckptwriter" },
    GuestSpec { image: "lazytouch", package: "guests", bin: "lazytouch" },
    GuestSpec { image: "pagerd", package: "guests", bin: "pagerd" },
    GuestSpec { image: "selfckpt", package: "guests", bin: "selfckpt" },
];

/// The path of a built image by its bundle name.
pub fn guest_path(artifacts: &Artifacts, image: &str) -> Option<PathBuf> {
    artifacts.guests.iter().find(|(n, _)| n == image).map(|(_, p)| p.clone())
}

/// Paths of the built artifacts.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// The hypervisor ELF.
    pub hypervisor: PathBuf,
    /// Default guest images: (bundle name, ELF path).
    pub guests: Vec<(String, PathBuf)>,
}

/// Directory the nested build writes to.
pub fn bare_target_dir() -> PathBuf {
    workspace_root().join("target").join("bare")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

static BUILT: std::sync::Mutex<Option<Artifacts>> = std::sync::Mutex::new(None);

/// Builds the hypervisor and every default guest in release mode, once per process (tests
/// run many machines from one process).
pub fn build() -> Result<Artifacts, BootError> {
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(a) = built.as_ref() {
        return Ok(a.clone());
    }
    let a = build_uncached()?;
    *built = Some(a.clone());
    Ok(a)
}

fn build_uncached() -> Result<Artifacts, BootError> {
    let target_dir = bare_target_dir();
    // Two invocations: cargo unifies crate features across the packages of one build, and the
    // hypervisor's features (an allocator-backed guest-abi) must not leak into guest images.
    cargo_build(&["hypervisor"])?;
    let mut packages: Vec<&str> = DEFAULT_GUESTS.iter().map(|g| g.package).collect();
    packages.sort_unstable();
    packages.dedup();
    if !packages.is_empty() {
        cargo_build(&packages)?;
    }
    let out = target_dir.join(BARE_TARGET).join("release");
    let artifacts = Artifacts {
        hypervisor: out.join("hypervisor"),
        guests: DEFAULT_GUESTS.iter().map(|g| (g.image.to_string(), out.join(g.bin))).collect(),
    };
    for path in std::iter::once(&artifacts.hypervisor).chain(artifacts.guests.iter().map(|(_, p)| p)) {
        require_file(path)?;
    }
    Ok(artifacts)
}

fn cargo_build(packages: &[&str]) -> Result<(), BootError> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace_root())
        .args(["build", "--release", "--target", BARE_TARGET])
        .env("CARGO_TARGET_DIR", bare_target_dir())
        // Flags meant for the host build must not leak into the bare-metal one.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for p in packages {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().map_err(io_err("running cargo for the bare-metal build"))?;
    if status.success() {
        Ok(())
    } else {
        Err(BootError::Build(format!("`cargo build --target {BARE_TARGET} -p {}` exited with {status}", packages.join(" -p "))))
    }
}

fn require_file(path: &Path) -> Result<(), BootError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(BootError::Build(format!("expected artifact {} was not produced", path.display())))
    }
}
