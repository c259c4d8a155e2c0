//! The ATA PIO driver for dom0's data disk: the master drive on the secondary channel
//! (command block 0x170-0x177, control 0x376), where the runner attaches it under both
//! emulators (Bochs `ata1-master`, QEMU a PIIX3 IDE controller's secondary channel). The
//! hypervisor lets only dom0 reach these ports. Polled (interrupts off with nIEN), 28- or
//! 48-bit LBA, up to 256 sectors per command, write cache flushed on `flush`. No DMA, so
//! dom0 never needs machine addresses. Port access goes through [`Ports`], so the protocol
//! is tested on the host against a simulated drive.

use store::{BlockDevice, DeviceError, SECTOR_BYTES, transfer_range};

/// Raw port I/O.
pub trait Ports {
    fn inb(&mut self, port: u16) -> u8;
    fn outb(&mut self, port: u16, value: u8);
    /// `rep insw`: fills `buf` (even length) with 16-bit reads of `port`.
    fn insw(&mut self, port: u16, buf: &mut [u8]);
    /// `rep outsw`: writes `buf` (even length) as 16-bit writes to `port`.
    fn outsw(&mut self, port: u16, buf: &[u8]);
    /// A cycle counter (the TSC), to time waits on the drive; 0 where there is none.
    fn cycles(&mut self) -> u64 {
        0
    }
}

/// First port of the secondary channel's command block.
pub const SECONDARY_BASE: u16 = 0x170;
/// The secondary channel's device control / alternate status register.
pub const SECONDARY_CONTROL: u16 = 0x376;

mod reg {
    pub const DATA: u16 = 0;
    pub const FEATURES: u16 = 1;
    pub const COUNT: u16 = 2;
    pub const LBA_LOW: u16 = 3;
    pub const LBA_MID: u16 = 4;
    pub const LBA_HIGH: u16 = 5;
    pub const DRIVE: u16 = 6;
    pub const STATUS_COMMAND: u16 = 7;
}

mod status {
    pub const ERR: u8 = 1 << 0;
    pub const DRQ: u8 = 1 << 3;
    pub const DF: u8 = 1 << 5;
    pub const BSY: u8 = 1 << 7;
}

mod cmd {
    pub const READ: u8 = 0x20;
    pub const READ_EXT: u8 = 0x24;
    pub const WRITE: u8 = 0x30;
    pub const WRITE_EXT: u8 = 0x34;
    pub const FLUSH: u8 = 0xE7;
    pub const FLUSH_EXT: u8 = 0xEA;
    pub const IDENTIFY: u8 = 0xEC;
}

/// Device control: interrupts off (nIEN).
const CONTROL_NIEN: u8 = 1 << 1;
/// Drive/head register: LBA addressing, master drive.
const DRIVE_LBA_MASTER: u8 = 0xE0;
/// Status polls before a command is given up as timed out.
pub const STATUS_POLLS_MAX: u32 = 20_000_000;
/// Sectors one command moves at most.
pub const SECTORS_PER_COMMAND: usize = 256;
/// Highest sector count a 28-bit command addresses.
const LBA28_SECTORS: u64 = 1 << 28;

/// The data disk.
pub struct AtaDisk<P: Ports> {
    ports: P,
    sectors: u64,
    lba48: bool,
    /// Cycles spent polling while the drive was not ready.
    waited_cycles: u64,
}

