//! The serial console session. The emulator's COM1 is the slave side of a pty the runner owns;
//! the runner reads the master side, echoes it, feeds script lines one per shell prompt (or
//! forwards the user's keystrokes), and stops the emulator by its PID on timeout.

use std::ffi::CStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Byte that, typed twice in a row, makes the runner quit an interactive session (Ctrl-]).
/// Once, it goes to the machine: dom0's `console DOMAIN` detaches on it, as `xl console` does.
pub const QUIT_BYTE: u8 = 0x1D;
/// The second Ctrl-] must follow the first within this long to quit.
pub const QUIT_REPEAT_WINDOW: Duration = Duration::from_millis(1500);

/// Whether `bytes`, typed after a Ctrl-] at `last_quit` (if any), complete the double
/// Ctrl-] that quits; updates `last_quit`.
pub fn quits(bytes: &[u8], last_quit: &mut Option<Instant>, now: Instant) -> bool {
    for &b in bytes {
        if b != QUIT_BYTE {
            *last_quit = None;
            continue;
        }
        if last_quit.is_some_and(|t| now.duration_since(t) <= QUIT_REPEAT_WINDOW) {
            return true;
        }
        *last_quit = Some(now);
    }
    false
}
/// Script lines are typed in chunks of at most this many bytes, each sent once the shell has
/// echoed the previous one. An emulated 16550 has a 16-byte receive FIFO, and Bochs drops
/// input the guest has not drained instead of holding it back.
pub const TYPE_CHUNK_BYTES: usize = 8;
/// How long to wait for a chunk's echo before typing on regardless.
const ECHO_WAIT: Duration = Duration::from_secs(10);

/// Whether the shell has echoed `chunk` in `output` (what it printed since the chunk was
/// typed). Editing keys echo as something else (backspace as `\b \b`), so only the chunk's
/// printable bytes are looked for; a chunk of editing keys alone counts once anything came back.
fn chunk_echoed(chunk: &[u8], output: &[u8]) -> bool {
    let printable = |b: &u8| (0x20..0x7F).contains(b);
    if !chunk.iter().any(printable) {
        return chunk.is_empty() || !output.is_empty();
    }
    // Each run of printable bytes must come back, in order.
    let mut rest = output;
    for run in chunk.split(|b| !printable(b)).filter(|r| !r.is_empty()) {
        match rest.windows(run.len()).position(|w| w == run) {
            Some(at) => rest = &rest[at + run.len()..],
            None => return false,
        }
    }
    true
}

/// Whether a script line is control keys only (no printable byte), sent without Enter.
fn is_control_keys(line: &[u8]) -> bool {
    !line.is_empty() && line.iter().all(|b| *b < 0x20)
}

/// A pseudo-terminal pair; the emulator opens the slave by path.
pub struct Pty {
    master: OwnedFd,
    /// Kept open so the master never sees EOF/EIO while the emulator reopens the slave.
    _slave: OwnedFd,
    /// Path of the slave device (e.g. `/dev/pts/7`).
    pub path: PathBuf,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn make_raw(fd: RawFd) -> io::Result<()> {
    // SAFETY: `t` is fully written by tcgetattr before use; fd is a valid terminal.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        cvt(libc::tcgetattr(fd, &mut t))?;
        libc::cfmakeraw(&mut t);
        cvt(libc::tcsetattr(fd, libc::TCSANOW, &t))?;
    }
    Ok(())
}

impl Pty {
    /// Opens a pty pair with the slave in raw mode and the master non-blocking.
    pub fn open() -> io::Result<Self> {
        let (mut m, mut s): (libc::c_int, libc::c_int) = (-1, -1);
        // SAFETY: openpty writes two descriptors; null name/termios/winsize are allowed.
        cvt(unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) })?;
        // SAFETY: openpty succeeded, so both descriptors are open and owned by us.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: the buffer is valid for its length; ttyname_r NUL-terminates on success.
        let rc = unsafe { libc::ttyname_r(slave.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: ttyname_r succeeded and wrote a NUL-terminated string into `name`.
        let path = PathBuf::from(unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned());
        make_raw(slave.as_raw_fd())?;
        // SAFETY: plain fcntl flag update on a descriptor we own.
        unsafe {
            let flags = cvt(libc::fcntl(master.as_raw_fd(), libc::F_GETFL))?;
            cvt(libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK))?;
        }
        Ok(Self { master, _slave: slave, path })
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reading into a valid buffer from a descriptor we own.
        let n = unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    fn write_all(&self, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
        while !bytes.is_empty() {
            // SAFETY: writing from a valid buffer to a descriptor we own.
            let n = unsafe { libc::write(self.master.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock || Instant::now() > deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            bytes = &bytes[n as usize..];
        }
        Ok(())
    }
}

/// Where console input comes from.
#[derive(Clone, Debug)]
pub enum Input {
    /// Nothing is typed.
    None,
    /// These lines, one after each shell prompt.
    Script(Vec<String>),
    /// The runner's stdin: a terminal (put in raw mode, Ctrl-] twice quits) or a pipe.
    Forward,
}

/// How a session runs.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Stop the emulator after this long.
    pub timeout: Option<Duration>,
    /// Console input.
    pub input: Input,
    /// The shell prompt that script lines wait for.
    pub prompt: String,
    /// Other prompts script lines wait for too (a guest shell behind an attached console).
    pub extra_prompts: Vec<String>,
    /// Copy console output to stdout as it arrives.
    pub echo: bool,
    /// Kill the emulator (by its PID) as soon as its output contains this: a power cut at a
    /// chosen moment, for crash-safety tests.
    pub kill_on: Option<String>,
}

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The emulator exited by itself.
    Exited(ExitStatus),
    /// The timeout expired and the emulator was killed.
    TimedOut,
    /// The user pressed Ctrl-] twice and the emulator was killed.
    Quit,
    /// The output showed [`SessionOptions::kill_on`] and the emulator was killed.
    Killed,
}

