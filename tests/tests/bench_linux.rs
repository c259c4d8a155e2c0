//! The Linux template benchmarks, with the targets: boot to the agent's ready line
//! against cloning the template to the clone's first line (instructions under QEMU
//! `-icount`, target at least 1,000x), the memory of an idle clone that reconfigured itself,
//! and how many Linux clones that printed their identity fit on a 2 GiB machine (target at
//! least 500).

use boot::run::RunOptions;
use tests::*;

#[test]
fn linux_clone_is_a_thousand_times_cheaper_than_boot_and_five_hundred_fit_in_2_gib() {
    let opts = RunOptions { icount: true, mem_mib: 2048, linux: true, ..qemu(1500) };
    let o = dom0_ok(opts, &["bench linux count=8", "bench linux-density", "check", "info", "poweroff"]);
    let linux = bench_lines(&o, "bench linux count=8");
    let density: Vec<String> =
        bench_lines(&o, "bench linux-density").into_iter().filter(|l| !l.contains("so far")).collect();
    let all: Vec<String> = linux.iter().chain(&density).cloned().collect();
    record_figures("QEMU TCG, AMD SVM+NPT, -icount, 2 GiB machine: Linux template", &all);
    let ratio = number_after(find(&linux, "boot/clone:"), "boot/clone:");
    assert!(ratio >= 1000.0, "Linux boot vs clone: only {ratio}x");
    let printed = number_after(find(&density, "printed their identity"), "bench linux-density:");
    assert!(printed >= 500.0, "only {printed} Linux clones printed their identity");
    assert_eq!(output_of(&o, "check", 0), vec!["frame table consistent"]);
}

#[test]
fn linux_template_figures_on_vmx_ept() {
    let opts = RunOptions { mem_mib: 512, linux: true, ..bochs(2400) };
    let o = dom0_ok(opts, &["bench linux count=4", "check", "poweroff"]);
    let linux = bench_lines(&o, "bench linux count=4");
    record_figures("Bochs, Intel VMX+EPT: Linux template", &linux);
    let ratio = number_after(find(&linux, "boot/clone:"), "boot/clone:");
    assert!(ratio >= 100.0, "Linux boot vs clone under Bochs: only {ratio}x");
    assert_eq!(output_of(&o, "check", 0), vec!["frame table consistent"]);
}
