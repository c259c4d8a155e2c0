//! dom0: the privileged control domain. It finds the boot bundle's guest images in its
//! start-of-day page, reads lines typed on the serial console with line editing, and runs
//! them with the `xl`-style shell of the control library.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use ctl::ata::{AtaDisk, NativePorts};
use ctl::control::{Control, Native};
use ctl::line::LineEditor;
use ctl::save::{DataDisk, Storage, Ui};
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

/// Ctrl-C: stops a long operation.
const CTRL_C: u8 = 0x03;
/// Width a progress line is cleared to.
const PROGRESS_COLUMNS: usize = 64;

/// Console bytes read from the hypervisor but not yet consumed by the line editor (several
/// lines can arrive in one read, e.g. when pasting, or while a long operation ran).
type TypedAhead = Rc<RefCell<VecDeque<u8>>>;

/// Console input: the line editor over the typed-ahead bytes.
struct Input {
    editor: LineEditor,
    pending: TypedAhead,
}

/// Progress of long operations, shown in place on the console; Ctrl-C interrupts them.
struct ConsoleUi {
    typed: TypedAhead,
    /// The progress line on the console (empty: none).
    shown: String,
    shown_pct: Option<u64>,
    interrupted: bool,
}

impl ConsoleUi {
    /// Replaces the progress line with `text` (overwriting what is left of the old one).
    fn show(&mut self, text: &str) {
        let mut line = String::from("\r");
        line.push_str(text);
        for _ in text.len()..self.shown.len().min(PROGRESS_COLUMNS) {
            line.push(' ');
        }
        line.push('\r');
        rt::console::write_all(line.as_bytes());
        self.shown = String::from(text);
    }
}

impl Ui for ConsoleUi {
    fn progress(&mut self, verb: &str, name: &str, done: u64, total: u64) {
        let pct = ctl::save::percent(done, total);
        if self.shown_pct == Some(pct) {
            return;
        }
        self.shown_pct = Some(pct);
        self.show(&ctl::save::progress_line(verb, name, done, total));
    }

    fn clear(&mut self) {
        if self.shown_pct.take().is_some() {
            self.show("");
        }
    }

    fn interrupted(&mut self) -> bool {
        if self.interrupted {
            return true;
        }
        // SAFETY: dom0 is a guest of this hypervisor with identity-mapped memory.
        let mut ctl = Control::new(unsafe { Native::new() });
        let mut buf = [0u8; 64];
        if let Ok(n) = ctl.console_read(&mut buf) {
            for &b in &buf[..n] {
                if b == CTRL_C {
                    self.interrupted = true;
                } else {
                    self.typed.borrow_mut().push_back(b);
                }
            }
        }
        self.interrupted
    }

    fn reset(&mut self) {
        self.interrupted = false;
        self.shown_pct = None;
    }

    fn read_typed(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        {
            let mut typed = self.typed.borrow_mut();
            while n < buf.len() {
                let Some(b) = typed.pop_front() else { break };
                buf[n] = b;
                n += 1;
            }
        }
        if n < buf.len() {
            // SAFETY: dom0 is a guest of this hypervisor with identity-mapped memory.
            let mut ctl = Control::new(unsafe { Native::new() });
            n += ctl.console_read(&mut buf[n..]).unwrap_or(0);
        }
        n
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        rt::console::write_all(bytes);
    }

    fn wait(&mut self, timeout_ns: u64) {
        // SAFETY: as above.
        let mut ctl = Control::new(unsafe { Native::new() });
        let _ = ctl.block(timeout_ns);
        let _ = ctl.event_ack();
    }

    fn interactive(&self) -> bool {
        true
    }
}

/// Finds dom0's data disk and the image store on it.
fn storage(typed: &TypedAhead) -> Storage {
    let ui = ConsoleUi { typed: typed.clone(), shown: String::new(), shown_pct: None, interrupted: false };
    // SAFETY: the hypervisor passes the secondary ATA channel through to dom0 alone, and
    // nothing else in dom0 drives it.
    match AtaDisk::probe(unsafe { NativePorts::new() }) {
        Ok(disk) => {
            let s = Storage::on(DataDisk(Box::new(disk)), Box::new(ui));
            match &s.store {
                Ok(st) => guest_abi::println!(
                    "image store: {} images, {} MiB free of {} MiB",
                    st.list().len(),
                    st.free_bytes() >> 20,
                    st.capacity_bytes() >> 20
                ),
                Err(e) => guest_abi::println!("image store unusable: {e}"),
            }
            s
        }
        Err(e) => {
            guest_abi::println!("no image store: {e}");
            let mut s = Storage::none(&alloc::format!("{e}"));
            s.ui = Box::new(ui);
            s
        }
    }
}

impl Input {
    /// Reads one line, sleeping until console input arrives (dom0's pager works meanwhile).
    fn read_line(&mut self, shell: &mut Shell<Native>) -> String {
        let mut echo = Vec::new();
        loop {
            loop {
                let Some(b) = self.pending.borrow_mut().pop_front() else { break };
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
            match shell.ctl.console_read(&mut buf) {
                Ok(n) if n > 0 => self.pending.borrow_mut().extend(&buf[..n]),
                _ => shell.idle(0),
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
    let typed: TypedAhead = Rc::new(RefCell::new(VecDeque::new()));
    let storage = storage(&typed);
    let mut shell = Shell { ctl, images, call_insn, tsc_khz: info.tsc_khz, cycles: rt::rdtsc, storage };
    let mut input = Input { editor: LineEditor::new(), pending: typed };
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
        let line = input.read_line(&mut shell);
        shell.storage.ui.reset();
        let flow = shell.execute(&line, &mut out);
        out.flush();
        if flow == Flow::PowerOff {
            let _ = shell.ctl.shutdown(0);
        }
    }
}
