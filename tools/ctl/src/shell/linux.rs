//! `create` of an unmodified Linux kernel (a bzImage in the boot bundle): the kernel with its
//! initramfs (the image named `KERNEL-initrd`, unless `initrd=NAME` says otherwise), the
//! standard command line for the emulated PC platform with the user's text appended, and
//! a memory default large enough to decompress a distribution kernel.

use super::{Image, Shell};
use crate::control::Hypercalls;
use crate::linux::{BzImage, LaunchLinux, default_cmdline, launch_linux};
use alloc::format;
use alloc::string::String;
use core::fmt::Write;
use guest_abi::HvResult;
use guest_abi::domctl::name_str;

/// RAM of a Linux domain unless `mem=` says otherwise.
pub const LINUX_MEM_MIB: u64 = 128;

/// Whether an image is a Linux bzImage rather than one of our ELF kernels.
pub fn is_linux(image: &Image) -> bool {
    BzImage::parse(image.data).is_ok()
}

/// The name of a kernel's default initramfs image.
pub fn initrd_name(kernel: &str) -> String {
    format!("{kernel}-initrd")
}

impl<H: Hypercalls> Shell<H> {
    pub(super) fn create_linux(
        &mut self,
        kernel: Image,
        name: &str,
        mem_mib: u64,
        cmdline: &str,
        paused: bool,
        out: &mut dyn Write,
    ) -> HvResult<()> {
        let initrd = self.images.iter().find(|i| i.name == initrd_name(kernel.name)).map(|i| i.data).unwrap_or(&[]);
        let mem_bytes = mem_mib.checked_mul(1 << 20).ok_or(guest_abi::HvError::InvalidArgument)?;
        let mut line = default_cmdline(self.tsc_khz);
        if !cmdline.is_empty() {
            line.push(' ');
            line.push_str(cmdline);
        }
        let spec = LaunchLinux { kernel: kernel.data, initrd, name, mem_bytes, cmdline: &line, paused };
        match launch_linux(&mut self.ctl, &spec, self.call_insn, self.tsc_khz) {
            Ok(id) => {
                let info = self.ctl.info(id)?;
                let _ = writeln!(out, "created domain {id} {}", name_str(&info.name));
            }
            Err(e) => {
                let _ = writeln!(out, "error: {e}");
            }
        }
        Ok(())
    }
}
