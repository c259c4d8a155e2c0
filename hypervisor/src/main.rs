//! The hypervisor kernel's entry point: the bootloader jumps here and everything else lives in
//! the library. On the host this binary is an empty shell so `cargo test` can build the crate.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use bootloader_api::{BootInfo, BootloaderConfig, config::Mapping, entry_point};

/// Ask for all physical memory to be mapped; the hypervisor reaches frames through it.
#[cfg(target_os = "none")]
pub static BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.kernel_stack_size = 512 * 1024;
    config
};

#[cfg(target_os = "none")]
entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

#[cfg(target_os = "none")]
fn kernel_main(boot: &'static mut BootInfo) -> ! {
    hypervisor::start(boot)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor runs on bare metal: use `cargo run --release -p boot -- run`");
}