/// What a session produced.
#[derive(Debug)]
pub struct Session {
    /// Everything the machine wrote to its serial port.
    pub output: Vec<u8>,
    /// How it ended.
    pub end: SessionEnd,
    /// Script lines that were sent.
    pub lines_sent: usize,
}

/// A script line being typed chunk by chunk.
struct Typing {
    line: Vec<u8>,
    /// The bytes of `line` sent last, whose echo is awaited.
    chunk: core::ops::Range<usize>,
    /// Output offset from which that echo is looked for.
    echo_from: usize,
    /// When the chunk was sent.
    since: Instant,
}

/// Restores the terminal mode on drop.
struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    fn enter(fd: RawFd) -> Option<Self> {
        // SAFETY: isatty/tcgetattr on a descriptor we were given; `saved` is written before use.
        unsafe {
            if libc::isatty(fd) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return None;
            }
            make_raw(fd).ok()?;
            Some(Self { fd, saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes read in `enter` on the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Counts occurrences of `needle` in `hay` that end after byte `from`.
fn count_new(hay: &[u8], needle: &[u8], from: usize) -> usize {
    if needle.is_empty() {
        return 0;
    }
    let start = from.saturating_sub(needle.len() - 1);
    hay[start..].windows(needle.len()).filter(|w| *w == needle).count()
}

fn kill(child: &mut Child) {
    // Child::kill sends SIGKILL to exactly this PID (Bochs ignores SIGTERM).
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the console until the emulator exits, the timeout expires, or the user quits.
pub fn run_session(child: &mut Child, pty: &Pty, opts: &SessionOptions) -> io::Result<Session> {
    let start = Instant::now();
    let stdin_fd = io::stdin().as_raw_fd();
    let forwarding = matches!(opts.input, Input::Forward);
    let _raw = if forwarding { RawTerminal::enter(stdin_fd) } else { None };
    let mut stdin_open = forwarding;
    let mut held: Vec<u8> = Vec::new();
    let mut output = Vec::new();
    let mut prompts = 0usize;
    let mut sent = 0usize;
    let mut buf = [0u8; 8192];
    let mut stdout = io::stdout();
    let script: &[String] = match &opts.input {
        Input::Script(lines) => lines,
        _ => &[],
    };
    let mut typing: Option<Typing> = None;
    let mut last_quit: Option<Instant> = None;
    loop {
        let mut fds = [
            libc::pollfd { fd: pty.master.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stdin_fd, events: libc::POLLIN, revents: 0 },
        ];
        let nfds = if stdin_open { 2 } else { 1 };
        // SAFETY: `fds` is valid for `nfds` entries.
        unsafe { libc::poll(fds.as_mut_ptr(), nfds as libc::nfds_t, 50) };

        // Console output.
        loop {
            match pty.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let from = output.len();
                    output.extend_from_slice(&buf[..n]);
                    prompts += count_new(&output, opts.prompt.as_bytes(), from);
                    for p in &opts.extra_prompts {
                        prompts += count_new(&output, p.as_bytes(), from);
                    }
                    if opts.echo {
                        let _ = stdout.write_all(&buf[..n]);
                        let _ = stdout.flush();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => break,
                Err(_) => break,
            }
        }

        // User input.
        if stdin_open && fds[1].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            match io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if quits(&buf[..n], &mut last_quit, Instant::now()) {
                        kill(child);
                        return Ok(Session { output, end: SessionEnd::Quit, lines_sent: sent });
                    }
                    held.extend_from_slice(&buf[..n]);
                }
            }
        }
        // Typed-ahead input waits for the first prompt: bytes that reach the emulated UART
        // before the hypervisor has set it up are lost (its FIFO is reset).
        if !held.is_empty() && prompts > 0 {
            let deadline = Instant::now() + Duration::from_secs(5);
            pty.write_all(&held, deadline)?;
            held.clear();
        }

        // Script: one line per prompt, typed in echoed chunks.
        if typing.is_none() && sent < script.len() && prompts > sent {
            typing = Some(Typing { line: script[sent].as_bytes().to_vec(), chunk: 0..0, echo_from: 0, since: Instant::now() });
            sent += 1;
        }
        if let Some(t) = typing.as_mut() {
            let echoed = chunk_echoed(&t.line[t.chunk.clone()], &output[t.echo_from..]) || t.since.elapsed() > ECHO_WAIT;
            if echoed {
                let deadline = Instant::now() + Duration::from_secs(5);
                if t.chunk.end < t.line.len() {
                    t.chunk = t.chunk.end..(t.chunk.end + TYPE_CHUNK_BYTES).min(t.line.len());
                    t.echo_from = output.len();
                    t.since = Instant::now();
                    pty.write_all(&t.line[t.chunk.clone()], deadline)?;
                } else {
                    // A line of control keys only (Ctrl-] to detach a console) is keys, not a
                    // command: no Enter after it.
                    if !is_control_keys(&t.line) {
                        pty.write_all(b"\r", deadline)?;
                    }
                    typing = None;
                }
            }
        }

        if let Some(status) = child.try_wait()? {
            // Drain what is still buffered.
            while let Ok(n) = pty.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output.extend_from_slice(&buf[..n]);
                if opts.echo {
                    let _ = stdout.write_all(&buf[..n]);
                }
            }
            let _ = stdout.flush();
            return Ok(Session { output, end: SessionEnd::Exited(status), lines_sent: sent });
        }
        if opts.timeout.is_some_and(|t| start.elapsed() > t) {
            kill(child);
            return Ok(Session { output, end: SessionEnd::TimedOut, lines_sent: sent });
        }
        if let Some(needle) = &opts.kill_on {
            if output.windows(needle.len()).rev().take(buf.len() + needle.len()).any(|w| w == needle.as_bytes()) {
                kill(child);
                return Ok(Session { output, end: SessionEnd::Killed, lines_sent: sent });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_chunks_with_editing_keys_count_as_echoed_by_their_printable_bytes() {
        assert!(chunk_echoed(b"", b""));
        assert!(chunk_echoed(b"create h", b"create h"));
        assert!(!chunk_echoed(b"create h", b"create"));
        assert!(chunk_echoed(b"hellx\x7fo", b"hellx\x08 \x08o"), "backspace echoes as a rubout");
        assert!(!chunk_echoed(b"\x7f\x7f", b""), "nothing came back yet");
        assert!(chunk_echoed(b"\x7f\x7f", b"\x08 \x08"));
    }

    #[test]
    fn one_ctrl_bracket_goes_to_the_machine_and_two_in_a_row_quit() {
        let t0 = Instant::now();
        let mut last = None;
        assert!(!quits(b"ls\x1d", &mut last, t0));
        assert!(quits(b"\x1d", &mut last, t0 + Duration::from_millis(200)));
        let mut last = None;
        assert!(!quits(b"\x1dx\x1d", &mut last, t0), "a key in between starts over");
        assert!(!quits(b"\x1d", &mut last, t0 + Duration::from_secs(5)), "too late");
    }

    #[test]
    fn a_script_line_of_control_keys_only_is_sent_without_enter() {
        assert!(is_control_keys(b"\x1d"));
        assert!(!is_control_keys(b""));
        assert!(!is_control_keys(b"ls\x1d"));
    }

    #[test]
    fn prompt_split_across_reads_is_counted_once() {
        let mut out = b"hello dom".to_vec();
        assert_eq!(count_new(&out, b"dom0> ", 0), 0);
        let from = out.len();
        out.extend_from_slice(b"0> list\r\ndom0> ");
        assert_eq!(count_new(&out, b"dom0> ", from), 2);
        let from = out.len();
        out.extend_from_slice(b"x");
        assert_eq!(count_new(&out, b"dom0> ", from), 0);
    }

    #[test]
    fn pty_round_trip_through_the_slave() {
        let pty = Pty::open().unwrap();
        let mut slave = std::fs::OpenOptions::new().read(true).write(true).open(&pty.path).unwrap();
        slave.write_all(b"ping").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = [0u8; 16];
        let n = pty.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        pty.write_all(b"pong", Instant::now() + Duration::from_secs(1)).unwrap();
        let mut got = [0u8; 4];
        slave.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
    }
}
