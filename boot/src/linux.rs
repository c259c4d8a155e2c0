//! The Linux guest: an unmodified Debian kernel and a small initramfs (busybox-static and our
//! static `cowvisor-agent`), fetched and built on the host and packed into the boot bundle as
//! the entries `linux` and `linux-initrd` (see `docs/linux-guest.md`).
//!
//! Everything lives under `target/linux/` and is made once:
//!
//! ```text
//! target/linux/debs/            the .debs `apt-get download` fetched (kept as the cache)
//! target/linux/bzImage          /boot/vmlinuz-* of the kernel package, byte for byte
//! target/linux/kernel.stamp     "PACKAGE\nVERSION\n" of that bzImage
//! target/linux/busybox          /bin/busybox of busybox-static
//! target/linux/initramfs.cpio   the uncompressed newc initramfs
//! target/agent/                 the nested cargo build of the agent
//! ```
//!
//! The kernel package is resolved with `apt-cache depends linux-image-amd64` on every call (a
//! local lookup), so a new Debian kernel ABI is fetched once and an unchanged one never.

use crate::cpio::CpioWriter;
use crate::{BootError, io_err, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Debian metapackage that depends on the current kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
/// The Debian package with a static busybox at `/bin/busybox`.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Cargo package and binary of the agent.
pub const AGENT_PACKAGE: &str = "linux-agent";
pub const AGENT_BIN: &str = "cowvisor-agent";
/// The self-checkpoint tool, built with the agent (`tools/agent/src/ckpt.rs`).
pub const CKPT_TOOL_BIN: &str = "cowvisor-ckpt";
/// Host target the agent is built for (statically linked against glibc).
pub const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Flags of the agent build: a static, non-PIE executable.
pub const AGENT_RUSTFLAGS: &str = "-C target-feature=+crt-static -C relocation-model=static";

/// The initramfs' `/init` (busybox sh): applets, mounts, host name, the agent, then a shell
/// with job control on the console forever.
pub const INIT_SCRIPT: &str = r#"#!/bin/sh
# cowvisor Linux guest: /init of the initramfs (busybox sh, pid 1).
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mount -t tmpfs tmpfs /tmp
insmod /lib/modules/msr.ko
insmod /lib/modules/cowvisor_checkpoint.ko
hostname -F /etc/hostname
echo "cowvisor-linux: init"
# Made before the freeze: every clone shares it (the tests compare its checksum).
head -c 4096 /dev/urandom > /root/made-before-freeze
/sbin/cowvisor-agent
export HOME=/root
export PS1='\h:\w# '
cd /root
while true; do setsid cttyhack /bin/sh; done
"#;

/// The kernel's MSR driver as kept in `target/linux/` (it becomes /lib/modules/msr.ko).
pub const MSR_MODULE_FILE: &str = "msr.ko";

/// Directories of the initramfs with their permissions, parents first.
pub const INITRAMFS_DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("var", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("lib", 0o755),
    ("lib/modules", 0o755),
];

/// Character device nodes of the initramfs: (path, permissions, major, minor).
pub const INITRAMFS_DEVICES: &[(&str, u32, u32, u32)] =
    &[("dev/console", 0o600, 5, 1), ("dev/ttyS0", 0o660, 4, 64), ("dev/null", 0o666, 1, 3)];

/// The fetched and built Linux guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxArtifacts {
    /// The unmodified bzImage (`target/linux/bzImage`).
    pub bzimage: PathBuf,
    /// The uncompressed newc initramfs (`target/linux/initramfs.cpio`).
    pub initramfs: PathBuf,
    /// The kernel release, e.g. `6.1.0-48-amd64` (the `vmlinuz-*` suffix).
    pub kernel_version: String,
    /// The Debian package it came from, e.g. `linux-image-6.1.0-48-amd64`.
    pub kernel_package: String,
}

/// `target/linux/`.
pub fn linux_dir() -> PathBuf {
    workspace_root().join("target").join("linux")
}

/// `target/agent/`, the agent's own cargo target directory.
pub fn agent_target_dir() -> PathBuf {
    workspace_root().join("target").join("agent")
}

static MADE: std::sync::Mutex<Option<LinuxArtifacts>> = std::sync::Mutex::new(None);

