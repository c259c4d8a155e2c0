//! The pure parts of `cowvisor-agent` (the static program in the Linux guest's initramfs):
//! reading the kernel command line, the lines it prints, and the byte layout of the
//! `RNDADDENTROPY` argument. The I/O (CPUID, hostname, ioctls) is in `main.rs`. The contract
//! with the hypervisor is `guest_abi::agent`.

use guest_abi::agent::{Identity, IdentityFlags, NO_PARENT};

/// Prefix of every line the agent prints.
pub const PREFIX: &str = "cowvisor-agent: ";
/// The kernel command-line word that turns parking off.
pub const NO_PARK_WORD: &str = "cowvisor.park=0";
/// Line printed (and flushed) right before parking.
pub const READY_LINE: &str = "cowvisor-agent: ready";
/// Line printed when the park leaf was not accepted.
pub const NOT_PARKED_LINE: &str = "cowvisor-agent: no hypervisor parked us";

/// Seed bytes handed to the kernel per clone (four calls of the entropy leaf).
pub const SEED_BYTES: usize = 64;
/// Entropy credited for them, in bits.
pub const SEED_ENTROPY_BITS: i32 = (SEED_BYTES * 8) as i32;
/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
pub const RNDADDENTROPY: u64 = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
pub const RNDRESEEDCRNG: u64 = 0x5207;
/// Size of `struct rand_pool_info` with a 64-byte buffer.
pub const RAND_POOL_INFO_BYTES: usize = 8 + SEED_BYTES;

/// Saved RNG seed files of init systems and seed tools; a clone must not reuse the template's.
pub const SEED_FILES: &[&str] = &[
    "/var/lib/systemd/random-seed",
    "/var/lib/urandom/random-seed",
    "/var/lib/random-seed",
    "/var/lib/seedrng/seed.credit",
    "/var/lib/seedrng/seed.no-credit",
    "/etc/random-seed",
];

/// Whether the agent should park: yes unless the command line has the word `cowvisor.park=0`.
pub fn park_requested(cmdline: &str) -> bool {
    !cmdline.split_ascii_whitespace().any(|w| w == NO_PARK_WORD)
}

/// The host name of clone `index`.
pub fn clone_hostname(index: u32) -> String {
    format!("clone-{index}")
}

/// How the RNG reseed went, for the report line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reseed {
    /// Both ioctls succeeded.
    Done,
    /// A step failed with this errno.
    Failed { step: &'static str, errno: i32, message: String },
}

/// The one line the agent prints after it resumed.
pub fn report_line(id: &Identity, reseed: Option<&Reseed>) -> String {
    if id.flags.contains(IdentityFlags::CLONE) {
        let template = if id.parent == NO_PARENT { "none".to_string() } else { id.parent.to_string() };
        let rng = match reseed {
            Some(Reseed::Done) => "rng reseeded".to_string(),
            Some(Reseed::Failed { step, errno, message }) => {
                format!("rng reseed failed: {step} errno {errno} ({message})")
            }
            None => "rng not reseeded".to_string(),
        };
        format!(
            "{PREFIX}{} domain {} template {template} generation {} {rng}",
            clone_hostname(id.clone_index),
            id.domid,
            id.generation
        )
    } else {
        format!("{PREFIX}domain {} generation {} resumed", id.domid, id.generation)
    }
}

/// The 16 bytes of one entropy leaf (`[eax, ebx, ecx, edx]`, little endian in that order).
pub fn leaf_bytes(regs: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (chunk, r) in out.chunks_exact_mut(4).zip(regs) {
        chunk.copy_from_slice(&r.to_le_bytes());
    }
    out
}

/// `struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[16]; }` in native
/// (little-endian) byte order: crediting all 512 bits of the 64 seed bytes.
pub fn rand_pool_info(seed: &[u8; SEED_BYTES]) -> [u8; RAND_POOL_INFO_BYTES] {
    let mut out = [0u8; RAND_POOL_INFO_BYTES];
    out[0..4].copy_from_slice(&SEED_ENTROPY_BITS.to_le_bytes());
    out[4..8].copy_from_slice(&(SEED_BYTES as i32).to_le_bytes());
    out[8..].copy_from_slice(seed);
    out
}