impl<P: Ports> AtaDisk<P> {
    /// Finds and identifies the master drive of the secondary channel.
    pub fn probe(mut ports: P) -> Result<Self, DeviceError> {
        let p = |r| SECONDARY_BASE + r;
        ports.outb(SECONDARY_CONTROL, CONTROL_NIEN);
        ports.outb(p(reg::DRIVE), 0xA0);
        // A floating bus reads all-ones: no controller or no drive.
        if ports.inb(p(reg::STATUS_COMMAND)) == 0xFF {
            return Err(DeviceError::NoDevice);
        }
        for r in [reg::COUNT, reg::LBA_LOW, reg::LBA_MID, reg::LBA_HIGH] {
            ports.outb(p(r), 0);
        }
        ports.outb(p(reg::STATUS_COMMAND), cmd::IDENTIFY);
        if ports.inb(p(reg::STATUS_COMMAND)) == 0 {
            return Err(DeviceError::NoDevice);
        }
        let mut disk = Self { ports, sectors: 0, lba48: false, waited_cycles: 0 };
        disk.wait_not_busy()?;
        // ATAPI and SATA bridges put a signature here instead of answering IDENTIFY.
        if disk.ports.inb(p(reg::LBA_MID)) != 0 || disk.ports.inb(p(reg::LBA_HIGH)) != 0 {
            return Err(DeviceError::NoDevice);
        }
        disk.wait_data(0)?;
        let mut id = [0u8; SECTOR_BYTES];
        disk.ports.insw(p(reg::DATA), &mut id);
        let word = |n: usize| u64::from(u16::from_le_bytes([id[2 * n], id[2 * n + 1]]));
        let lba28 = word(60) | (word(61) << 16);
        disk.lba48 = word(83) & (1 << 10) != 0;
        let lba48 = word(100) | (word(101) << 16) | (word(102) << 32) | (word(103) << 48);
        disk.sectors = if disk.lba48 && lba48 > 0 { lba48 } else { lba28 };
        if disk.sectors == 0 {
            return Err(DeviceError::NoDevice);
        }
        Ok(disk)
    }

    fn status(&mut self) -> u8 {
        self.ports.inb(SECONDARY_BASE + reg::STATUS_COMMAND)
    }

    /// Polls the status until `ready` says it is ready (`Some`): what it said, or a timeout.
    /// Polls after the first count as waiting on the drive.
    fn poll<T>(&mut self, mut ready: impl FnMut(u8) -> Option<Result<T, DeviceError>>) -> Result<T, DeviceError> {
        let s = self.status();
        if let Some(r) = ready(s) {
            return r;
        }
        let t0 = self.ports.cycles();
        let mut outcome = Err(DeviceError::Timeout);
        for _ in 1..STATUS_POLLS_MAX {
            let s = self.status();
            if let Some(r) = ready(s) {
                outcome = r;
                break;
            }
        }
        self.waited_cycles += self.ports.cycles().wrapping_sub(t0);
        outcome
    }

    fn wait_not_busy(&mut self) -> Result<u8, DeviceError> {
        self.poll(|s| (s & status::BSY == 0).then_some(Ok(s)))
    }

    /// Waits until the drive is ready to move a sector's data.
    fn wait_data(&mut self, lba: u64) -> Result<(), DeviceError> {
        self.poll(|s| {
            if s & status::BSY != 0 {
                None
            } else if s & (status::ERR | status::DF) != 0 {
                Some(Err(DeviceError::Io { lba }))
            } else if s & status::DRQ != 0 {
                Some(Ok(()))
            } else {
                None
            }
        })
    }

    fn finish(&mut self, lba: u64) -> Result<(), DeviceError> {
        let s = self.wait_not_busy()?;
        if s & (status::ERR | status::DF) != 0 { Err(DeviceError::Io { lba }) } else { Ok(()) }
    }

    fn command(&mut self, lba: u64, count: usize, c28: u8, c48: u8) -> Result<(), DeviceError> {
        let p = |r| SECONDARY_BASE + r;
        self.wait_not_busy()?;
        let wide = self.lba48 && (lba + count as u64 > LBA28_SECTORS || c28 == cmd::FLUSH && self.sectors > LBA28_SECTORS);
        // 256 sectors is a count of 0 in 28-bit commands.
        let n = count as u16;
        if wide {
            self.ports.outb(p(reg::DRIVE), 0x40);
            self.ports.outb(p(reg::COUNT), (n >> 8) as u8);
            self.ports.outb(p(reg::LBA_LOW), (lba >> 24) as u8);
            self.ports.outb(p(reg::LBA_MID), (lba >> 32) as u8);
            self.ports.outb(p(reg::LBA_HIGH), (lba >> 40) as u8);
        } else {
            self.ports.outb(p(reg::DRIVE), DRIVE_LBA_MASTER | ((lba >> 24) & 0xF) as u8);
        }
        self.ports.outb(p(reg::FEATURES), 0);
        self.ports.outb(p(reg::COUNT), n as u8);
        self.ports.outb(p(reg::LBA_LOW), lba as u8);
        self.ports.outb(p(reg::LBA_MID), (lba >> 8) as u8);
        self.ports.outb(p(reg::LBA_HIGH), (lba >> 16) as u8);
        self.ports.outb(p(reg::STATUS_COMMAND), if wide { c48 } else { c28 });
        Ok(())
    }

