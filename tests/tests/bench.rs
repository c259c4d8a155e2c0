//! The copy-on-write benchmarks, with the targets. Figures are guest TSC cycles read
//! around the operation; under QEMU `-icount` and under Bochs the TSC counts executed
//! instructions, so they are exact and repeatable and the targets can be asserted.

use tests::*;

fn bench_lines(o: &boot::run::RunOutcome, cmd: &str) -> Vec<String> {
    let out = output_of(o, cmd, 0);
    assert!(!out.iter().any(|l| l.starts_with("error")), "{cmd}: {out:?}");
    out
}

fn find<'a>(lines: &'a [String], needle: &str) -> &'a str {
    lines.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in {lines:?}"))
}

fn cow_clone_memory(label: &str, opts: boot::run::RunOptions, sizes: &str, count: u32) {
    let clone_cmd = format!("bench clone sizes={sizes} count={count}");
    let o = dom0(opts, &["bench cow", &clone_cmd, "bench memory count=32", "poweroff"]);
    assert_eq!(o.result, boot::run::RunResult::Success, "{}", o.serial);
    let cow = bench_lines(&o, "bench cow");
    let clone = bench_lines(&o, &clone_cmd);
    let memory = bench_lines(&o, "bench memory count=32");
    let all: Vec<String> = cow.iter().chain(&clone).chain(&memory).cloned().collect();
    record_figures(label, &all);

    let ratio = number_after(find(&cow, "ratio="), "ratio=");
    assert!(ratio <= 2.0, "copy-on-write fault vs 4 KiB copy + null hypercall: {ratio} > 2");
    let size_ratio = number_after(find(&clone, " vs "), "template:");
    assert!(size_ratio <= 1.5, "largest vs smallest template clone: {size_ratio} > 1.5");
    let faster = number_after(find(&clone, "clone is "), "clone is ");
    assert!(faster >= 100.0, "clone vs build: only {faster}x");
    let per_clone = find(&memory, "per clone");
    let hv_bytes = number_after(per_clone, "hypervisor ");
    assert!(hv_bytes <= 32.0 * 1024.0, "hypervisor memory per idle clone {hv_bytes} bytes > 32 KiB");
    assert!(find(&memory, "all memory back").contains(": yes"), "{memory:?}");
}

#[test]
fn svm_npt_copy_on_write_clone_and_memory_benchmarks_meet_their_targets() {
    let opts = boot::run::RunOptions { icount: true, mem_mib: 2560, ..qemu(900) };
    cow_clone_memory("QEMU TCG, AMD SVM+NPT, -icount (instructions)", opts, "16,256,1024", 10);
}

#[test]
fn vmx_ept_copy_on_write_clone_and_memory_benchmarks_meet_their_targets() {
    let opts = boot::run::RunOptions { mem_mib: 1600, ..bochs(900) };
    cow_clone_memory("Bochs, Intel VMX+EPT (instructions)", opts, "16,256,1024", 5);
}

#[test]
fn ten_thousand_clones_of_a_16_mib_template_run_on_a_2_gib_machine() {
    let opts = boot::run::RunOptions { mem_mib: 2048, ..qemu(900) };
    let o = dom0(opts, &["bench density mib=16", "info", "check", "poweroff"]);
    assert_eq!(o.result, boot::run::RunResult::Success, "{}", o.serial);
    let density: Vec<String> =
        bench_lines(&o, "bench density mib=16").into_iter().filter(|l| !l.contains("so far")).collect();
    record_figures("QEMU TCG, AMD SVM+NPT, 2 GiB machine: density", &density);
    let printed = number_after(find(&density, "printed their identity"), "bench density:");
    assert!(printed >= 10_000.0, "only {printed} clones printed their identity");
    let outcome = find(&density, "printed their identity");
    assert!(outcome.contains(" 0 reported a failure") && outcome.contains(" 0 crashed"), "{outcome}");
    assert_eq!(output_of(&o, "check", 0), vec!["frame table consistent"]);
}

#[test]
fn clone_density_on_vmx_ept() {
    let opts = boot::run::RunOptions { mem_mib: 512, ..bochs(900) };
    let o = dom0(opts, &["bench density mib=16", "check", "poweroff"]);
    assert_eq!(o.result, boot::run::RunResult::Success, "{}", o.serial);
    let density: Vec<String> =
        bench_lines(&o, "bench density mib=16").into_iter().filter(|l| !l.contains("so far")).collect();
    record_figures("Bochs, Intel VMX+EPT, 512 MiB machine: density", &density);
    let printed = number_after(find(&density, "printed their identity"), "bench density:");
    assert!(printed >= 2_000.0, "only {printed} clones printed their identity");
    let outcome = find(&density, "printed their identity");
    assert!(outcome.contains(" 0 reported a failure") && outcome.contains(" 0 crashed"), "{outcome}");
    assert_eq!(output_of(&o, "check", 0), vec!["frame table consistent"]);
}
