//! dom0: the privileged control domain. It finds the boot bundle's guest images in its
//! start-of-day page, reads lines typed on the serial console with line editing, and runs
//! them with the `xl`-style shell of the control library.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use ctl::control::{Control, Native};
use ctl::line::LineEditor;
use ctl::shell::{Flow, Image, Shell};
use guest_abi::hypercall::CallInsn;
use guest_abi::rt;
use guest_abi::start_info::StartInfo;

guest_abi::guest_main!(dom0_main);

/// Output is sent to the console in chunks of this size.
const OUTPUT_CHUNK_BYTES: usize = 4096;
/// The shell prompt (the runner's `--script` waits for it).
const PROMPT: &str = "dom0> ";
/// What `demo` on dom0's command line runs before the first prompt: the copy-on-write demo.
const DEMO: &[&str] = &[
    "create demo mem=40",
    "wait demo frozen 120",
    "clone demo count=3",
    "wait demo-2 blocked 60",
    "list",
    "console demo-0",
    "console demo-1",
    "console demo-2",
    "stat demo-2",
    "info",
];

/// Shell output, written to the console in chunks.
struct ConsoleOut(String);

impl ConsoleOut {
    fn flush(&mut self) {
        if !self.0.is_empty() {
            rt::console::write_all(self.0.as_bytes());
            self.0.clear();
        }
    }
}

impl core::fmt::Write for ConsoleOut {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.push_str(s);
        if self.0.len() >= OUTPUT_CHUNK_BYTES {
            self.flush();
        }
        Ok(())
    }
}

fn images(info: &'static StartInfo) -> Vec<Image> {
    info.modules()
        .iter()
        .map(|m| Image {
            name: m.name(),
            // SAFETY: the hypervisor maps each boot-bundle image read-only at `gpa` for `len`
            // bytes for dom0's whole life; dom0's memory is identity mapped.
            data: unsafe { core::slice::from_raw_parts(m.gpa as *const u8, m.len as usize) },
        })
        .collect()
}

/// Console input: bytes read from the hypervisor but not yet consumed by the editor (several
/// lines can arrive in one read, e.g. when pasting).
struct Input {
    editor: LineEditor,
    pending: VecDeque<u8>,
}

impl Input {
    /// Reads one line, sleeping until console input arrives.
    fn read_line(&mut self, ctl: &mut Control<Native>) -> String {
        let mut echo = Vec::new();
        loop {
            while let Some(b) = self.pending.pop_front() {
                let line = self.editor.feed(b, &mut echo);
                if !echo.is_empty() {
                    rt::console::write_all(&echo);
                    echo.clear();
                }
                if let Some(line) = line {
                    return line;
                }
            }
            let mut buf = [0u8; 256];
            match ctl.console_read(&mut buf) {
                Ok(n) if n > 0 => self.pending.extend(&buf[..n]),
                _ => {
                    let _ = ctl.block(0);
                    let _ = ctl.event_ack();
                }
            }
        }
    }
}

fn dom0_main(info: &'static StartInfo) -> i32 {
    let call_insn = if info.call_insn == CallInsn::Vmmcall as u32 { CallInsn::Vmmcall } else { CallInsn::Vmcall };
    let images = images(info);
    guest_abi::println!("cowvisor dom0: {} guest images; type help", images.len());
    // SAFETY: dom0 is a guest of this hypervisor with identity-mapped memory.
    let ctl = Control::new(unsafe { Native::new() });
    let mut shell = Shell { ctl, images, call_insn, tsc_khz: info.tsc_khz, cycles: rt::rdtsc };
    let mut input = Input { editor: LineEditor::new(), pending: VecDeque::new() };
    let mut out = ConsoleOut(String::new());
    if rt::cmdline_value("demo").is_some() {
        guest_abi::println!("demo: a template that fills 32 MiB, freezes itself, and three copy-on-write clones");
        for line in DEMO {
            guest_abi::println!("{PROMPT}{line}");
            shell.execute(line, &mut out);
            out.flush();
        }
        guest_abi::println!("demo done; try: clone demo count=100, list, stat demo-5, info, help");
    }
    loop {
        rt::console::write_all(PROMPT.as_bytes());
        let line = input.read_line(&mut shell.ctl);
        let flow = shell.execute(&line, &mut out);
        out.flush();
        if flow == Flow::PowerOff {
            let _ = shell.ctl.shutdown(0);
        }
    }
}