/// Fetches the kernel and busybox, builds the agent and writes the initramfs, reusing what
/// `target/linux/` already holds; once per process. A missing or failing `apt-cache`,
/// `apt-get` or `dpkg-deb` gives an error that says what to install or run.
pub fn linux_artifacts() -> Result<LinuxArtifacts, BootError> {
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(a) = made.as_ref() {
        return Ok(a.clone());
    }
    let a = make(&linux_dir())?;
    *made = Some(a.clone());
    Ok(a)
}

fn make(dir: &Path) -> Result<LinuxArtifacts, BootError> {
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(io_err(format!("creating {}", debs.display())))?;
    // Parallel runs (tests) share target/linux: one fetches, the others wait for it.
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(io_err(format!("creating {}", lock_path.display())))?;
    lock.lock().map_err(io_err(format!("locking {}", lock_path.display())))?;

    let bzimage = dir.join("bzImage");
    let stamp_path = dir.join("kernel.stamp");
    let stamp = std::fs::read_to_string(&stamp_path).ok().and_then(|s| parse_stamp(&s));
    let package = match resolve_kernel_package() {
        Ok(p) => p,
        // Offline and without apt lists, a kernel fetched before still serves.
        Err(e) => match &stamp {
            Some((p, _)) if bzimage.is_file() => {
                eprintln!("(boot) {e}; using the cached {p}");
                p.clone()
            }
            _ => return Err(e),
        },
    };

    // Which packages must be downloaded.
    let msr_module = dir.join(MSR_MODULE_FILE);
    let kernel_cached = matches!(&stamp, Some((p, _)) if *p == package)
        && bzimage.is_file()
        && msr_module.is_file()
        && find_deb(&debs, &package).is_none_or(|deb| is_newer(&bzimage, &deb));
    let busybox = dir.join("busybox");
    let busybox_cached = find_deb(&debs, BUSYBOX_PACKAGE).is_some_and(|deb| is_newer(&busybox, &deb));
    let mut wanted = Vec::new();
    if !kernel_cached && find_deb(&debs, &package).is_none() {
        wanted.push(package.as_str());
    }
    if !busybox_cached && find_deb(&debs, BUSYBOX_PACKAGE).is_none() {
        wanted.push(BUSYBOX_PACKAGE);
    }
    if !wanted.is_empty() {
        apt_get_download(&debs, &wanted)?;
    }

    let kernel_version = if kernel_cached {
        stamp.map(|(_, v)| v).unwrap_or_default()
    } else {
        let deb = find_deb(&debs, &package).ok_or_else(|| not_downloaded(&debs, &package))?;
        let version = extract_kernel(dir, &deb, &bzimage)?;
        write_atomically(&stamp_path, format!("{package}\n{version}\n").as_bytes())?;
        version
    };
    if !busybox_cached {
        let deb = find_deb(&debs, BUSYBOX_PACKAGE).ok_or_else(|| not_downloaded(&debs, BUSYBOX_PACKAGE))?;
        extract_busybox(dir, &deb, &busybox)?;
    }

    let agent = build_agent()?;
    let ckpt_tool = agent.with_file_name(CKPT_TOOL_BIN);
    let ckpt_module = crate::linux_module::checkpoint_module(dir, &package)?;
    let read = |p: &Path| std::fs::read(p).map_err(io_err(format!("reading {}", p.display())));
    let parts = InitramfsParts {
        busybox: &read(&busybox)?,
        agent: &read(&agent)?,
        msr_module: &read(&msr_module)?,
        ckpt_tool: &read(&ckpt_tool)?,
        ckpt_module: &read(&ckpt_module)?,
    };
    let archive = initramfs(&parts)?;
    let initramfs = dir.join("initramfs.cpio");
    if std::fs::read(&initramfs).ok().as_deref() != Some(archive.as_slice()) {
        write_atomically(&initramfs, &archive)?;
    }
    drop(lock);
    Ok(LinuxArtifacts { bzimage, initramfs, kernel_version, kernel_package: package })
}

/// The first `Depends: linux-image-6...` of `apt-cache depends linux-image-amd64`.
pub fn parse_kernel_package(depends: &str) -> Option<String> {
    depends.lines().find_map(|l| {
        let l = l.trim().trim_start_matches('|');
        let dep = l.strip_prefix("Depends:")?.trim();
        let name = dep.split_whitespace().next()?;
        (name.starts_with("linux-image-6") && !name.contains('<')).then(|| name.to_string())
    })
}

