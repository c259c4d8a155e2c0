//! Test guest `unpriv`: an unprivileged domain tries every control hypercall, with plausible
//! arguments pointing at its own memory and at dom0, and must get `NotPermitted` from each;
//! it also checks that nothing it asked for happened (dom0's memory cannot be read).
#![cfg_attr(target_os = "none", no_std, no_main)]

use guest_abi::HvError;
use guest_abi::domctl::{CloneArgs, CreateArgs, DomainInfo, HvInfo, name_field};
use guest_abi::hypercall::{hypercall, nr};
use guest_abi::println;
use guest_abi::rt::test::{Status, report};
use guest_abi::start_info::StartInfo;
use guest_abi::vcpu::VcpuContext;

guest_abi::guest_main!(unpriv);

fn unpriv(si: &'static StartInfo) -> i32 {
    let mut buf = [0xA5u8; 4096];
    let create = CreateArgs { mem_bytes: 2 << 20, vcpus: 1, flags: 0, name: name_field("evil") };
    let clone = CloneArgs { quota_pages: 0, index: 0, flags: 0, name: name_field("evil") };
    let ctx = VcpuContext::default();
    let mut info = [0u8; core::mem::size_of::<DomainInfo>() + core::mem::size_of::<HvInfo>()];
    let b = buf.as_mut_ptr() as u64;
    let dom0 = 0u64;
    let me = si.domid as u64;
    let calls: [(u64, &str, [u64; 4]); 27] = [
        (nr::DOM_CREATE, "dom_create", [&create as *const _ as u64, 0, 0, 0]),
        (nr::DOM_DESTROY, "dom_destroy", [dom0, 0, 0, 0]),
        (nr::DOM_PAUSE, "dom_pause", [dom0, 0, 0, 0]),
        (nr::DOM_UNPAUSE, "dom_unpause", [me, 0, 0, 0]),
        (nr::DOM_INFO, "dom_info", [dom0, info.as_mut_ptr() as u64, 0, 0]),
        (nr::DOM_LIST, "dom_list", [0, b, 16, 0]),
        (nr::MEM_WRITE, "mem_write", [dom0, 0x10_0000, b, 4096]),
        (nr::MEM_READ, "mem_read", [dom0, 0x10_0000, b, 4096]),
        (nr::VCPU_SET, "vcpu_set", [dom0, &ctx as *const _ as u64, 0, 0]),
        (nr::VCPU_GET, "vcpu_get", [dom0, b, 0, 0]),
        (nr::CONSOLE_GET, "console_get", [dom0, 0, b, 4096]),
        (nr::HV_INFO, "hv_info", [info.as_mut_ptr() as u64, 0, 0, 0]),
        (nr::DOM_FREEZE, "dom_freeze", [me, 0, 0, 0]),
        (nr::DOM_CLONE, "dom_clone", [me, &clone as *const _ as u64, 0, 0]),
        (nr::DOM_STAT, "dom_stat", [dom0, b, 0, 0]),
        (nr::DOM_SET_NAME, "dom_set_name", [dom0, b, 4, 0]),
        (nr::FRAME_CHECK, "frame_check", [0, 0, 0, 0]),
        (nr::DOM_SNAPSHOT, "dom_snapshot", [me, b, 4, 0]),
        (nr::DOM_STATE_GET, "dom_state_get", [dom0, b, 0, 0]),
        (nr::DOM_STATE_SET, "dom_state_set", [me, b, 0, 0]),
        (nr::MEM_PRIVATE_MAP, "mem_private_map", [dom0, 0, b, 64]),
        (nr::DOM_CONSOLE_INPUT, "dom_console_input", [dom0, b, 16, 0]),
        (nr::DOM_PLATFORM_GET, "dom_platform_get", [dom0, b, 4096, 0]),
        (nr::DOM_PLATFORM_SET, "dom_platform_set", [me, b, 468, 0]),
        (nr::DOM_PAGER_SET, "dom_pager_set", [me, me, 0, 0]),
        (nr::PAGER_STATUS, "pager_status", [dom0, b, 0, 0]),
        (nr::DOM_CHANNEL, "dom_channel", [guest_abi::channel::op::ALLOW, me, 1, 0]),
    ];
    let mut status = Status::Success;
    for (n, name, a) in calls {
        // SAFETY: every pointer argument is the address of a live local of the right size.
        let r = unsafe { hypercall(n, &a) };
        if r == Err(HvError::NotPermitted) {
            println!("unpriv: {name}: not permitted (ok)");
        } else {
            println!("unpriv: {name}: returned {r:?}, expected NotPermitted");
            status = Status::Failure;
        }
    }
    // SAFETY: as above.
    if unsafe { hypercall(nr::CONSOLE_READ, &[b, 16]) } != Err(HvError::NotPermitted) {
        println!("unpriv: console_read was not refused");
        status = Status::Failure;
    }
    if buf.iter().any(|&x| x != 0xA5) {
        println!("unpriv: a refused call wrote into the buffer");
        status = Status::Failure;
    }
    if nr::CONTROL_END - nr::CONTROL_BASE != calls.len() as u64 {
        println!("unpriv: the ABI has control hypercalls this test does not try");
        status = Status::Error;
    }
    report(status)
}
