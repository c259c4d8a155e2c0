//! What a successful build leaves in guest memory: segments, relocations, `.bss`, page
//! tables, GDT, start-of-day page and the initial vCPU context.

use super::synth::*;
use crate::boot_tables::{PTE_ACCESSED, PTE_DIRTY, PTE_HUGE, PTE_PRESENT, PTE_WRITABLE};
use crate::builder::{Built, build, plan_image};
use crate::error::BuildError;
use guest_abi::layout::*;
use guest_abi::start_info::{START_INFO_MAGIC, StartFlags, StartInfo};
use guest_abi::vcpu::VcpuContext;

fn built() -> (Built, VecMemory) {
    let mut mem = VecMemory::new(MEM_BYTES);
    let built = build(&pie(), &spec(), &mut mem).expect("synthetic PIE builds");
    (built, mem)
}

#[test]
fn pie_segments_land_at_image_base_with_their_file_bytes() {
    let (built, mem) = built();
    let elf = pie();
    assert_eq!(built.load_base, IMAGE_BASE_GPA);
    assert_eq!(mem.range(IMAGE_BASE_GPA, SEG0_BYTES), &elf[..SEG0_BYTES as usize]);
    let seg1 = IMAGE_BASE_GPA + SEG1_VADDR;
    for i in 0..DYNAMIC_OFFSET - SEG1_OFFSET {
        let gpa = seg1 + i;
        if (RELOC0_VADDR..RELOC0_VADDR + 8).contains(&(SEG1_VADDR + i)) {
            continue;
        }
        assert_eq!(mem.bytes[gpa as usize], seg1_byte(i), "byte at {gpa:#x}");
    }
}

#[test]
fn relative_relocations_are_applied_in_data_and_bss() {
    let (_, mem) = built();
    assert_eq!(mem.u64_at(IMAGE_BASE_GPA + RELOC0_VADDR), IMAGE_BASE_GPA + RELOC0_ADDEND);
    assert_eq!(mem.u64_at(IMAGE_BASE_GPA + RELOC1_VADDR), IMAGE_BASE_GPA + RELOC1_ADDEND);
    let elf = pie();
    let plan = plan_image(&elf, MEM_BYTES).expect("plan");
    assert_eq!(plan.relocations(), 2, "R_X86_64_NONE is not counted");
}

#[test]
fn bss_is_zeroed_and_memory_outside_the_image_is_untouched() {
    let (built, mem) = built();
    let seg1 = IMAGE_BASE_GPA + SEG1_VADDR;
    let bss_start = seg1 + SEG1_FILE_BYTES;
    let bss_end = seg1 + SEG1_MEM_BYTES;
    for gpa in bss_start..bss_end {
        if (IMAGE_BASE_GPA + RELOC1_VADDR..IMAGE_BASE_GPA + RELOC1_VADDR + 8).contains(&gpa) {
            continue;
        }
        assert_eq!(mem.bytes[gpa as usize], 0, "bss byte at {gpa:#x}");
    }
    assert_eq!(built.image_end, bss_end);
    // The gap between the segments and everything after the image keep the fill pattern.
    assert!(mem.range(IMAGE_BASE_GPA + SEG0_BYTES, SEG1_VADDR - SEG0_BYTES).iter().all(|&b| b == FILL_BYTE));
    assert!(mem.range(bss_end, MEM_BYTES - bss_end).iter().all(|&b| b == FILL_BYTE));
}

#[test]
fn image_is_written_in_a_few_large_writes() {
    let (_, mem) = built();
    // 2 segments + 1 bss run + 1 bss relocation + PML4 + PDPT + PDs + GDT + start info.
    assert!(mem.writes <= 9, "{} writes", mem.writes);
}

#[test]
fn relocation_straddling_file_bytes_and_bss_is_applied_whole() {
    let at = SEG1_VADDR + SEG1_FILE_BYTES - 4;
    let mut elf = pie();
    put_u64(&mut elf, rela(1, 0), at);
    let mut mem = VecMemory::new(MEM_BYTES);
    build(&elf, &spec(), &mut mem).expect("builds");
    assert_eq!(mem.u64_at(IMAGE_BASE_GPA + at), IMAGE_BASE_GPA + RELOC1_ADDEND);
    assert_eq!(mem.u64_at(IMAGE_BASE_GPA + at + 8), 0, "the rest of .bss is zero");
}

#[test]
fn page_tables_identity_map_4_gib_with_accessed_and_dirty_preset() {
    let (_, mem) = built();
    let table_flags = PTE_PRESENT | PTE_WRITABLE | PTE_ACCESSED | PTE_DIRTY;
    assert_eq!(mem.u64_at(BOOT_PML4_GPA), BOOT_PDPT_GPA | table_flags);
    for i in 1..512 {
        assert_eq!(mem.u64_at(BOOT_PML4_GPA + i * 8), 0, "PML4[{i}]");
    }
    for i in 0..512 {
        let want = if i < BOOT_PD_COUNT { (BOOT_PD_GPA + i * PAGE_SIZE) | table_flags } else { 0 };
        assert_eq!(mem.u64_at(BOOT_PDPT_GPA + i * 8), want, "PDPT[{i}]");
    }
    for i in 0..BOOT_PD_COUNT * 512 {
        let want = (i << 21) | table_flags | PTE_HUGE;
        assert_eq!(mem.u64_at(BOOT_PD_GPA + i * 8), want, "PD entry {i}");
    }
    assert_eq!(mem.u64_at(BOOT_PD_GPA + 2047 * 8) & !0xFFF, 0xFFE0_0000, "last 2 MiB below 4 GiB");
}