fn parse_stamp(text: &str) -> Option<(String, String)> {
    let mut lines = text.lines();
    let package = lines.next()?.trim();
    let version = lines.next()?.trim();
    (!package.is_empty() && !version.is_empty()).then(|| (package.to_string(), version.to_string()))
}

/// Whether `data` is an x86 bzImage (boot protocol header "HdrS", version 2.00 or later).
pub fn is_bzimage(data: &[u8]) -> bool {
    data.len() > 0x208 && data[0x1FE..0x200] == [0x55, 0xAA] && data[0x202..0x206] == *b"HdrS"
}

pub(crate) fn run_tool(cmd: &mut Command, install: &str) -> Result<Output, BootError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BootError::Missing {
                what: format!("`{program}` (needed to fetch the Debian kernel and busybox for the Linux guest)"),
                install: format!("{install}; or leave the Linux guest out with --no-linux"),
            }
        } else {
            BootError::Io { what: format!("running {program}"), source: e }
        }
    })
}

pub(crate) fn describe_failure(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.contains("unsandboxed")).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() { format!("exit status {}", out.status) } else { format!("{} ({tail})", out.status) }
}

fn resolve_kernel_package() -> Result<String, BootError> {
    let out = run_tool(Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]), "sudo apt-get install apt")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_kernel_package(&text) {
        Some(p) if out.status.success() => Ok(p),
        _ => Err(BootError::Build(format!(
            "`apt-cache depends {KERNEL_METAPACKAGE}` names no linux-image-6* package ({}); \
             run `sudo apt-get update` (on a Debian 12 host), or pass --no-linux",
            if out.status.success() { "no Depends: linux-image-6... line".to_string() } else { describe_failure(&out) }
        ))),
    }
}

pub(crate) fn apt_get_download(debs: &Path, packages: &[&str]) -> Result<(), BootError> {
    let names = packages.join(" ");
    eprintln!("(boot) fetching {names} into {}", debs.display());
    let out =
        run_tool(Command::new("apt-get").arg("download").args(packages).current_dir(debs), "sudo apt-get install apt")?;
    if !out.status.success() {
        return Err(BootError::Build(format!(
            "apt-get download {names} failed: {}; run `cd {} && apt-get download {names}` \
             (after `sudo apt-get update` if a package is not found), or pass --no-linux",
            describe_failure(&out),
            debs.display()
        )));
    }
    Ok(())
}

pub(crate) fn not_downloaded(debs: &Path, package: &str) -> BootError {
    BootError::Build(format!("apt-get download {package} left no {package}_*.deb in {}", debs.display()))
}

/// The newest `PACKAGE_*.deb` in `debs`.
pub(crate) fn find_deb(debs: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(debs)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".deb")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}

/// Whether `output` exists and is at least as new as `input`.
pub(crate) fn is_newer(output: &Path, input: &Path) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (mtime(output), mtime(input)) {
        (Some(o), Some(i)) => o >= i,
        _ => false,
    }
}

/// `dpkg-deb -x DEB INTO` (INTO may already hold other packages' trees).
pub(crate) fn dpkg_extract_into(deb: &Path, into: &Path) -> Result<(), BootError> {
    let out = run_tool(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into), "sudo apt-get install dpkg")?;
    if !out.status.success() {
        return Err(BootError::Build(format!(
            "dpkg-deb -x {} failed: {}; delete it and run again to fetch it anew",
            deb.display(),
            describe_failure(&out)
        )));
    }
    Ok(())
}

/// `dpkg-deb -x DEB` into a scratch directory under `dir`, removed by the caller.
fn dpkg_extract(dir: &Path, deb: &Path, scratch: &str) -> Result<PathBuf, BootError> {
    let into = dir.join(scratch);
    let _ = std::fs::remove_dir_all(&into);
    let out = run_tool(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&into), "sudo apt-get install dpkg")?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&into);
        return Err(BootError::Build(format!(
            "dpkg-deb -x {} failed: {}; delete it and run again to fetch it anew",
            deb.display(),
            describe_failure(&out)
        )));
    }
    Ok(into)
}