    /// Moves `sectors` sectors from `lba` on, up to [`SECTORS_PER_COMMAND`] per command:
    /// `each(ports, i)` moves sector `i` once the drive is ready for it.
    fn transfer(&mut self, lba: u64, sectors: usize, c28: u8, c48: u8, mut each: impl FnMut(&mut P, usize)) -> Result<(), DeviceError> {
        for start in (0..sectors).step_by(SECTORS_PER_COMMAND) {
            let n = (sectors - start).min(SECTORS_PER_COMMAND);
            let first = lba + start as u64;
            self.command(first, n, c28, c48)?;
            for s in 0..n {
                self.wait_data(first + s as u64)?;
                each(&mut self.ports, start + s);
            }
            self.finish(first)?;
        }
        Ok(())
    }

    /// The port access underneath (tests inspect the simulated drive).
    pub fn ports(&mut self) -> &mut P {
        &mut self.ports
    }
}

impl<P: Ports> BlockDevice for AtaDisk<P> {
    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        transfer_range(self.sectors, lba, buf.len())?;
        self.transfer(lba, buf.len() / SECTOR_BYTES, cmd::READ, cmd::READ_EXT, |p, i| {
            p.insw(SECONDARY_BASE + reg::DATA, &mut buf[i * SECTOR_BYTES..(i + 1) * SECTOR_BYTES]);
        })
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        transfer_range(self.sectors, lba, buf.len())?;
        self.transfer(lba, buf.len() / SECTOR_BYTES, cmd::WRITE, cmd::WRITE_EXT, |p, i| {
            p.outsw(SECONDARY_BASE + reg::DATA, &buf[i * SECTOR_BYTES..(i + 1) * SECTOR_BYTES]);
        })
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.command(0, 0, cmd::FLUSH, cmd::FLUSH_EXT)?;
        self.finish(0)
    }

    fn wait_cycles(&self) -> u64 {
        self.waited_cycles
    }
}