/// Whether a signature leaf (`[eax, ebx, ecx, edx]` of CPUID 0x4000_0000) names cowvisor.
pub fn is_cowvisor_signature(regs: [u32; 4]) -> bool {
    let mut sig = [0u8; 12];
    for (chunk, r) in sig.chunks_exact_mut(4).zip(&regs[1..]) {
        chunk.copy_from_slice(&r.to_le_bytes());
    }
    sig == guest_abi::hypercall::SIGNATURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(flags: IdentityFlags) -> Identity {
        Identity { domid: 9, parent: 4, clone_index: 3, flags, generation: 17 }
    }

    #[test]
    fn park_is_skipped_when_cmdline_says_park_0() {
        assert!(!park_requested("console=ttyS0 cowvisor.park=0 quiet\n"));
        assert!(!park_requested("cowvisor.park=0"));
    }

    #[test]
    fn park_is_the_default_and_only_the_exact_word_turns_it_off() {
        assert!(park_requested(""));
        assert!(park_requested("console=ttyS0 quiet\n"));
        assert!(park_requested("cowvisor.park=1"));
        assert!(park_requested("xcowvisor.park=0"));
        assert!(park_requested("cowvisor.park=00"));
    }

    #[test]
    fn clone_line_names_clone_domain_template_generation_and_reseed() {
        let id = identity(IdentityFlags::CLONE);
        assert_eq!(
            report_line(&id, Some(&Reseed::Done)),
            "cowvisor-agent: clone-3 domain 9 template 4 generation 17 rng reseeded"
        );
        let failed = Reseed::Failed { step: "RNDADDENTROPY", errno: 1, message: "Operation not permitted".into() };
        assert_eq!(
            report_line(&id, Some(&failed)),
            "cowvisor-agent: clone-3 domain 9 template 4 generation 17 rng reseed failed: RNDADDENTROPY errno 1 (Operation not permitted)"
        );
    }

    #[test]
    fn non_clone_line_says_resumed() {
        let id = Identity { parent: NO_PARENT, ..identity(IdentityFlags::empty()) };
        assert_eq!(report_line(&id, None), "cowvisor-agent: domain 9 generation 17 resumed");
        let restored = identity(IdentityFlags::RESTORED);
        assert_eq!(report_line(&restored, None), "cowvisor-agent: domain 9 generation 17 resumed");
    }

    #[test]
    fn clone_without_template_says_none() {
        let id = Identity { parent: NO_PARENT, ..identity(IdentityFlags::CLONE) };
        assert!(report_line(&id, Some(&Reseed::Done)).contains(" template none "));
    }

    #[test]
    fn rand_pool_info_credits_512_bits_of_64_bytes_then_the_seed() {
        let mut seed = [0u8; SEED_BYTES];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = i as u8;
        }
        let info = rand_pool_info(&seed);
        assert_eq!(info.len(), 72);
        assert_eq!(info[0..4], [0x00, 0x02, 0x00, 0x00]); // 512
        assert_eq!(info[4..8], [0x40, 0x00, 0x00, 0x00]); // 64
        assert_eq!(info[8..], seed);
    }

    #[test]
    fn ioctl_numbers_match_linux_random_h() {
        // _IOW('R', 3, int[2]): dir write (1) << 30 | size 8 << 16 | 'R' << 8 | 3.
        assert_eq!(RNDADDENTROPY, (1 << 30) | (8 << 16) | (u64::from(b'R') << 8) | 3);
        assert_eq!(RNDRESEEDCRNG, (u64::from(b'R') << 8) | 7);
    }

    #[test]
    fn entropy_leaf_bytes_are_eax_ebx_ecx_edx_little_endian() {
        let b = leaf_bytes([0x0403_0201, 0x0807_0605, 0x0C0B_0A09, 0x100F_0E0D]);
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    }

    #[test]
    fn signature_leaf_is_recognized_only_for_cowvisor() {
        let word = |i: usize| u32::from_le_bytes(guest_abi::hypercall::SIGNATURE[i..i + 4].try_into().unwrap());
        assert!(is_cowvisor_signature([0x4000_0001, word(0), word(4), word(8)]));
        let kvm = u32::from_le_bytes(*b"KVMK");
        assert!(!is_cowvisor_signature([0x4000_0001, kvm, word(4), word(8)]));
        assert!(!is_cowvisor_signature([0; 4]));
    }

    #[test]
    fn clone_hostname_is_clone_dash_index() {
        assert_eq!(clone_hostname(0), "clone-0");
        assert_eq!(clone_hostname(42), "clone-42");
    }
}
