//! The Linux guest's `cowvisor_checkpoint` module (`tools/linux-checkpoint`, the kernel side
//! of a self-checkpoint: docs/self-checkpoint.md), built on the host against the headers of
//! the very kernel package the guest boots. The headers come as Debian packages like the
//! kernel (`apt-get download`, kept in `target/linux/debs/`), are unpacked under
//! `target/linux/headers/` and the module is built with the kernel's own kbuild:
//!
//! ```text
//! target/linux/headers/                  linux-headers-VER-amd64, -common, linux-kbuild-X.Y
//! target/linux/checkpoint-build/         the module's sources and kbuild's output
//! target/linux/cowvisor_checkpoint.ko    the module (becomes /lib/modules/ in the initramfs)
//! target/linux/checkpoint.stamp          the kernel package it was built for
//! ```

use crate::linux::{apt_get_download, describe_failure, find_deb, dpkg_extract_into, is_newer, not_downloaded, run_tool};
use crate::{BootError, io_err, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The module's file in `target/linux/` and in the initramfs' `/lib/modules/`.
pub const CHECKPOINT_MODULE_FILE: &str = "cowvisor_checkpoint.ko";
/// Its sources in the repository.
const SOURCES: &[&str] = &["Kbuild", "cowvisor_checkpoint.c"];

/// The three header packages of kernel package `linux-image-VER-FLAVOUR`
/// (`linux-headers-VER-FLAVOUR`, `linux-headers-VER-common`, `linux-kbuild-MAJOR.MINOR`).
pub fn header_packages(kernel_package: &str) -> Option<[String; 3]> {
    let release = kernel_package.strip_prefix("linux-image-")?;
    let (version, _flavour) = release.rsplit_once('-')?;
    let mut parts = version.split('.');
    let (major, minor) = (parts.next()?, parts.next()?.split('-').next()?);
    Some([format!("linux-headers-{release}"), format!("linux-headers-{version}-common"), format!("linux-kbuild-{major}.{minor}")])
}

/// The module for `kernel_package`, built if it is missing, older than its sources or built
/// for another kernel.
pub fn checkpoint_module(dir: &Path, kernel_package: &str) -> Result<PathBuf, BootError> {
    let out = dir.join(CHECKPOINT_MODULE_FILE);
    let stamp = dir.join("checkpoint.stamp");
    let src = workspace_root().join("tools").join("linux-checkpoint");
    let fresh = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == kernel_package)
        && SOURCES.iter().all(|f| is_newer(&out, &src.join(f)));
    if fresh {
        return Ok(out);
    }
    let packages = header_packages(kernel_package)
        .ok_or_else(|| BootError::Build(format!("no header packages known for kernel package {kernel_package}")))?;
    let debs = dir.join("debs");
    let missing: Vec<&str> = packages.iter().map(String::as_str).filter(|p| find_deb(&debs, p).is_none()).collect();
    if !missing.is_empty() {
        apt_get_download(&debs, &missing)?;
    }
    let headers = dir.join("headers");
    let _ = std::fs::remove_dir_all(&headers);
    for p in &packages {
        let deb = find_deb(&debs, p).ok_or_else(|| not_downloaded(&debs, p))?;
        dpkg_extract_into(&deb, &headers)?;
    }
    // The flavour's Makefile includes the common tree by its absolute installed path; point
    // it at the unpacked one.
    let release = &packages[0]["linux-headers-".len()..];
    let flavour_dir = headers.join("usr/src").join(&packages[0]);
    let common_dir = headers.join("usr/src").join(&packages[1]);
    let makefile = flavour_dir.join("Makefile");
    std::fs::write(&makefile, format!("include {}/Makefile\n", common_dir.display())).map_err(io_err(format!("writing {}", makefile.display())))?;
    let build = dir.join("checkpoint-build");
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(&build).map_err(io_err(format!("creating {}", build.display())))?;
    for f in SOURCES {
        std::fs::copy(src.join(f), build.join(f)).map_err(io_err(format!("copying {f}")))?;
    }
    eprintln!("(boot) building {CHECKPOINT_MODULE_FILE} for {release}");
    let result = run_tool(
        Command::new("make").arg("-C").arg(&flavour_dir).arg(format!("M={}", build.display())).arg("modules"),
        "sudo apt-get install make gcc-12 (the compiler Debian builds its kernel with)",
    )?;
    if !result.status.success() {
        return Err(BootError::Build(format!(
            "building {CHECKPOINT_MODULE_FILE} against {release} failed: {}; it needs make and gcc-12 (sudo apt-get install make gcc-12)",
            describe_failure(&result)
        )));
    }
    let built = build.join(CHECKPOINT_MODULE_FILE);
    std::fs::copy(&built, &out).map_err(io_err(format!("copying {}", built.display())))?;
    std::fs::write(&stamp, format!("{kernel_package}\n")).map_err(io_err(format!("writing {}", stamp.display())))?;
    // The unpacked headers are ~90 MB; the debs stay as the cache.
    let _ = std::fs::remove_dir_all(&headers);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_packages_follow_from_the_kernel_package() {
        let [flavour, common, kbuild] = header_packages("linux-image-6.1.0-48-amd64").unwrap();
        assert_eq!(flavour, "linux-headers-6.1.0-48-amd64");
        assert_eq!(common, "linux-headers-6.1.0-48-common");
        assert_eq!(kbuild, "linux-kbuild-6.1");
        assert!(header_packages("busybox-static").is_none());
    }
}