/// The CPU's port instructions (dom0 runs with the data disk's ports passed through).
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub struct NativePorts(());

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
impl NativePorts {
    /// # Safety
    /// Only in dom0, whose I/O bitmap passes the data disk's ports through; nothing else may
    /// drive that channel at the same time.
    pub const unsafe fn new() -> Self {
        Self(())
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
impl Ports for NativePorts {
    fn inb(&mut self, port: u16) -> u8 {
        let v: u8;
        // SAFETY: `new` requires the ports to be dom0's; IN has no memory effects.
        unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags)) };
        v
    }

    fn outb(&mut self, port: u16, value: u8) {
        // SAFETY: as for `inb`.
        unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
    }

    fn insw(&mut self, port: u16, buf: &mut [u8]) {
        // SAFETY: `rep insw` stores buf.len() / 2 words at buf, which is ours and that long.
        unsafe {
            core::arch::asm!("cld", "rep insw", in("dx") port, inout("rdi") buf.as_mut_ptr() => _, inout("rcx") buf.len() / 2 => _, options(nostack))
        };
    }

    fn outsw(&mut self, port: u16, buf: &[u8]) {
        // SAFETY: `rep outsw` reads buf.len() / 2 words from buf, which is that long.
        unsafe {
            core::arch::asm!("cld", "rep outsw", in("dx") port, inout("rsi") buf.as_ptr() => _, inout("rcx") buf.len() / 2 => _, options(readonly, nostack))
        };
    }

    fn cycles(&mut self) -> u64 {
        // SAFETY: RDTSC only reads the time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A simulated ATA drive on the secondary channel.
    struct SimDrive {
        data: Vec<u8>,
        regs: [u8; 8],
        hob: [u8; 8],
        status: u8,
        /// Bytes to hand out (read) or take (write) for the current command.
        buffer: Vec<u8>,
        pos: usize,
        writing: Option<u64>,
        fail_at: Option<u64>,
        present: bool,
        flushes: u32,
        lba48_commands: u32,
        /// Status reads that see BSY after each command.
        busy_for: u32,
        busy_left: u32,
        /// Port reads so far: the simulated cycle counter.
        reads: u64,
    }

    impl SimDrive {
        fn new(sectors: usize) -> Self {
            Self {
                data: vec![0; sectors * SECTOR_BYTES],
                regs: [0; 8],
                hob: [0; 8],
                status: 0x50,
                buffer: Vec::new(),
                pos: 0,
                writing: None,
                fail_at: None,
                present: true,
                flushes: 0,
                lba48_commands: 0,
                busy_for: 0,
                busy_left: 0,
                reads: 0,
            }
        }

        fn lba(&self, wide: bool) -> (u64, usize) {
            let r = &self.regs;
            let mut lba = u64::from(r[3]) | u64::from(r[4]) << 8 | u64::from(r[5]) << 16;
            let mut n = usize::from(r[2]);
            if wide {
                lba |= u64::from(self.hob[3]) << 24 | u64::from(self.hob[4]) << 32 | u64::from(self.hob[5]) << 40;
                n |= usize::from(self.hob[2]) << 8;
                if n == 0 {
                    n = 65536;
                }
            } else {
                lba |= u64::from(r[6] & 0xF) << 24;
                if n == 0 {
                    n = 256;
                }
            }
            (lba, n)
        }

        fn execute(&mut self, c: u8) {
            let wide = matches!(c, cmd::READ_EXT | cmd::WRITE_EXT | cmd::FLUSH_EXT);
            if wide {
                self.lba48_commands += 1;
            }
            match c {
                cmd::IDENTIFY => {
                    let mut id = vec![0u8; SECTOR_BYTES];
                    let sectors = (self.data.len() / SECTOR_BYTES) as u32;
                    id[120..124].copy_from_slice(&sectors.to_le_bytes());
                    id[166] = 1 << 2; // word 83 bit 10
                    id[200..204].copy_from_slice(&sectors.to_le_bytes());
                    self.buffer = id;
                    self.pos = 0;
                    self.status = 0x58;
                }
                cmd::READ | cmd::READ_EXT => {
                    let (lba, n) = self.lba(wide);
                    if self.fail_at.is_some_and(|f| (lba..lba + n as u64).contains(&f)) {
                        self.status = 0x51;
                        return;
                    }
                    let at = lba as usize * SECTOR_BYTES;
                    self.buffer = self.data[at..at + n * SECTOR_BYTES].to_vec();
                    self.pos = 0;
                    self.status = 0x58;
                }
                cmd::WRITE | cmd::WRITE_EXT => {
                    let (lba, n) = self.lba(wide);
                    self.buffer = vec![0; n * SECTOR_BYTES];
                    self.pos = 0;
                    self.writing = Some(lba);
                    self.status = 0x58;
                }
                cmd::FLUSH | cmd::FLUSH_EXT => {
                    self.flushes += 1;
                    self.status = 0x50;
                }
                _ => self.status = 0x51,
            }
        }
    }

    impl Ports for SimDrive {
        fn inb(&mut self, port: u16) -> u8 {
            if !self.present {
                return 0xFF;
            }
            self.reads += 1;
            match port {
                0x177 | SECONDARY_CONTROL if self.busy_left > 0 => {
                    self.busy_left -= 1;
                    0x80
                }
                0x177 | SECONDARY_CONTROL => self.status,
                0x171..=0x176 => self.regs[usize::from(port - 0x170)],
                _ => 0xFF,
            }
        }
        fn outb(&mut self, port: u16, value: u8) {
            match port {
                0x177 => {
                    self.execute(value);
                    self.busy_left = self.busy_for;
                }
                0x171..=0x176 => {
                    let r = usize::from(port - 0x170);
                    self.hob[r] = self.regs[r];
                    self.regs[r] = value;
                }
                _ => {}
            }
        }
        fn insw(&mut self, _port: u16, buf: &mut [u8]) {
            buf.copy_from_slice(&self.buffer[self.pos..self.pos + buf.len()]);
            self.pos += buf.len();
            if self.pos == self.buffer.len() {
                self.status = 0x50;
            }
        }
        fn cycles(&mut self) -> u64 {
            self.reads
        }
        fn outsw(&mut self, _port: u16, buf: &[u8]) {
            self.buffer[self.pos..self.pos + buf.len()].copy_from_slice(buf);
            self.pos += buf.len();
            if self.pos == self.buffer.len() {
                if let Some(lba) = self.writing.take() {
                    let at = lba as usize * SECTOR_BYTES;
                    self.data[at..at + self.buffer.len()].copy_from_slice(&self.buffer);
                }
                self.status = 0x50;
            }
        }
    }

    #[test]
    fn identify_reads_the_capacity_and_writes_read_back_across_commands() {
        let mut disk = AtaDisk::probe(SimDrive::new(2048)).unwrap();
        assert_eq!(disk.sectors(), 2048);
        let data: Vec<u8> = (0..600 * SECTOR_BYTES).map(|i| (i * 7 % 251) as u8).collect();
        disk.write(100, &data).unwrap();
        disk.flush().unwrap();
        let mut back = vec![0u8; data.len()];
        disk.read(100, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(disk.ports().flushes, 1);
        assert_eq!(disk.ports().lba48_commands, 0, "a small disk uses 28-bit commands");
    }

    #[test]
    fn a_missing_drive_a_bad_range_and_a_failing_sector_are_errors() {
        let mut absent = SimDrive::new(16);
        absent.present = false;
        assert_eq!(AtaDisk::probe(absent).err(), Some(DeviceError::NoDevice));
        let mut disk = AtaDisk::probe(SimDrive::new(64)).unwrap();
        let mut buf = vec![0u8; 2 * SECTOR_BYTES];
        assert_eq!(disk.read(63, &mut buf), Err(DeviceError::OutOfRange));
        assert_eq!(disk.read(u64::MAX, &mut buf), Err(DeviceError::OutOfRange));
        assert_eq!(disk.read(0, &mut buf[..100]), Err(DeviceError::OutOfRange));
        disk.ports().fail_at = Some(10);
        assert_eq!(disk.read(9, &mut buf), Err(DeviceError::Io { lba: 9 }));
    }

    #[test]
    fn a_drive_stuck_busy_times_out() {
        let mut disk = AtaDisk::probe(SimDrive::new(64)).unwrap();
        disk.ports().status = 0x80;
        let mut buf = vec![0u8; SECTOR_BYTES];
        assert_eq!(disk.read(0, &mut buf), Err(DeviceError::Timeout));
    }

    #[test]
    fn polls_of_a_busy_drive_count_as_waiting_and_ready_polls_do_not() {
        let mut disk = AtaDisk::probe(SimDrive::new(64)).unwrap();
        let mut buf = vec![0u8; 4 * SECTOR_BYTES];
        let before = disk.wait_cycles();
        disk.read(0, &mut buf).unwrap();
        assert_eq!(disk.wait_cycles(), before, "a drive that is always ready is never waited on");
        disk.ports().busy_for = 50;
        disk.read(0, &mut buf).unwrap();
        let waited = disk.wait_cycles() - before;
        assert!((50..=52).contains(&waited), "50 busy polls, waited {waited}");
    }
}