#[test]
fn gdt_page_holds_the_three_boot_descriptors_then_zeros() {
    let (_, mem) = built();
    for (i, d) in BOOT_GDT.iter().enumerate() {
        assert_eq!(mem.u64_at(BOOT_GDT_GPA + i as u64 * 8), *d);
    }
    assert!(mem.range(BOOT_GDT_GPA + 24, PAGE_SIZE - 24).iter().all(|&b| b == 0));
}

#[test]
fn start_info_page_describes_the_domain() {
    let (built, mem) = built();
    let si = &built.start_info;
    assert_eq!(si.magic, START_INFO_MAGIC);
    assert_eq!(si.domid, 7);
    assert_eq!(si.name(), "synthetic");
    assert_eq!(si.cmdline(), "seed=42 count=10");
    assert_eq!(si.flags, StartFlags::PRIVILEGED.bits());
    assert_eq!(si.parent, u32::MAX);
    assert_eq!(si.clone_index, 0);
    assert_eq!(si.call_insn, 1);
    assert_eq!(si.generation, 99);
    assert_eq!(si.mem_bytes, MEM_BYTES);
    assert_eq!(si.tsc_khz, 2_000_000);
    let names: std::vec::Vec<&str> = si.modules().iter().map(|m| m.name()).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(si.modules()[1].gpa, 0xC000_1000);
    let size = size_of::<StartInfo>() as u64;
    assert_eq!(mem.range(START_INFO_GPA, size), si.as_bytes());
    assert!(mem.range(START_INFO_GPA + size, PAGE_SIZE - size).iter().all(|&b| b == 0));
}

#[test]
fn context_starts_at_relocated_entry_in_long_mode() {
    let (built, mem) = built();
    let entry = IMAGE_BASE_GPA + ENTRY_VADDR;
    let want = VcpuContext::long_mode(entry, BOOT_STACK_TOP_GPA, BOOT_PML4_GPA, START_INFO_GPA, BOOT_GDT_GPA);
    assert_eq!(built.context, want);
    assert_eq!(built.context.rdi, START_INFO_GPA);
    assert_eq!(mem.range(entry, CODE.len() as u64), &CODE);
}

#[test]
fn fixed_address_executable_loads_where_linked_and_relocates_with_base_zero() {
    let mut elf = pie();
    put_u16(&mut elf, E_TYPE, 2);
    for seg in 0..3 {
        let v = get_u64(&elf, phdr(seg, P_VADDR));
        put_u64(&mut elf, phdr(seg, P_VADDR), v + IMAGE_BASE_GPA);
    }
    put_u64(&mut elf, E_ENTRY, IMAGE_BASE_GPA + ENTRY_VADDR);
    // Link-time addresses are absolute now.
    put_u64(&mut elf, dyn_value(0), IMAGE_BASE_GPA + RELA_OFFSET as u64);
    put_u64(&mut elf, rela(0, 0), IMAGE_BASE_GPA + RELOC0_VADDR);
    put_u64(&mut elf, rela(0, 16), 0x1234);
    put_u64(&mut elf, rela(1, 0), IMAGE_BASE_GPA + RELOC1_VADDR);
    let mut mem = VecMemory::new(MEM_BYTES);
    let built = build(&elf, &spec(), &mut mem).expect("ET_EXEC builds");
    assert_eq!(built.load_base, 0);
    assert_eq!(built.context.rip, IMAGE_BASE_GPA + ENTRY_VADDR);
    assert_eq!(mem.u64_at(IMAGE_BASE_GPA + RELOC0_VADDR), 0x1234);
    assert_eq!(mem.range(IMAGE_BASE_GPA, SEG0_BYTES), &elf[..SEG0_BYTES as usize]);
}

#[test]
fn cmdline_of_exactly_the_maximum_length_fits() {
    let long = "x".repeat(guest_abi::start_info::CMDLINE_MAX_BYTES);
    let spec = crate::builder::BuildSpec { cmdline: &long, ..spec() };
    let mut mem = VecMemory::new(MEM_BYTES);
    let built = build(&pie(), &spec, &mut mem).expect("maximum cmdline fits");
    assert_eq!(built.start_info.cmdline(), long);
}

#[test]
fn smallest_domain_holds_the_image() {
    let spec = crate::builder::BuildSpec { mem_bytes: MIN_DOMAIN_MEM_BYTES, ..spec() };
    let mut mem = VecMemory::new(MIN_DOMAIN_MEM_BYTES);
    assert!(build(&pie(), &spec, &mut mem).is_ok());
}

#[test]
fn write_errors_are_reported_with_their_address() {
    let mut mem = VecMemory::new(MEM_BYTES);
    mem.fail_with = Some(guest_abi::HvError::OutOfMemory);
    let err = build(&pie(), &spec(), &mut mem).unwrap_err();
    assert_eq!(err, BuildError::Write { gpa: IMAGE_BASE_GPA, error: guest_abi::HvError::OutOfMemory });
}

#[test]
fn errors_display_as_one_line() {
    let msg = std::format!("{}", BuildError::ImageTooLarge { need: 0x20_0000, have: 0x10_0000 });
    assert_eq!(msg, "image needs 0x200000 bytes of RAM, the domain has 0x100000");
}