/// Copies `boot/vmlinuz-*` of the kernel package to `bzimage` unmodified; its release.
fn extract_kernel(dir: &Path, deb: &Path, bzimage: &Path) -> Result<String, BootError> {
    eprintln!("(boot) extracting the kernel from {}", deb.display());
    let tree = dpkg_extract(dir, deb, "extract-kernel")?;
    let result = (|| {
        let boot = tree.join("boot");
        let found = std::fs::read_dir(&boot)
            .map_err(io_err(format!("reading {}", boot.display())))?
            .filter_map(Result::ok)
            .find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("vmlinuz-").map(|v| (v.to_string(), e.path()))
            });
        let (version, path) =
            found.ok_or_else(|| BootError::Build(format!("{} has no boot/vmlinuz-*", deb.display())))?;
        let data = std::fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
        if !is_bzimage(&data) {
            return Err(BootError::Build(format!("{} is not a bzImage", path.display())));
        }
        write_atomically(bzimage, &data)?;
        // The MSR driver (a module in Debian's config), for probing MSRs from the guest's shell.
        let module = tree.join(format!("lib/modules/{version}/kernel/arch/x86/kernel/msr.ko"));
        let data = std::fs::read(&module).map_err(io_err(format!("reading {}", module.display())))?;
        write_atomically(&dir.join(MSR_MODULE_FILE), &data)?;
        Ok(version)
    })();
    // The package's module tree is ~400 MB; only the bzImage is kept.
    let _ = std::fs::remove_dir_all(&tree);
    result
}

/// Copies `bin/busybox` of busybox-static to `busybox`.
fn extract_busybox(dir: &Path, deb: &Path, busybox: &Path) -> Result<(), BootError> {
    let tree = dpkg_extract(dir, deb, "extract-busybox")?;
    let path = tree.join("bin").join("busybox");
    let result = std::fs::read(&path)
        .map_err(io_err(format!("reading {} (from {})", path.display(), deb.display())))
        .and_then(|data| {
            if !is_static_elf(&data) {
                return Err(BootError::Build(format!("{} is not a static ELF executable", path.display())));
            }
            write_atomically(busybox, &data)
        });
    let _ = std::fs::remove_dir_all(&tree);
    result
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), BootError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data).map_err(io_err(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_err(format!("renaming {} to {}", tmp.display(), path.display())))
}

/// Whether `data` is an x86-64 ELF executable without a program interpreter (statically
/// linked, so it runs in an initramfs without a libc).
pub fn is_static_elf(data: &[u8]) -> bool {
    let u16_at = |at: usize| data.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| data.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
    let u64_at = |at: usize| data.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    if data.len() < 64 || data[..4] != *b"\x7fELF" || data[4] != 2 || u16_at(18) != Some(62) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else { return false };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        matches!(u32_at(at), Some(t) if t != PT_INTERP)
    })
}

/// Builds the agent: a nested `cargo build --release -p linux-agent` for the host target,
/// statically linked, in `target/agent`. Returns the binary.
pub fn build_agent() -> Result<PathBuf, BootError> {
    let target_dir = agent_target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "-p", AGENT_PACKAGE, "--target", AGENT_TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", AGENT_RUSTFLAGS)
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .map_err(io_err("running cargo for the Linux agent"))?;
    if !status.success() {
        return Err(BootError::Build(format!(
            "`cargo build --release -p {AGENT_PACKAGE} --target {AGENT_TARGET}` (RUSTFLAGS={AGENT_RUSTFLAGS}) exited with \
             {status}; a static link needs glibc's libc.a: sudo apt-get install libc6-dev"
        )));
    }
    let bin = target_dir.join(AGENT_TARGET).join("release").join(AGENT_BIN);
    let data = std::fs::read(&bin).map_err(io_err(format!("reading {}", bin.display())))?;
    if !is_static_elf(&data) {
        return Err(BootError::Build(format!("{} is not statically linked", bin.display())));
    }
    Ok(bin)
}

/// What goes into the initramfs besides its fixed files.
pub struct InitramfsParts<'a> {
    pub busybox: &'a [u8],
    pub agent: &'a [u8],
    pub msr_module: &'a [u8],
    pub ckpt_tool: &'a [u8],
    pub ckpt_module: &'a [u8],
}

