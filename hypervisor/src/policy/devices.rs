//! The machine's devices that belong to dom0: the data disk's ATA channel (the image store).
//! dom0's vCPU reaches these ports without exits; for every other domain every port stays
//! intercepted (reads all-ones, writes dropped), so no other domain can touch the disk.

/// A range of I/O ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub count: u16,
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub const fn contains(&self, port: u16) -> bool {
        port >= self.first && port - self.first < self.count
    }
}

/// The secondary ATA channel in legacy mode: command block 0x170-0x177 and the device
/// control / alternate status register 0x376. The runner hangs the data disk there under
/// both emulators (Bochs `ata1-master`; QEMU a PIIX3 IDE controller's secondary channel);
/// the boot disk (Bochs `ata0`, the primary channel) stays out of dom0's reach.
pub const DOM0_PORTS: &[PortRange] = &[PortRange { first: 0x170, count: 8 }, PortRange { first: 0x376, count: 1 }];

/// Whether dom0 owns `port`.
pub fn dom0_owns(port: u16) -> bool {
    DOM0_PORTS.iter().any(|r| r.contains(port))
}

/// Clears the intercept bit of every dom0 port in an I/O permission bitmap (one bit per
/// port, set = intercept; the layout VMX bitmaps A+B and the SVM IOPM share).
pub fn grant_dom0_ports(bitmap: &mut [u8]) {
    for r in DOM0_PORTS {
        for p in r.first..r.first + r.count {
            let (byte, bit) = (usize::from(p) / 8, p % 8);
            if let Some(b) = bitmap.get_mut(byte) {
                *b &= !(1 << bit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secondary_ata_channel_is_granted() {
        let mut bitmap = [0xFFu8; 8192];
        grant_dom0_ports(&mut bitmap);
        for port in 0..=u16::MAX {
            let intercepted = bitmap[usize::from(port) / 8] & (1 << (port % 8)) != 0;
            assert_eq!(!intercepted, dom0_owns(port), "port {port:#x}");
        }
        assert!(dom0_owns(0x170) && dom0_owns(0x177) && dom0_owns(0x376));
        assert!(!dom0_owns(0x1F0) && !dom0_owns(0x3F6) && !dom0_owns(0x178) && !dom0_owns(0x3F8) && !dom0_owns(0xE9));
    }
}
