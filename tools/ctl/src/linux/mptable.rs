//! The MP table (Intel MultiProcessor Specification 1.4) a Linux domain finds at 0xF0000:
//! one processor, an ISA bus, no I/O APIC (the hypervisor emulates none; the kernel boots
//! with `noapic`), LINT0 = ExtINT (the 8259) and LINT1 = NMI.

use alloc::vec::Vec;

/// Where the floating pointer structure goes (Linux scans 0xF0000-0xFFFFF).
pub const MP_TABLE_GPA: u64 = 0xF_0000;
/// The local APIC's MMIO base.
pub const LOCAL_APIC_ADDRESS: u32 = 0xFEE0_0000;
/// Specification revision 1.4.
pub const MP_SPEC_REV: u8 = 4;
/// Bytes of the floating pointer structure.
pub const FLOATING_POINTER_BYTES: usize = 16;
/// Bytes of the configuration table header.
pub const CONFIG_HEADER_BYTES: usize = 44;
/// Bytes of a processor entry.
pub const PROCESSOR_ENTRY_BYTES: usize = 20;
/// Bytes of every other base entry (bus, I/O APIC, interrupt assignments).
pub const SHORT_ENTRY_BYTES: usize = 8;
/// Entry types.
pub const ENTRY_PROCESSOR: u8 = 0;
pub const ENTRY_BUS: u8 = 1;
pub const ENTRY_IO_APIC: u8 = 2;
pub const ENTRY_IO_INTERRUPT: u8 = 3;
pub const ENTRY_LOCAL_INTERRUPT: u8 = 4;
/// Interrupt types of an interrupt assignment entry.
pub const INT_TYPE_NMI: u8 = 1;
pub const INT_TYPE_EXTINT: u8 = 3;
/// Processor flags: enabled, bootstrap processor.
pub const CPU_ENABLED: u8 = 1 << 0;
pub const CPU_BSP: u8 = 1 << 1;
/// Local APIC version of an integrated (xAPIC) local APIC.
pub const LOCAL_APIC_VERSION: u8 = 0x14;
/// CPU signature (CPUID.1:EAX form): family 6, model 0, stepping 0.
pub const CPU_SIGNATURE: u32 = 0x0600;
/// Feature flags (CPUID.1:EDX form): FPU and APIC.
pub const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
/// Destination local APIC id meaning "all".
pub const ALL_LOCAL_APICS: u8 = 0xFF;
/// Entries in the configuration table: processor, bus, LINT0, LINT1.
pub const ENTRY_COUNT: u16 = 4;
/// Bytes of the whole configuration table.
pub const CONFIG_TABLE_BYTES: usize = CONFIG_HEADER_BYTES + PROCESSOR_ENTRY_BYTES + 3 * SHORT_ENTRY_BYTES;
/// Bytes [`mp_table`] returns.
pub const MP_TABLE_BYTES: usize = FLOATING_POINTER_BYTES + CONFIG_TABLE_BYTES;

/// The byte that makes `bytes` sum to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b)))
}

fn local_interrupt(kind: u8, lint: u8) -> [u8; SHORT_ENTRY_BYTES] {
    // flags 0: polarity and trigger conform to the bus; source bus 0, IRQ 0.
    [ENTRY_LOCAL_INTERRUPT, kind, 0, 0, 0, 0, ALL_LOCAL_APICS, lint]
}

/// The floating pointer structure for a table at `gpa`, followed by the configuration table
/// (at `gpa + 16`).
pub fn mp_table(gpa: u32) -> Vec<u8> {
    let config_gpa = gpa + FLOATING_POINTER_BYTES as u32;
    let mut fp = [0u8; FLOATING_POINTER_BYTES];
    fp[0..4].copy_from_slice(b"_MP_");
    fp[4..8].copy_from_slice(&config_gpa.to_le_bytes());
    fp[8] = 1; // length in 16-byte units
    fp[9] = MP_SPEC_REV;
    // fp[11] = 0: a configuration table is present; fp[12] = 0: virtual-wire mode, no IMCR.
    fp[10] = checksum(&fp);

    let mut table = Vec::with_capacity(MP_TABLE_BYTES);
    table.extend_from_slice(&fp);
    let mut cfg = Vec::with_capacity(CONFIG_TABLE_BYTES);
    cfg.extend_from_slice(b"PCMP");
    cfg.extend_from_slice(&(CONFIG_TABLE_BYTES as u16).to_le_bytes());
    cfg.push(MP_SPEC_REV);
    cfg.push(0); // checksum, below
    cfg.extend_from_slice(b"COWVISOR");
    cfg.extend_from_slice(b"LINUX GUEST ");
    cfg.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    cfg.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    cfg.extend_from_slice(&ENTRY_COUNT.to_le_bytes());
    cfg.extend_from_slice(&LOCAL_APIC_ADDRESS.to_le_bytes());
    cfg.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    cfg.push(0); // extended table checksum
    cfg.push(0);

    cfg.extend_from_slice(&[ENTRY_PROCESSOR, 0, LOCAL_APIC_VERSION, CPU_ENABLED | CPU_BSP]);
    cfg.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
    cfg.extend_from_slice(&CPU_FEATURES.to_le_bytes());
    cfg.extend_from_slice(&[0; 8]);
    cfg.extend_from_slice(&[ENTRY_BUS, 0]);
    cfg.extend_from_slice(b"ISA   ");
    cfg.extend_from_slice(&local_interrupt(INT_TYPE_EXTINT, 0));
    cfg.extend_from_slice(&local_interrupt(INT_TYPE_NMI, 1));
    cfg[7] = checksum(&cfg);

    table.extend_from_slice(&cfg);
    table
}
