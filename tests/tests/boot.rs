//! Boot the hypervisor on both vendors and both firmwares; check the boot report, the log
//! level, and that deliberate faults are reported as failures (the harness can fail).

use boot::run::{RunOptions, RunResult};
use tests::*;

/// A boot without guest images: the hypervisor prints its report and powers off.
fn report_only(opts: RunOptions) -> RunOptions {
    RunOptions { default_guests: false, ..opts }
}

fn assert_boot_report(o: &boot::run::RunOutcome, virt: &str) {
    assert_has(o, "(hv) cowvisor");
    let mem = line_with(o, "(hv) memory: ").expect("memory line");
    let usable: u64 = mem.split_whitespace().nth(2).and_then(|v| v.parse().ok()).expect("usable KiB");
    assert!(usable > 400 * 1024, "expected ~512 MiB usable, got {usable} KiB: {mem}");
    assert!(mem.contains("free "), "free memory missing: {mem}");
    assert_has(o, &format!("(hv) virtualization: {virt}"));
    assert_has(o, "(hv) frame table consistent");
    assert_lacks(o, "EXCEPTION");
    assert_lacks(o, "PANIC");
}

#[test]
fn qemu_bios_boot_finds_memory_and_svm_npt() {
    let o = run_ok(&report_only(qemu(60)));
    assert_boot_report(&o, "svm+npt");
    assert_has(&o, "(hv) firmware: bios");
    assert_has(&o, "vendor amd");
}

#[test]
fn bochs_boot_finds_memory_and_vmx_ept() {
    let o = run_ok(&report_only(bochs(60)));
    assert_boot_report(&o, "vmx+ept");
    assert_has(&o, "vendor intel");
}

#[test]
fn qemu_uefi_boot_finds_memory_and_svm_npt() {
    let o = run_ok(&RunOptions { uefi: true, ..report_only(qemu(120)) });
    assert_boot_report(&o, "svm+npt");
    assert_has(&o, "(hv) firmware: uefi");
}

#[test]
fn log_level_comes_from_the_boot_configuration() {
    let quiet = run_ok(&RunOptions { config: vec!["loglevel=warn".into()], ..report_only(qemu(60)) });
    assert_lacks(&quiet, "(hv) memory: ");
    let chatty = run_ok(&RunOptions { config: vec!["loglevel=debug".into()], ..report_only(qemu(60)) });
    assert_has(&chatty, "(hv) debug: memory region");
}

#[test]
fn unknown_config_keys_are_reported_and_boot_goes_on() {
    let o = run_ok(&RunOptions { config: vec!["colour=blue".into()], ..report_only(qemu(60)) });
    assert_has(&o, "(hv) warning: unknown config key \"colour\"");
}

#[test]
fn extra_guest_images_are_listed_from_the_bundle() {
    let elf = boot::artifacts::build().expect("artifacts").hypervisor;
    let o = run_ok(&RunOptions { guests: vec![("extra".into(), elf)], ..report_only(qemu(60)) });
    assert_has(&o, "(hv) bundle: image extra (");
}

fn assert_fault_reported(opts: RunOptions, selftest: &str, expect: &str) {
    let o = run(&RunOptions { config: vec![format!("selftest={selftest}")], ..report_only(opts) });
    match &o.result {
        RunResult::Failure(reason) => assert!(reason.contains(expect), "reason {reason:?} lacks {expect:?}"),
        other => panic!("expected a reported failure, got {other:?}; serial:\n{}", o.serial),
    }
    assert_has(&o, "(hv) power off: failure");
}

#[test]
fn page_fault_in_the_hypervisor_is_a_failure_on_both_vendors() {
    for opts in both(60) {
        assert_fault_reported(opts, "pagefault", "#PF page fault (vector 14)");
    }
}

#[test]
fn invalid_opcode_reports_registers_and_fails() {
    let o = run(&RunOptions { config: vec!["selftest=ud".into()], ..report_only(qemu(60)) });
    assert!(matches!(o.result, RunResult::Failure(_)), "{:?}", o.result);
    assert_has(&o, "#UD invalid opcode (vector 6)");
    assert_has(&o, "(hv)   rax=");
    assert_has(&o, "(hv)   r12=");
}

#[test]
fn panic_is_a_failure_on_both_vendors() {
    for opts in both(60) {
        assert_fault_reported(opts, "panic", "PANIC at");
    }
}

#[test]
fn a_hung_machine_is_stopped_by_the_timeout() {
    for opts in both(8) {
        let o = run(&RunOptions { config: vec!["selftest=hang".into()], ..report_only(opts) });
        assert_eq!(o.result, RunResult::Timeout, "serial:\n{}", o.serial);
        assert!(o.elapsed.as_secs() < 20, "timeout took {:?}", o.elapsed);
    }
}