/// The initramfs (uncompressed newc) around busybox, the agent, the self-checkpoint tool and
/// the modules.
pub fn initramfs(p: &InitramfsParts<'_>) -> Result<Vec<u8>, BootError> {
    let (busybox, agent, msr_module) = (p.busybox, p.agent, p.msr_module);
    let bad = |e: crate::cpio::CpioError| BootError::Build(format!("initramfs: {e}"));
    let mut w = CpioWriter::new();
    for (dir, perm) in INITRAMFS_DIRS {
        w.dir(dir, *perm).map_err(bad)?;
    }
    w.file("bin/busybox", 0o755, busybox).map_err(bad)?;
    w.symlink("bin/sh", "busybox").map_err(bad)?;
    w.file("sbin/cowvisor-agent", 0o755, agent).map_err(bad)?;
    for (path, perm, major, minor) in INITRAMFS_DEVICES {
        w.char_device(path, *perm, *major, *minor).map_err(bad)?;
    }
    w.file("etc/hostname", 0o644, b"linux\n").map_err(bad)?;
    w.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n").map_err(bad)?;
    w.file("etc/group", 0o644, b"root:x:0:\n").map_err(bad)?;
    w.file("lib/modules/msr.ko", 0o644, msr_module).map_err(bad)?;
    w.file("lib/modules/cowvisor_checkpoint.ko", 0o644, p.ckpt_module).map_err(bad)?;
    w.file("sbin/cowvisor-ckpt", 0o755, p.ckpt_tool).map_err(bad)?;
    w.file("init", 0o755, INIT_SCRIPT.as_bytes()).map_err(bad)?;
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::{self, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};

    #[test]
    fn kernel_package_is_the_first_linux_image_6_dependency() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-48-amd64\n  Depends: linux-image-6.1.0-47-amd64\n";
        assert_eq!(parse_kernel_package(out).as_deref(), Some("linux-image-6.1.0-48-amd64"));
        let alt = "linux-image-amd64\n |Depends: linux-image-6.1.0-9-amd64\n  Depends: other\n";
        assert_eq!(parse_kernel_package(alt).as_deref(), Some("linux-image-6.1.0-9-amd64"));
        assert_eq!(parse_kernel_package("linux-image-amd64\n  Depends: firmware\n"), None);
        assert_eq!(parse_kernel_package("  Depends: <linux-image-6-virtual>\n"), None);
        assert_eq!(parse_kernel_package(""), None);
    }

    #[test]
    fn initramfs_contains_every_required_path() {
        let busybox = b"\x7fELFbusybox".to_vec();
        let agent = b"\x7fELFagent".to_vec();
        let parts = InitramfsParts {
            busybox: &busybox,
            agent: &agent,
            msr_module: b"\x7fELF module",
            ckpt_tool: b"\x7fELFckpt",
            ckpt_module: b"\x7fELF ckpt module",
        };
        let members = cpio::parse(&initramfs(&parts).unwrap()).unwrap();
        let get = |name: &str| members.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no {name}"));
        for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "var", "usr/bin", "usr/sbin"] {
            assert_eq!(get(d).file_type(), S_IFDIR, "{d}");
        }
        let bb = get("bin/busybox");
        assert_eq!((bb.file_type(), bb.perm(), bb.data.as_slice()), (S_IFREG, 0o755, busybox.as_slice()));
        let sh = get("bin/sh");
        assert_eq!((sh.file_type(), sh.data.as_slice()), (S_IFLNK, b"busybox".as_slice()));
        let ck = get("sbin/cowvisor-ckpt");
        assert_eq!((ck.file_type(), ck.perm(), ck.data.as_slice()), (S_IFREG, 0o755, b"\x7fELFckpt".as_slice()));
        assert_eq!(get("lib/modules/cowvisor_checkpoint.ko").data, b"\x7fELF ckpt module");
        let ag = get("sbin/cowvisor-agent");
        assert_eq!((ag.file_type(), ag.perm(), ag.data.as_slice()), (S_IFREG, 0o755, agent.as_slice()));
        for (name, major, minor) in [("dev/console", 5, 1), ("dev/ttyS0", 4, 64), ("dev/null", 1, 3)] {
            let d = get(name);
            assert_eq!((d.file_type(), d.header.rdevmajor, d.header.rdevminor), (S_IFCHR, major, minor), "{name}");
        }
        assert_eq!(get("etc/hostname").data, b"linux\n");
        assert!(String::from_utf8_lossy(&get("etc/passwd").data).starts_with("root:x:0:0:"));
        let init = get("init");
        assert_eq!((init.file_type(), init.perm(), init.data.as_slice()), (S_IFREG, 0o755, INIT_SCRIPT.as_bytes()));
        // Parents come before their children, so the kernel can create them in order.
        let pos = |n: &str| members.iter().position(|m| m.name == n).unwrap();
        assert!(pos("usr") < pos("usr/bin") && pos("bin") < pos("bin/busybox") && pos("dev") < pos("dev/console"));
    }

    #[test]
    fn init_mounts_runs_the_agent_and_loops_a_job_control_shell() {
        let lines: Vec<&str> = INIT_SCRIPT.lines().collect();
        assert_eq!(lines[0], "#!/bin/sh");
        let at =
            |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?}"));
        let order = [
            "/bin/busybox --install -s",
            "mount -t proc proc /proc",
            "mount -t sysfs sysfs /sys",
            "mount -t devtmpfs devtmpfs /dev",
            "mount -t tmpfs tmpfs /tmp",
            "hostname -F /etc/hostname",
            "echo \"cowvisor-linux: init\"",
            "/sbin/cowvisor-agent",
            "export PS1='\\h:\\w# '",
            "while true; do setsid cttyhack /bin/sh; done",
        ];
        for w in order.windows(2) {
            assert!(at(w[0]) < at(w[1]), "{:?} before {:?}", w[0], w[1]);
        }
        assert!(lines[at("devtmpfs")].contains("|| true"), "a kernel without devtmpfs still boots");
        assert!(INIT_SCRIPT.contains("export HOME=/root"));
    }

    #[test]
    fn bzimage_is_recognized_by_its_setup_header() {
        let mut data = vec![0u8; 0x400];
        assert!(!is_bzimage(&data));
        data[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
        data[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(is_bzimage(&data));
        assert!(!is_bzimage(b"\x7fELF"));
    }

    #[test]
    fn stamp_needs_package_and_version() {
        assert_eq!(
            parse_stamp("linux-image-6.1.0-48-amd64\n6.1.0-48-amd64\n"),
            Some(("linux-image-6.1.0-48-amd64".into(), "6.1.0-48-amd64".into()))
        );
        assert_eq!(parse_stamp("linux-image-6.1.0-48-amd64\n"), None);
        assert_eq!(parse_stamp(""), None);
    }

    #[test]
    fn static_elf_means_x86_64_elf_without_program_interpreter() {
        // A minimal ELF64 x86-64 header with one PT_LOAD program header, then with PT_INTERP.
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert!(is_static_elf(&elf));
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert!(!is_static_elf(&elf));
        if let Ok(sh) = std::fs::read("/bin/sh") {
            assert!(!is_static_elf(&sh), "/bin/sh is dynamically linked on Debian");
        }
    }

    /// Really fetches the Debian kernel and busybox-static and builds the initramfs (needs
    /// apt and the network on first use): `cargo test -p boot --lib -- --ignored linux`.
    #[test]
    #[ignore]
    fn linux_artifacts_are_fetched_and_built_on_this_host() {
        let t = std::time::Instant::now();
        let a = linux_artifacts().unwrap_or_else(|e| panic!("{e}"));
        let kernel = std::fs::read(&a.bzimage).unwrap();
        assert!(is_bzimage(&kernel));
        let members = cpio::parse(&std::fs::read(&a.initramfs).unwrap()).unwrap();
        assert!(members.iter().any(|m| m.name == "sbin/cowvisor-agent" && is_static_elf(&m.data)));
        assert!(members.iter().any(|m| m.name == "bin/busybox" && is_static_elf(&m.data)));
        assert!(a.kernel_package.ends_with(&a.kernel_version), "{a:?}");
        eprintln!(
            "linux: {} ({}) bzImage {} bytes, initramfs {} bytes, in {:.1}s",
            a.kernel_package,
            a.kernel_version,
            kernel.len(),
            std::fs::metadata(&a.initramfs).unwrap().len(),
            t.elapsed().as_secs_f64()
        );
    }
}
