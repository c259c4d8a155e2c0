//! `cowvisor-ckpt TAG [PAGES]`: a Linux guest checkpoints itself (docs/self-checkpoint.md).
//! Through `/dev/checkpoint` (the `cowvisor_checkpoint` module: the hypercalls are refused
//! to processes) it fills `PAGES` pages (default 256) of its own memory with a pattern,
//! takes the checkpoint, reads the domain's frozen memory back from the device page by page
//! and streams every non-zero page to dom0, which stores the image `NAME.TAG`. It rewrites
//! its pattern while it streams. In a domain restored from that image the same call returns
//! "restored": it checks that its pattern is the one of the moment of the call and says so.
//! One result line either way; every failure is a line, never a panic.

use guest_abi::crc32::crc32;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

const PAGE: usize = 4096;
/// Pages one read of the device asks for.
const READ_PAGES: usize = 16;
const CKPT_TAKE: libc::c_ulong = 0x4301;
const CKPT_BEGIN: libc::c_ulong = 0x4018_4302;
const CKPT_PAGE: libc::c_ulong = 0x4010_4303;
const CKPT_END: libc::c_ulong = 0x4304;
const CKPT_FINISH: libc::c_ulong = 0x4305;
const CKPT_MEMSIZE: libc::c_ulong = 0x8008_4306;
/// dom0's answer "stored" (`guest_abi::channel::status::STORED`).
const STORED: i32 = guest_abi::channel::status::STORED as i32;

#[repr(C)]
struct PageArg {
    gpa: u64,
    buf: u64,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "cowvisor-ckpt: {line}");
    let _ = out.flush();
}

fn ioctl(f: &File, cmd: libc::c_ulong, arg: u64) -> std::io::Result<i32> {
    // SAFETY: the device's ioctls read or write at most the argument struct `arg` points at,
    // and each caller passes the address of a live value of the type the command takes.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), cmd, arg) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

fn pattern(pages: &mut [u8], round: u8) {
    for (i, b) in pages.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[(i / PAGE) % 4] ^ round;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tag = args.next().unwrap_or_else(|| "lx".to_string());
    let pages: usize = args.next().and_then(|p| p.parse().ok()).unwrap_or(256).clamp(1, 16_384);
    std::process::exit(match run(&tag, pages) {
        Ok(()) => 0,
        Err(e) => {
            say(&format!("failed: {e}"));
            1
        }
    });
}

fn run(tag: &str, pages: usize) -> Result<(), String> {
    if tag.is_empty() || tag.len() > guest_abi::channel::TAG_MAX_BYTES {
        return Err(format!("tag {tag:?}: 1 to {} bytes", guest_abi::channel::TAG_MAX_BYTES));
    }
    let dev = File::options().read(true).write(true).open("/dev/checkpoint").map_err(|e| format!("/dev/checkpoint: {e}"))?;
    let mut mem = vec![0u8; pages * PAGE];
    pattern(&mut mem, 1);
    let crc = crc32(&mem);
    let mut phase = std::hint::black_box(1u32);
    let taken = ioctl(&dev, CKPT_TAKE, 0).map_err(|e| format!("take: {e}"))?;
    if taken == 1 {
        let now = crc32(&mem);
        say(&format!("restored: phase {phase}, crc {now:08x} (at the call {crc:08x})"));
        if now == crc && phase == 1 {
            say("restored: memory is the memory at the moment of the call");
            return Ok(());
        }
        return Err("restored memory differs from the moment of the call".to_string());
    }
    phase = std::hint::black_box(2);
    let t0 = std::time::Instant::now();
    say(&format!("checkpoint taken (phase {phase})"));
    let mut mem_bytes = 0u64;
    ioctl(&dev, CKPT_MEMSIZE, &raw mut mem_bytes as u64).map_err(|e| format!("memsize: {e}"))?;
    let mut name = [0u8; guest_abi::channel::TAG_MAX_BYTES];
    name[..tag.len()].copy_from_slice(tag.as_bytes());
    ioctl(&dev, CKPT_BEGIN, name.as_ptr() as u64).map_err(|e| format!("begin: {e}"))?;
    let mut buf = vec![0u8; READ_PAGES * PAGE];
    let (mut gpa, mut sent, mut holes, mut rewritten) = (0u64, 0u64, 0u64, 0usize);
    // Where the stream's time goes: reading the frozen memory, handing pages to the ring.
    let (mut reading, mut sending) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    while gpa < mem_bytes {
        let n = (((mem_bytes - gpa) / PAGE as u64) as usize).min(READ_PAGES);
        let chunk = &mut buf[..n * PAGE];
        // A batch over a hole (addresses that are not the domain's RAM) is read page by page.
        let r0 = std::time::Instant::now();
        let whole = dev.read_at(chunk, gpa).is_ok_and(|got| got == chunk.len());
        reading += r0.elapsed();
        for i in 0..n {
            let at = gpa + (i * PAGE) as u64;
            let page = &mut chunk[i * PAGE..(i + 1) * PAGE];
            if !whole && dev.read_at(page, at).map_or(true, |got| got != PAGE) {
                holes += 1;
                continue;
            }
            if page.iter().all(|&b| b == 0) {
                continue;
            }
            let arg = PageArg { gpa: at, buf: page.as_ptr() as u64 };
            let s0 = std::time::Instant::now();
            ioctl(&dev, CKPT_PAGE, &raw const arg as u64).map_err(|e| format!("page {at:#x}: {e} (dom0 refused the stream)"))?;
            sending += s0.elapsed();
            sent += 1;
        }
        gpa += (n * PAGE) as u64;
        // The process runs on and writes: the checkpoint must not see it.
        if rewritten < pages {
            pattern(&mut mem[rewritten * PAGE..(rewritten + 1) * PAGE], 2);
            rewritten += 1;
        }
    }
    let streamed_ms = t0.elapsed().as_millis();
    let status = ioctl(&dev, CKPT_END, 0).map_err(|e| format!("end: {e}"))?;
    let _ = ioctl(&dev, CKPT_FINISH, 0);
    if status != STORED {
        return Err(format!("dom0 refused the stream (status {status})"));
    }
    say(&format!(
        "streamed in {streamed_ms} ms ({} ms reading the checkpoint, {} ms handing pages to the ring), answered after {} ms",
        reading.as_millis(),
        sending.as_millis(),
        t0.elapsed().as_millis()
    ));
    say(&format!("stored as {tag}: {sent} pages sent, {holes} pages not RAM, memory rewritten meanwhile: {}", crc32(&mem) != crc));
    Ok(())
}
