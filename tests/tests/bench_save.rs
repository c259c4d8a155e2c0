//! The save, restore and checkpoint benchmarks, with the targets. A test binary of
//! their own with one test: the disk's latency is host time that the guest spends polling, so
//! these figures are taken with no other emulator running beside them (cargo runs test
//! binaries one after another, and the tests inside one in parallel).

use tests::*;

/// A fresh data disk for a benchmark run.
fn bench_disk(name: &str) -> boot::run::DataDisk {
    let dir = boot::workspace_root().join("target").join("test-disks");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.img"));
    let _ = std::fs::remove_file(&path);
    boot::run::DataDisk::Path(path)
}

/// `bench save`: its figures, and the targets every emulator can be held to (the checkpoint
/// pause independent of memory size, zero elision, a delta far smaller than a full image).
fn save_benchmark(label: &str, opts: boot::run::RunOptions, cmd: &str) -> Vec<String> {
    let o = dom0_ok(opts, &[cmd, "store", "poweroff"]);
    let lines = bench_lines(&o, cmd);
    record_figures(label, &lines);
    let pause = number_after(find(&lines, "checkpoint pause"), "cycles: ");
    assert!(pause <= 1.2, "checkpoint pause of the large domain vs the small one: {pause} > 1.2");
    let zero = find(&lines, "bench save zero");
    let fraction = number_after(zero, "1/");
    assert!(fraction >= 1000.0, "a mostly-zero domain's image is only 1/{fraction} of its size");
    let delta = number_after(find(&lines, "bench delta"), "pages): ");
    assert!(delta >= 10.0, "a delta of an idle clone is only {delta}x smaller than a full image");
    assert!(find(&lines, "restored as built").contains("cycles ("), "{lines:?}");
    // The benchmark cleans up after itself.
    assert!(output_of(&o, "store", 0).iter().all(|l| !l.starts_with("bench-")), "{}", o.serial);
    lines
}

fn svm_npt() {
    let opts = boot::run::RunOptions { icount: true, mem_mib: 2048, disk: bench_disk("bench-save-qemu"), ..qemu(900) };
    let lines = save_benchmark("QEMU TCG, AMD SVM+NPT, -icount (instructions): save/restore", opts, "bench save mib=16 big=1024");
    let save = number_after(find(&lines, "bench save: "), "MiB: ");
    assert!(save <= 1.5, "save costs {save}x the raw disk write");
    let restore = number_after(find(&lines, "bench restore: "), "MiB: ");
    assert!(restore <= 1.5, "restore costs {restore}x the raw disk read");
}

/// Bochs counts one instruction per word of `rep insw`/`rep outsw`, so its raw disk is nearly
/// free in TSC terms and checksumming every byte, which the format requires, alone costs more
/// than the device there: the save and restore ratios are recorded, not held to 1.5x.
fn vmx_ept() {
    let opts = boot::run::RunOptions { mem_mib: 1024, disk: bench_disk("bench-save-bochs"), ..bochs(900) };
    save_benchmark("Bochs, Intel VMX+EPT (instructions): save/restore", opts, "bench save mib=16 big=512");
}

/// QEMU first, then Bochs, one at a time.
#[test]
fn save_restore_and_checkpoint_benchmarks_meet_their_targets() {
    svm_npt();
    vmx_ept();
}
